"""LLaVA-NeXT-Video (``LlavaNextVideoForConditionalGeneration``).

Video tokens: each frame's CLIP patch grid (``S = image_size // patch_size``; the CLS token dropped by the
``"default"`` feature strategy) pooled by the model's ``vision_resampler`` with kernel = stride =
``spatial_pool_stride`` (average, max or conv; no padding, so ``s = S // stride``: 24 -> 12, 144 tokens per frame
at 336 px), frames in order. A video is one contiguous run of ``frames * s * s`` ``<video>`` tokens with no newline
and nothing protected; positions are 1-D. Images (``<image>`` tokens, anyres with newlines) are never touched.

Vision attention (HoliTom, VisionZip, FastVID, FlashVID): scored per frame at the CLIP layer the features come from,
CLS column dropped, pooled with the model's own op (``conv`` pooling has no attention analogue: its window is
averaged).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from tokpress.errors import UnsupportedModelError
from tokpress.patches.base import Adapter, VideoSpan, runs
from tokpress.patches.vision import LayerSum, scored_layers, single_layer, without_cls
from tokpress.policies.base import Grid

#: ``spatial_pool_mode`` values the model accepts.
POOL_MODES = ("average", "max", "conv")


def _tower_layers(tower: nn.Module) -> nn.ModuleList | None:
    """The encoder layers of a CLIP / SigLIP vision tower (with or without a ``vision_model`` wrapper)."""
    inner = getattr(tower, "vision_model", tower)
    layers = getattr(getattr(inner, "encoder", None), "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def _feature_layer(config, num_layers: int) -> int | None:
    """The encoder layer (``0 .. num_layers - 1``) whose output the model reads as features (the last one listed
    when ``vision_feature_layer`` is a list): ``hidden_states[i]`` of the ``num_layers + 1`` hidden states is the
    output of ``layers[i - 1]``. ``None`` if the index names the embeddings or lies outside the tower."""
    index = config.vision_feature_layer
    index = int(index[-1] if isinstance(index, (list, tuple)) else index)
    if not -(num_layers + 1) <= index <= num_layers:
        return None
    layer = index % (num_layers + 1) - 1
    return layer if layer >= 0 else None


class LlavaNextVideoAdapter(Adapter):
    family = "llava_next_video"
    rope_rows = 1

    @classmethod
    def validate(cls, model: nn.Module) -> None:
        """Besides the base checks: a pooling the model knows, a grid that survives it, and a vision tower whose
        feature layer has the ``q_proj`` / ``k_proj`` projections the vision-attention capture hooks."""
        super().validate(model)
        config = model.config
        vision = config.vision_config
        mode, stride = config.spatial_pool_mode, config.spatial_pool_stride
        if mode not in POOL_MODES:
            raise UnsupportedModelError(f"spatial_pool_mode {mode!r} is unknown; the model accepts {POOL_MODES}")
        side = vision.image_size // vision.patch_size
        if not isinstance(stride, int) or not 1 <= stride <= side:
            raise UnsupportedModelError(
                f"spatial_pool_stride {stride!r} must be an int in [1, {side}] (the frame's patch grid side)"
            )
        layers = _tower_layers(model.model.vision_tower)
        if layers is None:
            raise UnsupportedModelError(
                f"vision tower {type(model.model.vision_tower).__name__} has no `encoder.layers`; "
                "tokpress supports the CLIP / SigLIP towers LLaVA-NeXT-Video ships with"
            )
        index = _feature_layer(config, len(layers))
        if index is None:
            raise UnsupportedModelError(
                f"vision_feature_layer {config.vision_feature_layer!r} does not name one of the tower's "
                f"{len(layers)} layers (the embeddings, index 0, have no attention)"
            )
        attn = getattr(layers[index], "self_attn", None)
        if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "num_heads", "scale")):
            raise UnsupportedModelError(
                f"vision layer {index} has no self_attn with q_proj / k_proj / num_heads / scale; "
                "tokpress supports the CLIP / SigLIP towers LLaVA-NeXT-Video ships with"
            )

    @property
    def patch_side(self) -> int:
        """``S``: patches per side of a frame in the vision tower."""
        vision = self.model.config.vision_config
        return vision.image_size // vision.patch_size

    @property
    def frame_side(self) -> int:
        """``s``: LLM tokens per side of a frame after the model's stride-``k`` pooling (kernel ``k``, no padding)."""
        return self.patch_side // self.model.config.spatial_pool_stride

    def _pool(self, scores: torch.Tensor) -> torch.Tensor:
        """``[frames, 1, S, S]`` -> ``[frames, 1, s, s]`` with the model's pooling op; ``conv`` (learned weights over
        channels) has no attention analogue, so its ``k x k`` window is averaged."""
        stride = self.model.config.spatial_pool_stride
        if self.model.config.spatial_pool_mode == "max":
            return nn.functional.max_pool2d(scores, kernel_size=stride, stride=stride)
        return nn.functional.avg_pool2d(scores, kernel_size=stride, stride=stride)

    def vision_attention_depth(self) -> int:
        """CLIP layers up to and including the one whose output the model reads."""
        layers = _tower_layers(self.base.vision_tower)
        return _feature_layer(self.model.config, len(layers)) + 1

    def install_vision_capture(
        self, active: Callable[[], bool], sink: Callable, score: Callable, span: Callable = single_layer
    ) -> list:
        """Hooks on the CLIP layer whose output the model reads (and the ``span(depth) - 1`` layers before it): per
        frame the attention each patch receives (``score`` over the frame's whole sequence, CLS included as the
        layer computes it; ``cls`` reads the real [CLS] row, position 0, when the tower has one — CLIP — and the
        mean query otherwise), summed over the scored layers, the CLS column then dropped as the ``"default"``
        feature strategy drops it, and the ``S x S`` map pooled to the LLM's ``s x s`` grid the way the model pools
        features. Passes ``sink`` ``[videos * frames * s * s]``.

        The layer and strategy are read from the config (a ``vision_feature_layer=`` passed to ``forward`` is not
        seen); when the model concatenates several feature layers, the last one listed is scored."""
        config = self.model.config
        tower_layers = _tower_layers(self.base.vision_tower)
        feature = _feature_layer(config, len(tower_layers))
        layers = scored_layers(feature, span(feature + 1))
        total = LayerSum(layers)
        drop_cls = config.vision_feature_select_strategy == "default"
        side = self.patch_side
        state: dict = {}

        def on_q(i, module, args, out):
            if active():
                state[i] = out

        def on_k(i, attn, module, args, out):
            if not active():
                return
            frames, n, _ = out.shape  # [videos * frames, 1 + S * S, D]
            q = state.pop(i).reshape(frames * n, attn.num_heads, -1)
            k = out.reshape(frames * n, attn.num_heads, -1)
            groups = torch.arange(frames, device=out.device).repeat_interleave(n)
            fn = score if n == side * side + 1 else without_cls(score)  # a [CLS] token leads each frame
            scores = total.add(i, fn(q, k, groups, attn.scale))
            if scores is None:
                return
            scores = scores.view(frames, n)
            if drop_cls:
                scores = scores[:, 1:]
            sink(self._pool(scores.reshape(frames, 1, side, side)).flatten())

        handles = []
        for i in layers:
            attn = tower_layers[i].self_attn
            handles.append(attn.q_proj.register_forward_hook(partial(on_q, i)))
            handles.append(attn.k_proj.register_forward_hook(partial(on_k, i, attn)))
        return handles

    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None) -> list[VideoSpan]:
        side = self.frame_side
        out = []
        for start, length in runs(is_video):
            frames, rest = divmod(length, side * side)
            if rest:
                raise self.layout_error(
                    f"a run of {length} video tokens is not F x {side * side} frame tokens "
                    f"({side}x{side} per frame after spatial_pool_stride {self.model.config.spatial_pool_stride})"
                )
            out.append(VideoSpan(start, Grid(frames, side, side)))
        return out
