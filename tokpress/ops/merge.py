"""Group means: the merging arithmetic of token-merging methods, in float32."""

from __future__ import annotations

import torch


def group_mean(
    x: torch.Tensor, groups: torch.Tensor, num_groups: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean of the rows of ``x`` ``[N, D]`` per group.

    Args:
        groups: ``[N]`` group id in ``[0, num_groups)`` of each row.
        weights: ``[N]`` non-negative row weights (default 1, e.g. token sizes for size-weighted means).

    Returns:
        ``[num_groups, D]`` float32; a group with zero total weight gets zeros.
    """
    w = torch.ones(x.shape[0], device=x.device) if weights is None else weights.float()
    total = torch.zeros(num_groups, device=x.device).index_add_(0, groups, w)
    rows = x.float() if weights is None else x.float() * w[:, None]  # x * 1.0 == x exactly: no [N, D] pass
    sums = torch.zeros(num_groups, x.shape[-1], device=x.device).index_add_(0, groups, rows)
    return sums / total.clamp_min(1e-12)[:, None]


def group_size(groups: torch.Tensor, num_groups: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[num_groups]`` float32 total weight (count, or summed ``weights``) of each group."""
    w = torch.ones(groups.shape[0], device=groups.device) if weights is None else weights.float()
    return torch.zeros(num_groups, device=groups.device).index_add_(0, groups, w)
