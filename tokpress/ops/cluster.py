"""Density-peaks clustering with k-nearest-neighbour density (DPC-kNN), deterministic, vectorised.

Used by HoliTom, FastVID and PruneVid, whose reference codes share one DPC-kNN routine (TCFormer's): distances are
Euclidean over ``sqrt(D)``; a point's local density is ``exp(-mean of its k smallest squared distances)`` — the
``k`` smallest entries of its distance row, *the point itself (distance 0) included*, so the mean runs over the point
and its ``k - 1`` nearest others; ``delta`` is the distance to the nearest denser point, and the densest point gets
the largest distance of the whole matrix; centers are the ``num_centers`` largest ``density * delta``. tokpress
follows that rule exactly (the density ranking decides which tokens become centers, so it changes what is kept).

One deviation, for reproducibility: the reference codes add ``rand * 1e-6`` to the densities to break ties; tokpress
breaks ties by index instead (the lower index counts as denser; among equal scores the lower index becomes a center
first). Without ties both pick the same centers.
"""

from __future__ import annotations

import math

import torch

from tokpress.ops.dual import primal


def knn_density(dist: torch.Tensor, k: int) -> torch.Tensor:
    """``[N]`` density ``exp(-mean of the k smallest squared distances of each row)`` from ``dist [N, N]``.

    The row's own zero distance is one of the ``k`` (the reference rule), so ``k = 1`` gives every point density 1.
    ``k`` is clamped to ``[1, N]``.
    """
    k = max(1, min(k, dist.shape[-1]))
    near = dist.topk(k, dim=-1, largest=False).values
    return torch.exp(-(near**2).mean(-1))


def dpc_knn(x: torch.Tensor, num_centers: int, k: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` ``[N, D]`` around ``num_centers`` density peaks.

    Distances are Euclidean divided by ``sqrt(D)``; densities are :func:`knn_density`. A point's peak score is
    ``density * delta``, ``delta`` being the distance to the nearest denser point (the densest point gets the largest
    distance in the matrix). The ``num_centers`` best-scoring points become centers and every point joins its nearest
    center (a center joins itself).

    Returns:
        ``centers [c]`` (indices into ``x``, ascending), ``assign [N]`` (index into ``centers``) and
        ``density [N]``.
    """
    n = x.shape[0]
    c = max(1, min(num_centers, n))
    x = primal(x).float()
    dist = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    if n == 1:
        zero = torch.zeros(1, dtype=torch.long, device=x.device)
        return zero, zero, torch.ones(1, device=x.device)
    density = knn_density(dist, k)
    order = torch.sort(density, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=x.device)
    denser = rank[None, :] < rank[:, None]  # [i, j]: j is denser than i
    delta = dist.masked_fill(~denser, float("inf")).min(-1).values
    delta[order[0]] = dist.max()
    score = density * delta
    centers = torch.sort(score, descending=True, stable=True).indices[:c].sort().values
    assign = dist[:, centers].argmin(-1)
    assign[centers] = torch.arange(c, device=x.device)
    return centers, assign, density
