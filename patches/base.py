"""The adapter contract: everything tokpress needs to know about one model family ("where").

An adapter finds the decoder and its layers, the video placeholder id, each video's token grid, and the layout
of the position ids. It holds no policy logic; :mod:`tokpress.patches.engine` does the rest generically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from tokpress.errors import InputError, UnsupportedModelError
from tokpress.policies.base import Grid

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class VideoSpan:
    """One video's placeholder tokens in a sample: ``grid.numel`` grid tokens then ``extra`` protected ones.

    A contiguous video (LLaVA, Qwen2-VL) is the run ``start .. start + length``. A video whose frames the processor
    separates with text (Qwen3-VL's timestamps, InternVL's frame labels) gives ``positions``: the ``[length]``
    sequence positions of its tokens, grid tokens in raster order ``(t, h, w)`` first, then the protected ones; the
    text between them is never part of the video. ``start`` is then the first position.
    """

    start: int
    grid: Grid
    extra: int = 0
    positions: torch.Tensor | None = field(default=None, compare=False)  # compared through ``index()``

    @property
    def length(self) -> int:
        return self.grid.numel + self.extra

    def index(self, device: torch.device | None = None) -> torch.Tensor:
        """``[length]`` sequence positions of the video's tokens (grid tokens in raster order, then the extra)."""
        if self.positions is not None:
            return self.positions.to(device)
        return torch.arange(self.start, self.start + self.length, device=device)


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, length)`` of each run of True in a 1-D bool ``mask``.

    Example: ``runs(tensor([0, 1, 1, 0, 1]).bool()) -> [(1, 2), (4, 1)]``.
    """
    padded = torch.nn.functional.pad(mask.to(torch.int8), (1, 1))
    edges = (padded[1:] - padded[:-1]).nonzero().squeeze(1).tolist()
    return [(s, e - s) for s, e in zip(edges[::2], edges[1::2])]


class Adapter:
    """Base class: one subclass per model family, registered by ``config.model_type``."""

    family: ClassVar[str] = ""
    #: rows of the position ids that carry rotary positions (3 for M-RoPE, 1 for 1-D)
    rope_rows: ClassVar[int] = 1
    #: ``find_videos`` takes ``counts``: the token count of each video of the batch, in order
    #: (:meth:`video_token_counts`), for layouts whose videos cannot be told apart from the placeholders alone
    wants_video_counts: ClassVar[bool] = False
    #: ``find_videos`` takes ``ids``: the sample's ``[q]`` token ids, for layouts spelled out in text tokens
    #: (InternVL's ``<img>`` / ``</img>`` blocks and ``FrameN:`` labels)
    wants_ids: ClassVar[bool] = False
    #: how the model receives video frames: ``"video"`` (``pixel_values_videos``, ``get_video_features``,
    #: ``mm_encoder_outputs["video"]``) or ``"image"`` (InternVL: frames are image tiles in ``pixel_values``, encoded
    #: by ``get_image_features`` with the images, so vision scores cover every placeholder of the batch)
    frames_modality: ClassVar[str] = "video"
    #: the base model's attribute holding the vision encoder (``visual`` on Qwen, ``vision_tower`` elsewhere)
    vision_encoder_attr: ClassVar[str] = "vision_tower"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base: nn.Module = model.model
        self.language_model: nn.Module = self.base.language_model
        self.layers: nn.ModuleList = self.language_model.layers
        self.text_config = self.language_model.config

    # ---- validation -------------------------------------------------------------------------------------------
    @classmethod
    def validate(cls, model: nn.Module) -> None:
        """Raise :class:`UnsupportedModelError` if ``model`` lacks the structure this adapter relies on."""
        base = getattr(model, "model", None)
        lm = getattr(base, "language_model", None)
        if lm is None or not isinstance(getattr(lm, "layers", None), nn.ModuleList):
            raise UnsupportedModelError(
                f"{type(model).__name__} has no `.model.language_model.layers`; load the model with "
                "AutoModelForImageTextToText (the *ForConditionalGeneration class)"
            )
        attn = getattr(lm.config, "_attn_implementation", None) or "eager"
        if attn not in SUPPORTED_ATTENTION:
            raise UnsupportedModelError(
                f"attention implementation {attn!r} is not supported; load with attn_implementation= one of "
                f"{SUPPORTED_ATTENTION}"
            )

    @property
    def vision_encoder(self) -> nn.Module:
        """The vision encoder (the module whose forward encodes the frames; timed as the vision stage)."""
        return getattr(self.base, self.vision_encoder_attr)

    @property
    def deepstack_layers(self) -> int:
        """How many first decoder layers get deepstack features added to their output (Qwen3-VL; 0 elsewhere)."""
        return 0

    def video_token_counts(self, kwargs: dict) -> list[int] | None:
        """Per video of the batch, in order, its number of LLM tokens, read from the base model's ``kwargs``
        (``None`` when they do not say)."""
        return None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def layer_types(self) -> list[str]:
        """Per decoder layer its ``layer_types`` entry (``"full_attention"`` when the config has none)."""
        return list(getattr(self.text_config, "layer_types", None) or ["full_attention"] * self.num_layers)

    def sliding_layers(self) -> list[int]:
        """Layers that attend within a window (inner stages cannot follow them)."""
        return [i for i, t in enumerate(self.layer_types()) if t not in ("full_attention", "linear_attention")]

    def linear_layers(self) -> list[int]:
        """Layers with a recurrent state instead of a KV cache (Qwen3.5's Gated DeltaNet): no attention scores, no
        tokens to cut from their cache; they run on whatever sequence reaches them."""
        return [i for i, t in enumerate(self.layer_types()) if t == "linear_attention"]

    def score_layer(self, layer: int) -> int | None:
        """The layer whose attention scores an inner stage at ``layer`` reads: ``layer - 1`` (FastV's rule), or on
        a hybrid model the last attention layer before ``layer``; ``None`` when there is none."""
        linear = set(self.linear_layers())
        return next((i for i in range(layer - 1, -1, -1) if i not in linear), None)

    # ---- positions --------------------------------------------------------------------------------------------
    def rope_view(self, position_ids: torch.Tensor) -> torch.Tensor:
        """The rotary rows of ``position_ids`` as ``[R, B, q]`` (R = :attr:`rope_rows`)."""
        if position_ids.dim() == 2:
            return position_ids[None]
        return position_ids[-self.rope_rows :]

    def positions_for(self, rows: torch.Tensor) -> torch.Tensor:
        """Turn ``[R, B, q]`` rotary rows into the ``position_ids`` the base model's forward accepts."""
        return rows[0] if self.rope_rows == 1 else rows

    @property
    def supports_vision_attention(self) -> bool:
        return type(self).install_vision_capture is not Adapter.install_vision_capture

    def install_vision_capture(self, active, sink, score) -> list:
        """Register hooks that, while ``active()``, pass ``sink`` the vision attention ``[tokens]`` of each video
        encoding call, in LLM token order, computed by ``score(q, k, groups, scale)`` (see
        :mod:`tokpress.patches.vision`). Families without one raise :class:`UnsupportedModelError`."""
        raise UnsupportedModelError(f"{self.family}: no vision-encoder attention; use a policy that does not need it")

    # ---- videos -----------------------------------------------------------------------------------------------
    def find_videos(self, is_video: torch.Tensor, rope: torch.Tensor | None) -> list[VideoSpan]:
        """The videos of one sample.

        Args:
            is_video: ``[q]`` bool, True at video placeholder positions of the chunk.
            rope: ``[R, q]`` rotary positions of the chunk, or ``None`` if the model derives them itself.

        Adapters with :attr:`wants_video_counts` also take ``counts``: a deque of the token counts of the batch's
        videos not yet claimed by earlier samples (``None`` when unknown); they pop the ones they use. Adapters
        with :attr:`wants_ids` also take ``ids``: the sample's ``[q]`` token ids.
        """
        raise NotImplementedError

    @staticmethod
    def layout_error(detail: str) -> InputError:
        return InputError(f"cannot read the video layout: {detail}. Build inputs with the model's processor.")
