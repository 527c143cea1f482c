"""Cosine similarities, always computed in float32 whatever the model dtype (selection only: no tangent)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokpress.ops.dual import primal

_COS_EPS = 1e-8  # F.cosine_similarity's default eps
_GRAIN = 32768  # torch's CPU reductions split one output's reduction across threads from this many inputs on


def rows_reduce_alike(x: torch.Tensor) -> bool:
    """Whether a reduction over the last dim of ``x`` gives each row the same bits however many rows are reduced.

    True on CPU for rows shorter than torch's parallel grain (a single output of a longer row is split across
    threads). CUDA's reduction layout depends on the number of rows, so there code that normalises rows once and
    reuses them must keep the straightforward form to select exactly what it did.
    """
    return x.device.type == "cpu" and x.shape[-1] < _GRAIN


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
    if not rows_reduce_alike(x):
        return F.cosine_similarity(x[1:], x[:-1], dim=-1)
    # F.cosine_similarity(x[1:], x[:-1], dim=-1) divides every frame by its norm twice (once as each argument);
    # the same operations, each frame normalised once, give bit-identical values (tests/test_overhead.py)
    unit = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_COS_EPS)
    return (unit[1:] * unit[:-1]).sum(-1)


def cosine_pairs(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``F.cosine_similarity(x[first], x[second], dim=-1)`` in float32, ``x`` ``[N, ..., D]``, indices ``[E]``.

    On CPU (:func:`rows_reduce_alike`) every row of ``x`` is normalised once and the pairs gather unit rows, which
    gives the same bits without two gathered copies normalised apart; elsewhere the straightforward form.
    """
    x = primal(x).float()
    if not rows_reduce_alike(x):
        return F.cosine_similarity(x[first], x[second], dim=-1)
    unit = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_COS_EPS)
    return (unit[first] * unit[second]).sum(-1)
