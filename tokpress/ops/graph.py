"""Graph operations on edge lists, vectorised (loops run over rounds, never over vertices or edges)."""

from __future__ import annotations

import torch


def connected_components(num: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Connected components of ``num`` vertices joined by the edges ``(a[e], b[e])``.

    Min-label hooking with pointer jumping: every round each component's root adopts the smallest root it shares an
    edge with, then every label jumps to its root; the number of rounds grows like ``log num``, not ``num``.

    Returns:
        ``[num]`` ``torch.long``: each vertex's label, the smallest vertex index of its component.

    Example: ``connected_components(4, tensor([1, 3]), tensor([2, 1])) -> tensor([0, 1, 1, 1])``.
    """
    label = torch.arange(num, device=a.device)
    if a.numel() == 0:
        return label
    while True:
        la, lb = label.index_select(0, a), label.index_select(0, b)  # roots: after jumping every label is a root
        low = torch.minimum(la, lb)
        new = label.scatter_reduce(0, la, low, reduce="amin").scatter_reduce_(0, lb, low, reduce="amin")
        while True:  # pointer jumping; labels only decrease, so this ends
            jumped = new.index_select(0, new)
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, label):
            return label
        label = new
