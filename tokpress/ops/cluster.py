"""Density-peaks clustering with k-nearest-neighbour density (DPC-kNN), deterministic, vectorised.

Used by HoliTom, FastVID and PruneVid. The reference codes add tiny random noise to the densities to break ties;
tokpress breaks ties by index instead (lower index = denser), so results are reproducible.
"""

from __future__ import annotations

import math

import torch


def knn_density(dist: torch.Tensor, k: int) -> torch.Tensor:
    """``[N]`` density ``exp(-mean of the squared distances to the k nearest other points)`` from ``dist [N, N]``."""
    n = dist.shape[0]
    k = max(1, min(k, n - 1))
    near = dist.topk(k + 1, dim=-1, largest=False).values[:, 1:]  # drop the point itself (distance 0)
    return torch.exp(-(near**2).mean(-1))


def dpc_knn(x: torch.Tensor, num_centers: int, k: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` ``[N, D]`` around ``num_centers`` density peaks.

    Distances are Euclidean divided by ``sqrt(D)``. A point's peak score is ``density * delta``, ``delta`` being
    the distance to the nearest denser point (the densest point gets its largest distance). The ``num_centers``
    best-scoring points become centers and every point joins its nearest center (a center joins itself).

    Returns:
        ``centers [c]`` (indices into ``x``, ascending), ``assign [N]`` (index into ``centers``) and
        ``density [N]``.
    """
    n = x.shape[0]
    c = max(1, min(num_centers, n))
    x = x.float()
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
    peak = order[0]
    delta[peak] = dist[peak].max()
    score = density * delta
    centers = torch.sort(score, descending=True, stable=True).indices[:c].sort().values
    assign = dist[:, centers].argmin(-1)
    assign[centers] = torch.arange(c, device=x.device)
    return centers, assign, density
