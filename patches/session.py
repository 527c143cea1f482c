"""State the engine keeps: per forward pass (:class:`Chunk`) and per KV cache it has written (:class:`Session`)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from tokpress.patches.layout import Layout
from tokpress.policies.base import VideoSlot
from tokpress.state import Stats


@dataclass
class Segment:
    """What the cache of one group of layers holds, per sample, in physical order ``[B, P]``.

    Segment 0 covers the layers before the first inner stage; segment ``s + 1`` the layers from stage ``s`` on.
    """

    mask: torch.Tensor  # 1 = real token, 0 = padding or filler
    ordinal: torch.Tensor  # video ordinal, -1 for text
    droppable: torch.Tensor  # video tokens a stage may remove (not protected, not filler)
    marked: torch.Tensor | None = None  # key tokens every stage keeps (Plan.marks); None when none are marked

    @classmethod
    def of(cls, layout: Layout) -> Segment:
        return cls(layout.mask, layout.ordinal, layout.droppable, layout.marked)

    def extend(self, layout: Layout) -> Segment:
        """This segment with the chunk ``layout`` appended (a forward on top of the cache)."""
        cat = lambda a, b: torch.cat([a.to(b.device), b], 1)  # noqa: E731
        marked = None
        if self.marked is not None or layout.marked is not None:
            mine = self.marked if self.marked is not None else torch.zeros_like(self.droppable)
            theirs = layout.marked if layout.marked is not None else torch.zeros_like(layout.droppable)
            marked = cat(mine, theirs)
        return Segment(
            cat(self.mask, layout.mask),
            cat(self.ordinal, layout.ordinal),
            cat(self.droppable, layout.droppable),
            marked,
        )

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def head(self, n: int) -> Segment:
        """The first ``n`` positions of this segment (what it held before the current chunk)."""
        marked = None if self.marked is None else self.marked[:, :n]
        return Segment(self.mask[:, :n], self.ordinal[:, :n], self.droppable[:, :n], marked)


#: attribute under which a KV cache carries its :class:`Session`, so that ``copy.deepcopy(cache)`` (transformers'
#: recipe for reusing a prompt's cache) copies the session with it
SESSION_ATTR = "_tokpress_session"


@dataclass
class Session:
    """One KV cache that tokpress has written to (stored on the cache as :data:`SESSION_ATTR`)."""

    cache: weakref.ref
    segments: list[Segment | None]
    owner: weakref.ref | None = None  # the engine that filled the cache (a copy keeps pointing at it)
    logical_len: int = 0  # tokens consumed, counted as the caller counts them (uncompressed)
    next_rope: torch.Tensor | None = None  # [R, B] rotary position of the next token
    next_index: torch.Tensor | None = None  # [B] the caller's sequence index of the next token, where known
    dropped: bool = False  # cache layer 0 holds fewer tokens than the caller fed
    slots: list[tuple[VideoSlot, ...]] = field(default_factory=list)  # per sample: videos of the last video chunk
    memory: list[dict] = field(default_factory=list)  # per sample: decode-time policies' state

    @property
    def physical_len(self) -> int:
        first = self.segments[0]
        return 0 if first is None else first.length


@dataclass
class Chunk:
    """One forward pass."""

    is_video: torch.Tensor  # [B, q] placeholder positions in the caller's tokens
    has_video: bool  # any placeholder carries video features in this forward
    continuing: bool
    session: Session | None
    layout: Layout | None = None
    layouts: dict[int, Layout] = field(default_factory=dict)  # segment -> the layout its layers saw
    layer_mask: Any = None
    linear_mask: Any = None  # 2-D padding mask for linear-attention layers from the first inner stage on
    rope: dict = field(default_factory=dict)  # (segment, id(cos)) -> gathered (cos, sin)
    segment: int = 0
    indices: dict[int, torch.Tensor] = field(default_factory=dict)  # stage -> [B, L'] gather index of its drop
    stats: Stats | None = None
    slots: list[tuple[VideoSlot, ...]] = field(default_factory=list)
    video_counts: list[int] | None = None  # per video of the batch, its tokens (adapters that ask for them)
    ids: torch.Tensor | None = None  # [B, q] the caller's token ids (adapters that ask for them)
    deepstack: Any = None  # Deepstack rows of the current layout (Qwen3-VL), while layers still add them


#: per ``Adapter.frames_modality``: the forward keyword that carries the frames' pixels
PIXELS_KWARG = {"video": "pixel_values_videos", "image": "pixel_values"}


def has_video_inputs(kwargs: dict, modality: str = "video") -> bool:
    """Whether this forward carries video features (pixels, or 5.23 ``generate()``'s pre-encoded outputs).

    Placeholder ids without features (e.g. a decode step that sampled the video token id) are plain tokens.
    ``modality`` is the adapter's ``frames_modality``: for ``"image"`` (InternVL) any image features count, and
    the adapter's ``find_videos`` tells frames from images.
    """
    if kwargs.get(PIXELS_KWARG[modality]) is not None:
        return True
    encoded = kwargs.get("mm_encoder_outputs")
    return isinstance(encoded, dict) and encoded.get(modality) is not None


def sequence_index(position_ids: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, q]`` index of each token in the caller's (uncompressed) sequence, if the positions carry it.

    1-D positions and the text row of Qwen's 4-row form count tokens (less left padding); M-RoPE rows do not.
    """
    if position_ids is None:
        return None
    if position_ids.dim() == 2:
        return position_ids
    return position_ids[0] if position_ids.shape[0] == 4 else None
