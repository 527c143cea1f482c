"""Cosine similarities, always computed in float32 whatever the model dtype (selection only: no tangent).

The row-wise forms (:func:`cosine_adjacent`, :func:`cosine_pairs`) normalise every row once and reuse the unit rows,
on every device. On CPU, for rows shorter than torch's parallel grain (``_GRAIN`` entries), that is bit for bit
``F.cosine_similarity`` of the gathered rows: a row's norm does not depend on how many rows are reduced with it.
Elsewhere (CUDA, whose reduction layout follows the number of rows; longer rows on CPU) a norm can differ from the
gathered copy's in the last bit, so the cosines agree within ``1e-6`` (float32) and the policies built on them select
the same tokens on non-degenerate inputs (``tests/test_similarity_ops.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokpress.ops.dual import primal

_COS_EPS = 1e-8  # F.cosine_similarity's default eps
_GRAIN = 32768  # torch's CPU reductions split one output's reduction across threads from this many inputs on


def rows_reduce_alike(x: torch.Tensor) -> bool:
    """Whether a reduction over the last dim of ``x`` gives each row the same bits however many rows are reduced.

    True on CPU for rows shorter than torch's parallel grain (a single output of a longer row is split across
    threads); CUDA's reduction layout depends on the number of rows. This module no longer branches on it; it is
    kept for ``fastvid`` and ``sttm``, which still do.
    """
    return x.device.type == "cpu" and x.shape[-1] < _GRAIN


def _units(x: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` float32 rows of ``x`` divided by their norm (clamped to ``1e-8``), as ``F.cosine_similarity``
    normalises its arguments (no tangent)."""
    x = primal(x).float()
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_COS_EPS)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise cosine ``[..., N, M]`` of ``a`` ``[..., N, D]`` and ``b`` ``[..., M, D]`` (default ``a``)."""
    a = F.normalize(primal(a).float(), dim=-1)
    b = a if b is None else F.normalize(primal(b).float(), dim=-1)
    return a @ b.transpose(-1, -2)


def cosine_adjacent(frames: torch.Tensor) -> torch.Tensor:
    """Similarity of each token to the same position in the previous frame.

    ``F.cosine_similarity(x[1:], x[:-1], dim=-1)`` would normalise every frame twice (once as each argument); here
    each frame is normalised once (see the module docstring for when that is bit-identical).

    Args:
        frames: ``[T, P, D]`` tokens of T frames with P positions each.

    Returns:
        ``[T - 1, P]``: entry ``(t, p)`` is ``cos(frames[t + 1, p], frames[t, p])``.
    """
    unit = _units(frames)
    return (unit[1:] * unit[:-1]).sum(-1)


def cosine_pairs(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``F.cosine_similarity(x[first], x[second], dim=-1)`` in float32, ``x`` ``[N, ..., D]``, indices ``[E]``.

    Every row of ``x`` is normalised once and the pairs gather unit rows, instead of two gathered copies normalised
    apart (see the module docstring for when that is bit-identical).
    """
    unit = _units(x)
    return (unit[first] * unit[second]).sum(-1)
