"""The adapter contract: everything tokpress needs to know about one model family ("where").

An adapter finds the decoder and its layers, the video placeholder id, each video's token grid, and the layout
of the position ids. It holds no policy logic; :mod:`tokpress.patches.engine` does the rest generically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from tokpress.errors import InputError, UnsupportedModelError
from tokpress.policies.base import Grid

SUPPORTED_ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class VideoSpan:
    """One video's run of placeholder tokens in a sample: ``grid.numel`` grid tokens then ``extra`` protected ones."""

    start: int
    grid: Grid
    extra: int = 0

    @property
    def length(self) -> int:
        return self.grid.numel + self.extra


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
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def sliding_layers(self) -> list[int]:
        types = getattr(self.text_config, "layer_types", None) or []
        return [i for i, t in enumerate(types) if t != "full_attention"]

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
        """
        raise NotImplementedError

    @staticmethod
    def layout_error(detail: str) -> InputError:
        return InputError(f"cannot read the video layout: {detail}. Build inputs with the model's processor.")
