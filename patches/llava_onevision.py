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

    def install_vision_capture(self, active, sink, score) -> list:
        """Hooks on the SigLIP layer whose output LLaVA uses: per frame the attention its patches receive
        (``score``), pooled to the LLM grid with the model's own bilinear pooling."""
        layer_index = self.model.config.vision_feature_layer
        layer_index = layer_index[-1] if isinstance(layer_index, (list, tuple)) else layer_index
        tower = self.base.vision_tower
        layers = (tower.encoder if hasattr(tower, "encoder") else tower.vision_model.encoder).layers
        attn = layers[layer_index if layer_index < 0 else layer_index - 1].self_attn
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        state: dict = {}

        def on_q(module, args, out):
            if active():
                state["q"] = out

        def on_k(module, args, out):
            if not active():
                return
            frames, n, _ = out.shape
            q = state.pop("q").reshape(frames * n, attn.num_heads, -1)
            k = out.reshape(frames * n, attn.num_heads, -1)
            groups = torch.arange(frames, device=out.device).repeat_interleave(n)
            scores = score(q, k, groups, attn.scale).view(frames, 1, side, side)
            pooled = torch.nn.functional.interpolate(scores, size=[self.frame_side] * 2, mode="bilinear")
            sink(pooled.flatten())

        return [attn.q_proj.register_forward_hook(on_q), attn.k_proj.register_forward_hook(on_k)]

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
