"""LLaVA-OneVision.

Video tokens: per frame the SigLIP grid bilinearly pooled to ``ceil(S/2) x ceil(S/2)`` (S = image_size //
patch_size; 14 x 14 = 196 at 384 px), frames in order, then **one** ``image_newline`` per video, which is never
dropped. Positions are 1-D; survivors keep their original (gapped) positions.

Vision stage (``vision="tome"``): the SigLIP encoder layers up to the one ``vision_feature_layer`` reads (all of
them at LLaVA-OV's ``-1``); the output grid is restored there, before the projector and the 2x2 pooling.
"""

from __future__ import annotations

import math

import torch

from tokpress.errors import UnsupportedModelError
from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.vision_stage import VisionSite
from tokpress.policies.base import Grid
from tokpress.policies.vision.merge import unmerge


class LlavaOnevisionAdapter(Adapter):
    family = "llava_onevision"
    rope_rows = 1
    #: set by an installed vision stage: the ``[F, N]`` patch -> merged-token map while the encoder runs merged
    vision_source = None

    @property
    def frame_side(self) -> int:
        vision = self.model.config.vision_config
        return math.ceil((vision.image_size // vision.patch_size) / 2)

    def install_vision_capture(self, active, sink, score) -> list:
        """Hooks on the SigLIP layer whose output LLaVA uses: per frame the attention its patches receive
        (``score``), pooled to the LLM grid with the model's own bilinear pooling."""
        layer_index = self.model.config.vision_feature_layer
        layer_index = layer_index[-1] if isinstance(layer_index, (list, tuple)) else layer_index
        layers = self._encoder_layers()
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
            q = state.pop("q")
            source = self.vision_source() if self.vision_source is not None else None
            if source is not None:  # a vision stage merged this layer's tokens: score every patch's copy
                q, out = unmerge(q, source), unmerge(out, source)
            frames, n, _ = out.shape
            q = q.reshape(frames * n, attn.num_heads, -1)
            k = out.reshape(frames * n, attn.num_heads, -1)
            groups = torch.arange(frames, device=out.device).repeat_interleave(n)
            scores = score(q, k, groups, attn.scale).view(frames, 1, side, side)
            pooled = torch.nn.functional.interpolate(scores, size=[self.frame_side] * 2, mode="bilinear")
            sink(pooled.flatten())

        return [attn.q_proj.register_forward_hook(on_q), attn.k_proj.register_forward_hook(on_k)]

    def _encoder_layers(self) -> torch.nn.ModuleList:
        tower = self.base.vision_tower
        return (tower.encoder if hasattr(tower, "encoder") else tower.vision_model.encoder).layers

    def vision_stage_site(self) -> VisionSite:
        """The SigLIP layers up to the (earliest) one ``vision_feature_layer`` reads; the grid is restored there."""
        layers = self._encoder_layers()
        selected = self.model.config.vision_feature_layer
        selected = list(selected) if isinstance(selected, (list, tuple)) else [selected]
        depth = min(i % (len(layers) + 1) for i in selected)  # hidden_states[i] is the output of layer i - 1
        attn = getattr(self.model.config.vision_config, "_attn_implementation", None) or "eager"
        if attn not in ("eager", "sdpa"):
            raise UnsupportedModelError(
                f"the vision stage adds a log(size) attention bias, which vision attention {attn!r} cannot take; "
                "load the vision tower with attn_implementation 'sdpa' or 'eager'"
            )
        return VisionSite(layers=layers, depth=depth)

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
