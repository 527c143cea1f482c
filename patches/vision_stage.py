"""The vision stage's hooks: merge tokens inside the vision encoder, restore its output grid.

While the model encodes *videos* (``get_video_features`` is wrapped with ``functools.wraps``; images are left
alone), hooks on the encoder layers that the adapter's :class:`VisionSite` names (all registered with
``register_forward_hook`` / ``register_forward_pre_hook`` and removed exactly by :meth:`VisionEncoderStage.remove`):

* **every layer** (pre-hook): records the tokens per frame it processes (``Stats.vision_tokens``);
* **layer k's key projection** (``metric="keys"``): keeps the keys, averaged over heads, as the matching metric;
* **layer k** (forward hook, run before other hooks): the vision policy merges each frame's tokens to
  ``round(r * N)``;
* **layers k+1 .. depth-1** (pre-hooks): pass ``log(size)`` as the additive attention mask (proportional attention);
* **layer depth-1** (forward hook, run before transformers' hidden-state capture): copies each merged token back
  to all its patches, so ``hidden_states[vision_feature_layer]`` has the original grid.

Frames are the rows of the encoder's batch, so each frame is matched on its own. At ``vision_ratio=1`` nothing is
merged and every hook returns ``None``: the model computes exactly what it computed before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from tokpress.config import VisionStage, budget
from tokpress.errors import InputError
from tokpress.patches.wrapping import unwrap_call, wrap_call
from tokpress.policies.vision import get_vision_policy
from tokpress.policies.vision.merge import proportional_bias, unmerge
from tokpress.policies.vision.tome import Merged
from tokpress.state import Stats

logger = logging.getLogger("tokpress")


@dataclass(frozen=True)
class VisionSite:
    """Where an adapter's vision stage hooks in.

    Attributes:
        layers: the vision encoder's layers; each is called as ``layer(hidden [F, n, D], attention_mask, ...)`` and
            has ``self_attn`` with ``k_proj`` (``[F, n, H * d]``) and ``num_heads``.
        depth: how many encoder layers run before the model reads the output it uses (the grid is restored at the
            output of ``layers[depth - 1]``).
        encoder: the base-model method that encodes the video frames (wrapped to switch the hooks on).
    """

    layers: nn.ModuleList
    depth: int
    encoder: str = "get_video_features"


class VisionEncoderStage:
    """Installs and runs one :class:`~tokpress.config.VisionStage` on an adapter that has ``vision_stage_site()``."""

    def __init__(self, adapter, config: VisionStage, clock: Callable[[torch.device], float]) -> None:
        self.adapter = adapter
        self.config = config
        self.policy = get_vision_policy(config.policy)(config.options)
        self.clock = clock
        self.active = False
        self.tokens: list[int] = []  # per encoder layer, tokens per frame, of the last video encoding
        self.frames = 0
        self.seconds = 0.0
        self._keys: torch.Tensor | None = None
        self._merged: Merged | None = None
        self._bias: torch.Tensor | None = None
        self._handles: list = []
        self._wrapper = None

    # ---- install / remove -------------------------------------------------------------------------------------
    def install(self) -> None:
        site: VisionSite = self.adapter.vision_stage_site()
        k, depth = self.config.layer, self.config.depth
        self._wrapper = wrap_call(self.adapter.base, site.encoder, self._start, self._end)
        layers = site.layers
        for i, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(partial(self._on_layer, i), with_kwargs=True))
        if self.policy.needs_keys:
            attn = layers[k].self_attn
            self._handles.append(attn.k_proj.register_forward_hook(partial(self._keep_keys, attn.num_heads)))
        self._handles.append(layers[k].register_forward_hook(self._merge, prepend=True))
        self._handles.append(layers[depth - 1].register_forward_hook(self._unmerge, prepend=True))
        self.adapter.vision_source = self.current_source

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        site: VisionSite = self.adapter.vision_stage_site()
        unwrap_call(self.adapter.base, site.encoder, self._wrapper)
        if self.adapter.__dict__.get("vision_source") == self.current_source:
            del self.adapter.vision_source
        self.active, self._keys, self._merged, self._bias = False, None, None, None

    # ---- per encoding -----------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.active = True
        self.tokens, self.frames, self.seconds = [], 0, 0.0
        self._keys = self._merged = self._bias = None

    def _end(self) -> None:
        self.active = False
        self._keys = self._merged = self._bias = None

    def current_source(self) -> torch.Tensor | None:
        """``[F, N]`` patch -> token map while the encoder runs on merged tokens (``None`` otherwise)."""
        return self._merged.source if self.active and self._merged is not None else None

    def report(self, stats: Stats) -> None:
        """Copy the last video encoding's counts into ``stats`` (then forget them: one report per encoding)."""
        stats.vision_tokens, stats.vision_frames, stats.vision_s = self.tokens, self.frames, self.seconds
        self.tokens, self.frames, self.seconds = [], 0, 0.0

    # ---- hooks ------------------------------------------------------------------------------------------------
    def _on_layer(self, index: int, module, args, kwargs):
        """Record the tokens per frame of layer ``index``; after the merge, pass the proportional-attention bias."""
        if not self.active or not args:
            return None
        hidden = args[0]
        self.tokens.append(int(hidden.shape[1]))
        self.frames = int(hidden.shape[0])
        if self._bias is None or not self.config.layer < index < self.config.depth:
            return None
        if len(args) > 1:
            args = (hidden, _with_bias(args[1], self._bias), *args[2:])
        else:
            kwargs["attention_mask"] = _with_bias(kwargs.get("attention_mask"), self._bias)
        return args, kwargs

    def _keep_keys(self, heads: int, module, args, out: torch.Tensor) -> None:
        if self.active:
            frames, n, _ = out.shape
            self._keys = out.view(frames, n, heads, -1).mean(dim=2)
        return None

    def _merge(self, module, args, output):
        """Merge the layer's output tokens per frame to the promised count (nothing at ratio 1)."""
        if not self.active:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        target = budget(self.config.ratio, hidden.shape[1])
        if target >= hidden.shape[1]:
            self._keys = None
            return None
        t0 = self.clock(hidden.device)
        metric = hidden if self._keys is None or not self.policy.needs_keys else self._keys
        self._merged = self.policy.merge(hidden, metric, target)
        self._keys = None
        if getattr(self.policy, "proportional_attention", True):  # ToMe's log(size) bias; MustDrop runs without
            self._bias = proportional_bias(self._merged.size, hidden.dtype)
        self.seconds += self.clock(hidden.device) - t0
        merged = self._merged.hidden
        return (merged, *output[1:]) if isinstance(output, tuple) else merged

    def _unmerge(self, module, args, output):
        """Restore the original grid: each merged token copied to every patch it absorbed."""
        if not self.active or self._merged is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        t0 = self.clock(hidden.device)
        full = unmerge(hidden, self._merged.source)
        self._merged, self._bias = None, None
        self.seconds += self.clock(hidden.device) - t0
        return (full, *output[1:]) if isinstance(output, tuple) else full


def _with_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """The layer's additive attention mask plus ``bias`` ``[F, 1, 1, n]`` (the bias alone when there is none)."""
    if mask is None:
        return bias
    if mask.dtype == torch.bool or mask.shape[-1] != bias.shape[-1]:
        raise InputError(
            "the vision stage cannot merge an encoder call that passes its own attention mask "
            f"({tuple(mask.shape)}, {mask.dtype}); apply tokpress without vision= for this model"
        )
    return mask + bias
