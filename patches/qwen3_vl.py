"""Qwen3-VL and Qwen3-VL-MoE.

Video tokens: the processor writes one block per *temporal patch* (2 frames): a ``<{t:.1f} seconds>`` text
timestamp, ``<|vision_start|>``, ``h/32 x w/32`` video tokens (patch 16, 2x2 merge), ``<|vision_end|>``. A video
is therefore many placeholder runs separated by text; this adapter joins the runs of one video into one
``Grid(T, H, W)`` (T = number of blocks) whose tokens are given by their positions (``VideoSpan.positions``), so
every policy sees the whole video and the timestamps stay text (never dropped). Which runs form one video is read
from the token count of each video of the batch (``video_grid_thw``, or the per-video outputs of the vision tower
that ``generate()`` pre-encodes); without them, consecutive runs of equal frame size separated by at most
:data:`MAX_GAP` text tokens are taken for one video.

Positions: interleaved M-RoPE rows (t, h, w), optionally preceded by the text row; each block's grid side is read
from its h and w rows. **Deepstack**: the features the vision tower adds to the first decoder layers follow the
kept tokens (:mod:`tokpress.patches.deepstack`). The vision tower has no window attention, so the attention
capture of Qwen2-VL applies as is.
"""

from __future__ import annotations

from collections import deque

import torch

from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.qwen2_vl import qwen_vision_capture, qwen_vision_depth, qwen_vision_stage_site
from tokpress.patches.vision import single_layer
from tokpress.patches.vision_drop import PatchSequenceSite
from tokpress.policies.base import Grid

#: without per-video token counts, the most text tokens between two blocks of one video (a timestamp
#: ``<12345.5 seconds>`` and the block markers take well under this in the Qwen tokenizer)
MAX_GAP = 16


class Qwen3VLAdapter(Adapter):
    family = "qwen3_vl"
    rope_rows = 3
    vision_encoder_attr = "visual"
    wants_video_counts = True

    @property
    def deepstack_layers(self) -> int:
        return len(getattr(self.model.config.vision_config, "deepstack_visual_indexes", None) or ())

    def install_vision_capture(self, active, sink, score, span=single_layer) -> list:
        return qwen_vision_capture(self, active, sink, score, span)

    def vision_attention_depth(self) -> int:
        return qwen_vision_depth(self)

    def vision_stage_site(self) -> PatchSequenceSite:
        """Drop 2x2 patch groups before the ViT (``vision="rlt"``); deepstack features follow the kept groups."""
        return qwen_vision_stage_site(self)

    def video_token_counts(self, kwargs: dict) -> list[int] | None:
        merge = self.model.config.vision_config.spatial_merge_size
        grid = kwargs.get("video_grid_thw")
        if isinstance(grid, torch.Tensor):
            return (grid.prod(-1) // merge**2).tolist()
        encoded = kwargs.get("mm_encoder_outputs")
        video = encoded.get("video") if isinstance(encoded, dict) else None
        parts = getattr(video, "pooler_output", None)
        if isinstance(parts, (tuple, list)):
            return [int(p.shape[0]) for p in parts]
        return None

    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None, counts: deque | None = None):
        blocks = runs(is_video)
        if not blocks:
            return []
        if rope is None or rope.shape[0] != 3:
            raise self.layout_error(
                "Qwen3-VL needs its 3-D M-RoPE positions; pass `mm_token_type_ids` "
                "(the processor returns it) so the model builds them"
            )
        rope = rope.cpu()  # one device sync for the prompt, not two per temporal block
        sides = [self._block_side(rope, start, length) for start, length in blocks]
        groups = self._by_counts(blocks, counts) if counts else self._by_gaps(blocks, sides)
        out = []
        for group in groups:
            (height, width), *rest = [sides[i] for i in group]
            if any(s != (height, width) for s in rest):
                raise self.layout_error("the temporal blocks of one video have different frame sizes")
            positions = torch.cat([torch.arange(blocks[i][0], sum(blocks[i])) for i in group]).to(is_video.device)
            out.append(VideoSpan(blocks[group[0]][0], Grid(len(group), height, width), positions=positions))
        return out

    def _block_side(self, rope: torch.Tensor, start: int, length: int) -> tuple[int, int]:
        h, w = rope[1, start : start + length], rope[2, start : start + length]
        height, width = int(h.max() - h.min()) + 1, int(w.max() - w.min()) + 1
        if height * width != length:
            raise self.layout_error(f"a block of {length} video tokens is not one {height}x{width} temporal patch")
        return height, width

    def _by_counts(self, blocks: list[tuple[int, int]], counts: deque) -> list[list[int]]:
        groups, i = [], 0
        while i < len(blocks):
            if not counts:
                raise self.layout_error("more video tokens in the prompt than the videos passed with it")
            need, group = counts.popleft(), []
            while need > 0 and i < len(blocks):
                need -= blocks[i][1]
                group.append(i)
                i += 1
            if need != 0:
                raise self.layout_error("the video blocks do not add up to the token counts of `video_grid_thw`")
            groups.append(group)
        return groups

    @staticmethod
    def _by_gaps(blocks: list[tuple[int, int]], sides: list[tuple[int, int]]) -> list[list[int]]:
        groups = [[0]]
        for i in range(1, len(blocks)):
            gap = blocks[i][0] - sum(blocks[i - 1])
            if gap <= MAX_GAP and sides[i] == sides[i - 1]:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups
