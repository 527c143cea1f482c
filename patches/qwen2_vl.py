"""Qwen2-VL and Qwen2.5-VL.

Video tokens: ``T/2 x H/28 x W/28`` per video (temporal patch 2, 2x2 spatial merge), raster order, between
``<|vision_start|>`` and ``<|vision_end|>``. Positions: M-RoPE rows (t, h, w), optionally preceded by a text row
(the 4-row form ``generate()`` builds). Each video's grid is read from its h and w rows, which works in every
transformers version (5.23 ``generate()`` no longer passes ``video_grid_thw`` to ``forward``).
"""

from __future__ import annotations

import torch

from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.policies.base import Grid


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    rope_rows = 3

    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None) -> list[VideoSpan]:
        spans = runs(is_video)
        if not spans:
            return []
        if rope is None or rope.shape[0] != 3:
            raise self.layout_error(
                "Qwen-VL needs its 3-D M-RoPE positions; pass `mm_token_type_ids` "
                "(the processor returns it) so the model builds them"
            )
        out = []
        for start, length in spans:
            h, w = rope[1, start : start + length], rope[2, start : start + length]
            height = int(h.max() - h.min()) + 1
            width = int(w.max() - w.min()) + 1
            frames, rest = divmod(length, height * width)
            if rest:
                raise self.layout_error(f"{length} video tokens do not fill a {height}x{width} grid")
            out.append(VideoSpan(start, Grid(frames, height, width)))
        return out
