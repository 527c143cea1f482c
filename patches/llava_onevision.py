"""LLaVA-OneVision.

Video tokens: per frame the SigLIP grid bilinearly pooled to ``ceil(S/2) x ceil(S/2)`` (S = image_size //
patch_size; 14 x 14 = 196 at 384 px), frames in order, then **one** ``image_newline`` per video, which is never
dropped. Positions are 1-D; survivors keep their original (gapped) positions.
"""

from __future__ import annotations

import math

import torch

from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.policies.base import Grid


class LlavaOnevisionAdapter(Adapter):
    family = "llava_onevision"
    rope_rows = 1

    @property
    def frame_side(self) -> int:
        vision = self.model.config.vision_config
        return math.ceil((vision.image_size // vision.patch_size) / 2)

    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None) -> list[VideoSpan]:
        side = self.frame_side
        out = []
        for start, length in runs(is_video):
            frames, rest = divmod(length - 1, side * side)
            if rest or frames < 1:
                raise self.layout_error(
                    f"a run of {length} video tokens is not F x {side * side} frame tokens + 1 newline "
                    "(separate videos with text, as the chat template does)"
                )
            out.append(VideoSpan(start, Grid(frames, side, side), extra=1))
        return out
