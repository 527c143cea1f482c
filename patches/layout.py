"""Bookkeeping of the tokens one forward pass carries through the decoder, and the gathers that shrink them.

Samples of a batch may keep different numbers of tokens. The shorter ones are left-filled with *filler* tokens
(zero embedding, masked out like left padding) so every stage sees a rectangular ``[B, L']`` batch and each
sample's real tokens see exactly what they would see alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


def pack(keep: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangular gather index from per-sample kept positions.

    Args:
        keep: per sample, ``[n_b]`` sorted positions to keep.

    Returns:
        ``index [B, L']`` (``L' = max n_b``; fillers point at position 0) and ``filler [B, L']`` bool.

    Example: ``pack([tensor([0, 2]), tensor([1])]) -> (tensor([[0, 2], [0, 1]]), tensor([[F, F], [T, F]]))``.
    """
    width = max(k.numel() for k in keep)
    device = keep[0].device
    index = torch.zeros(len(keep), width, dtype=torch.long, device=device)
    filler = torch.ones(len(keep), width, dtype=torch.bool, device=device)
    for b, k in enumerate(keep):
        if k.numel():
            index[b, width - k.numel() :] = k
            filler[b, width - k.numel() :] = False
    return index, filler


def gather_seq(x: torch.Tensor, index: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Gather along the sequence axis ``dim`` of ``x`` with ``index [B, L']`` (batch axis is ``dim - 1``)."""
    index = index.to(x.device)
    shape = list(x.shape)
    shape[dim] = index.shape[1]
    view = [1] * x.dim()
    view[dim - 1], view[dim] = index.shape
    return x.gather(dim, index.view(view).expand(shape))


def shrink(
    x: torch.Tensor,
    index: torch.Tensor,
    filler: torch.Tensor,
    replace: list[tuple[int, torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Gather the rows ``index`` of ``x`` ``[B, L, D]`` after writing merged features, and zero the fillers.

    Args:
        replace: ``(sample, positions [k], features [k, D] or None, sizes)`` written into ``x`` before the gather.
    """
    if any(r[2] is not None for r in replace):
        x = x.clone()
        for b, at, feats, _ in replace:
            if feats is not None:
                x[b, at] = feats.to(x.dtype)
    return gather_seq(x, index).masked_fill(filler[..., None], 0)


@dataclass
class Layout:
    """Per-position facts ``[B, L]`` about the tokens of the current forward, in their current order.

    Attributes:
        src: position in the decoder's input (after the outer stage) — indexes the shared rotary tables.
        ordinal: index among the sample's original video tokens, ``-1`` for text.
        protected: video tokens no stage may drop (e.g. LLaVA-OneVision's newline).
        filler: positions added to square up ragged samples.
        mask: padding mask (1 = real token; 0 for padding and fillers).
        size: how many original tokens each position stands for (merging policies), float32.
        marked: video tokens an earlier stage marked as key tokens (``Plan.marks``): later stages keep them; ``None``
            when nothing is marked.
    """

    src: torch.Tensor
    ordinal: torch.Tensor
    protected: torch.Tensor
    filler: torch.Tensor
    mask: torch.Tensor
    size: torch.Tensor
    marked: torch.Tensor | None = None

    @property
    def droppable(self) -> torch.Tensor:
        """``[B, L]`` video tokens a stage may remove."""
        return (self.ordinal >= 0) & ~self.protected & ~self.filler

    def video_counts(self) -> list[int]:
        return ((self.ordinal >= 0) & ~self.filler).sum(1).tolist()

    def after_last_video(self) -> torch.Tensor:
        """``[B, L]`` each sample's real tokens after its last video token (its question, in chat layouts); all
        False for a sample without video."""
        is_video = self.ordinal >= 0
        positions = torch.arange(is_video.shape[1], device=is_video.device)
        last_video = torch.where(is_video, positions, -1).amax(1)
        return (positions[None] > last_video[:, None]) & self.mask.bool() & (last_video[:, None] >= 0)

    def real_counts(self) -> list[int]:
        return self.mask.sum(1).tolist()

    def select(self, index: torch.Tensor, filler: torch.Tensor) -> Layout:
        """The layout after gathering positions ``index`` (fillers from :func:`pack` marked by ``filler``)."""
        g = lambda t: gather_seq(t, index)  # noqa: E731
        return Layout(
            src=g(self.src),
            ordinal=g(self.ordinal).masked_fill(filler, -1),
            protected=g(self.protected) & ~filler,
            filler=g(self.filler) | filler,
            mask=g(self.mask).masked_fill(filler, 0),
            size=g(self.size).masked_fill(filler, 0),
            marked=None if self.marked is None else g(self.marked) & ~filler,
        )

    def with_sizes(self, replace: list) -> Layout:
        """This layout with the sizes of merged tokens written in (``replace`` as for :func:`shrink`)."""
        if not any(r[3] is not None for r in replace):
            return self
        size = self.size.clone()
        for b, at, _, sizes in replace:
            if sizes is not None:
                size[b, at] = sizes.to(size.device, torch.float32)
        return Layout(self.src, self.ordinal, self.protected, self.filler, self.mask, size, self.marked)

    def with_marks(self, marks: list[tuple[int, torch.Tensor]]) -> Layout:
        """This layout with ``(sample, positions)`` marked as key tokens (kept by every later stage)."""
        if not marks:
            return self
        marked = torch.zeros_like(self.protected) if self.marked is None else self.marked.clone()
        for b, at in marks:
            marked[b, at.to(marked.device)] = True
        return dataclasses.replace(self, marked=marked)
