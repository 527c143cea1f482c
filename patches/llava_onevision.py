"""LLaVA-OneVision.

Video tokens: per frame the SigLIP grid bilinearly pooled to ``ceil(S/2) x ceil(S/2)`` (S = image_size //
patch_size; 14 x 14 = 196 at 384 px), frames in order, then **one** ``image_newline`` per video, which is never
dropped. Positions are 1-D; survivors keep their original (gapped) positions.

Vision stage (``vision="tome"``): the SigLIP encoder layers up to the one ``vision_feature_layer`` reads (all of
them at LLaVA-OV's ``-1``); the output grid is restored there, before the projector and the 2x2 pooling.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from tokpress.errors import UnsupportedModelError
from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.vision import LayerSum, scored_layers, single_layer, without_cls
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

    def vision_attention_depth(self) -> int:
        """SigLIP layers up to and including the one whose output LLaVA uses."""
        return self._feature_layer() + 1

    def _feature_layer(self) -> int:
        """Index into the encoder layers of the one ``vision_feature_layer`` names (the last one listed):
        ``hidden_states[i]`` is the output of layer ``i - 1``."""
        index = self.model.config.vision_feature_layer
        index = index[-1] if isinstance(index, (list, tuple)) else index
        return index % (len(self._encoder_layers()) + 1) - 1

    def install_vision_capture(self, active, sink, score, span=single_layer) -> list:
        """Hooks on the SigLIP layer whose output LLaVA uses (and the ``span(depth) - 1`` layers before it): per frame
        the attention its patches receive (``score``; the mean query for ``cls``: SigLIP has no [CLS] token), summed
        over the scored layers, pooled to the LLM grid with the model's own bilinear pooling. Under a merging vision
        stage each layer scores the patch copies of the tokens it runs on."""
        feature = self._feature_layer()
        layers = scored_layers(feature, span(feature + 1))
        total = LayerSum(layers)
        score = without_cls(score)
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        state: dict = {}

        def on_q(i, module, args, out):
            if active():
                state[i] = out

        def on_k(i, attn, module, args, out):
            if not active():
                return
            q = state.pop(i)
            source = self.vision_source() if self.vision_source is not None else None
            if source is not None:  # a vision stage merged this layer's tokens: score every patch's copy
                q, out = unmerge(q, source), unmerge(out, source)
            frames, n, _ = out.shape
            q = q.reshape(frames * n, attn.num_heads, -1)
            k = out.reshape(frames * n, attn.num_heads, -1)
            groups = torch.arange(frames, device=out.device).repeat_interleave(n)
            scores = total.add(i, score(q, k, groups, attn.scale))
            if scores is None:
                return
            pooled = torch.nn.functional.interpolate(
                scores.view(frames, 1, side, side), size=[self.frame_side] * 2, mode="bilinear"
            )
            sink(pooled.flatten())

        handles = []
        for i in layers:
            attn = self._encoder_layers()[i].self_attn
            handles.append(attn.q_proj.register_forward_hook(partial(on_q, i)))
            handles.append(attn.k_proj.register_forward_hook(partial(on_k, i, attn)))
        return handles

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
