"""Cosine similarities, always computed in float32 whatever the model dtype (selection only: no tangent)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokpress.ops.dual import primal


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise cosine ``[..., N, M]`` of ``a`` ``[..., N, D]`` and ``b`` ``[..., M, D]`` (default ``a``)."""
    a = F.normalize(primal(a).float(), dim=-1)
    b = a if b is None else F.normalize(primal(b).float(), dim=-1)
    return a @ b.transpose(-1, -2)


def cosine_adjacent(frames: torch.Tensor) -> torch.Tensor:
    """Similarity of each token to the same position in the previous frame.

    Args:
        frames: ``[T, P, D]`` tokens of T frames with P positions each.

    Returns:
        ``[T - 1, P]``: entry ``(t, p)`` is ``cos(frames[t + 1, p], frames[t, p])``.
    """
    x = primal(frames).float()
    return F.cosine_similarity(x[1:], x[:-1], dim=-1)
