"""FastVID's density-weighted temporal merge (DTM) and plan assembly (helpers of
:mod:`tokpress.policies.outer.fastvid`).

* :func:`dtm_merge` — the LLaVA form's DTM: every row joins its most similar anchor (anchors join themselves).
* :func:`dtm_merge_excluding` — the Qwen form's DTM: the mean of a group excludes its anchor.
* :func:`dtm_rows` / :func:`dtm_rows_excluding` — the same merges reading a segment's rows in place, as the policy
  runs them; :func:`unit_rows` / :func:`gathered_unit_rows` — the unit rows a segment shares across its anchor frames.
* :func:`assemble_plan` — the :class:`~tokpress.policies.base.Plan` of the kept and merged pieces, in raster order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokpress.ops import cosine_matrix, group_mean, group_size, primal
from tokpress.policies.base import Plan


def unit_rows(pool: torch.Tensor) -> torch.Tensor:
    """``[Q, D]`` float32 unit rows of ``pool`` as :func:`~tokpress.ops.cosine_matrix` normalises them (no tangent).

    Row-wise, so on CPU (:func:`~tokpress.ops.rows_reduce_alike`) ``unit_rows(pool)[i] == unit_rows(pool[i])`` bit
    for bit: a segment's pool is normalised once and shared by the DTM of all its anchor frames."""
    return F.normalize(primal(pool).float(), dim=-1)


def gathered_unit_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``unit_rows(x[rows])`` ``[Q, D]`` bit for bit in one buffer: the rows are gathered, then normalised in place."""
    out = primal(x).index_select(0, rows).float()
    return F.normalize(out, dim=-1, out=out)


def _merge_joined(
    x: torch.Tensor, joined: torch.Tensor, assign: torch.Tensor, anchors_x: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w x_anchor + (1 - w) mean(joined)`` per anchor, ``w = max(1 / (n + 1), beta)``.

    Args:
        x: ``[R, D]`` float32 rows (a segment's tokens, or a pool); rows that join nothing are read but count for no
            anchor (they go to a spare group), so ``x`` can be a segment's slice of the grid with its salient rows.
        joined: ``[J]`` ascending rows of ``x`` that join an anchor; ``assign``: ``[J]`` the anchor each joins.
        anchors_x: ``[m, D]`` float32 features of the anchors.

    Returns:
        merged ``[m, D]`` float32 and the join counts ``n`` ``[m]`` float32. The sums add the joined rows in
        ascending order, as a gathered ``x[joined]`` would: the same bits.
    """
    m = anchors_x.shape[0]
    group = torch.full((x.shape[0],), m, dtype=torch.long, device=x.device).index_copy_(0, joined, assign)
    n = group_size(assign, m)
    w = (1 / (n + 1)).clamp_min(beta)[:, None]  # n = 0: w = 1, the anchor as it is
    return w * anchors_x + (1 - w) * group_mean(x, group, m + 1)[:m], n


def _cosine_to(unit: torch.Tensor | None, pool: torch.Tensor, rows: torch.Tensor | None, anchors: torch.Tensor):
    """``[Q', m]`` cosine of the pool rows ``rows`` (default: all) to the pool rows ``anchors``.

    From the pool's :func:`unit_rows` ``unit`` when given, else :func:`~tokpress.ops.cosine_matrix` of the gathered
    rows (each operand normalised on its own, as on devices where row normalisation is not row-local)."""
    if unit is not None:
        lhs = unit if rows is None else unit.index_select(0, rows)
        return lhs @ unit.index_select(0, anchors).T
    lhs = pool if rows is None else pool.index_select(0, rows)
    return cosine_matrix(lhs, pool.index_select(0, anchors))


def dtm_rows(
    x: torch.Tensor,
    members: torch.Tensor,
    pool: torch.Tensor,
    unit: torch.Tensor | None,
    own: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLaVA form's DTM of the pool rows ``members`` ``[Q]`` of ``x`` ``[R, D]`` into the pool rows ``own``.

    ``pool``: ``[Q, D]`` the pool's features (read only when ``unit`` is ``None``); ``unit``: its unit rows."""
    assign = _cosine_to(unit, pool, None, own).argmax(-1)
    assign[own] = torch.arange(own.numel(), device=x.device)
    return _merge_joined(x, members, assign, x.index_select(0, members.index_select(0, own)), beta)


def dtm_rows_excluding(
    x: torch.Tensor,
    members: torch.Tensor,
    pool: torch.Tensor,
    unit: torch.Tensor | None,
    own: torch.Tensor,
    beta: float,
    other_anchor: torch.Tensor,
    n_frames: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Qwen form's DTM (:func:`dtm_merge_excluding`) of the pool rows ``members`` of ``x``: merged, sizes."""
    joins = torch.ones(members.numel(), dtype=torch.bool, device=x.device)
    joins[own] = False
    rows = joins.nonzero().squeeze(1)  # [Q - m] the joining pool rows (one host sync, as boolean indexing has)
    assign = _cosine_to(unit, pool, rows, own).argmax(-1)
    merged, _ = _merge_joined(
        x, members.index_select(0, rows), assign, x.index_select(0, members.index_select(0, own)), beta
    )
    weights = (~other_anchor.index_select(0, rows)).float() / n_frames
    return merged, 1 + group_size(assign, own.numel(), weights)


def dtm_merge_excluding(
    pool: torch.Tensor,
    anchors: torch.Tensor,
    beta: float,
    other_anchor: torch.Tensor,
    n_frames: int,
    unit: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Qwen form's DTM: merge the ``pool`` ``[Q, D]`` rows that are not ``anchors`` ``[m]`` into those anchors.

    Every non-anchor row joins its most cosine-similar anchor (ties: the earlier anchor); an anchor joined by ``n``
    rows becomes ``w x_anchor + (1 - w) mean(joined)``, ``w = max(1/(n+1), beta)`` — the mean excludes the anchor.

    Args:
        other_anchor: ``[Q]`` bool, rows that are anchors of the segment's other anchor frames (they join, but are
            kept tokens of their own, so they add nothing to the sizes).
        n_frames: the segment's anchor frames ``A'``; every other joining row adds ``1 / A'`` to its anchor's size.
        unit: ``[Q, D]`` :func:`unit_rows` of ``pool`` when already computed (same result, one pass less).

    Returns:
        merged features ``[m, D]`` float32 and sizes ``[m]`` float32.
    """
    x = pool.float()
    members = torch.arange(x.shape[0], device=x.device)
    return dtm_rows_excluding(x, members, x, unit, anchors, beta, other_anchor, n_frames)


def dtm_merge(
    pool: torch.Tensor, anchors: torch.Tensor, beta: float, unit: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-weighted temporal merge of ``pool`` ``[Q, D]`` into the pool rows ``anchors`` ``[m]``.

    Every row joins the anchor it is most cosine-similar to (an anchor joins itself; ties go to the earlier
    anchor); an anchor joined by ``n`` rows becomes ``w x_anchor + (1 - w) mean(joined)``, ``w = max(1/(n+1), beta)``.
    ``unit``: ``[Q, D]`` :func:`unit_rows` of ``pool`` when already computed (same result, one pass less).

    Returns:
        merged features ``[m, D]`` float32 and the counts ``n`` ``[m]`` float32.
    """
    x = pool.float()
    return dtm_rows(x, torch.arange(x.shape[0], device=x.device), x, unit, anchors, beta)


def assemble_plan(x: torch.Tensor, pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Plan:
    """The plan of ``pieces`` (grid indices ``[k_i]``, features ``[k_i, D]``, sizes ``[k_i]``) in raster order.

    Each piece's features are written once, straight to their sorted rows of the output (in ``x``'s dtype)."""
    keep = torch.cat([idx for idx, _, _ in pieces])
    order = keep.argsort()
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device)
    features = x.new_empty(order.numel(), x.shape[-1])
    start = 0
    for idx, feats, _ in pieces:  # 1 + (anchor frames) pieces, never one per token
        features.index_copy_(0, position[start : start + idx.numel()], feats.to(x.dtype))
        start += idx.numel()
    return Plan(keep[order], features, torch.cat([size for _, _, size in pieces])[order])
