"""Index selection helpers. All return sorted ``torch.long`` indices on the input's device."""

from __future__ import annotations

import torch


def topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest ``scores`` (``[N]``), in ascending index order.

    Ties are broken towards the lower index (a stable sort), so results are deterministic.

    Example: ``topk_sorted(tensor([0.1, 0.9, 0.5, 0.9]), 2) -> tensor([1, 3])``.
    """
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:k].sort().values


def evenly_spaced(n: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``k`` distinct indices in ``[0, n)`` spread as evenly as possible, centred in their bins.

    Example: ``evenly_spaced(8, 2) -> tensor([2, 6])``; ``evenly_spaced(n, n) == arange(n)``.
    """
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n, got k={k}, n={n}")
    # centre of each of k equal bins; floor((2i + 1) n / 2k) is strictly increasing for k <= n
    i = torch.arange(k, device=device)
    return torch.div((2 * i + 1) * n, 2 * k, rounding_mode="floor")


def apportion(total: int, weights: torch.Tensor) -> torch.Tensor:
    """Split ``total`` over groups in proportion to the integer ``weights`` ``[G]`` (largest remainder).

    Each share is ``floor`` or ``ceil`` of ``total * w / sum(w)``, the shares sum to ``total`` and, when
    ``total <= sum(weights)``, no share exceeds its weight. Remainder ties go to the lower group index.
    """
    w = weights.long()
    whole = int(w.sum())
    if whole == 0:
        return torch.zeros_like(w)
    share = total * w
    base = torch.div(share, whole, rounding_mode="floor")
    left = total - int(base.sum())
    order = torch.sort(share - base * whole, descending=True, stable=True).indices[:left]
    base[order] += 1
    return base


def top_per_frame(scores: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
    """Sorted flat indices of each frame's ``budgets[t]`` highest ``scores`` ``[T, P]`` (ties to the lower index).

    Example: ``top_per_frame(tensor([[0.1, 0.9], [0.5, 0.2]]), tensor([1, 2])) -> tensor([1, 2, 3])``.
    """
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices  # [T, P]
    chosen = torch.arange(scores.shape[1], device=scores.device)[None] < budgets.to(scores.device)[:, None]
    flat = order + torch.arange(scores.shape[0], device=scores.device)[:, None] * scores.shape[1]
    return flat[chosen].sort().values
