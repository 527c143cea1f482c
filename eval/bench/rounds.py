"""Interleaved rounds: the schedule that makes ``tokpress bench`` timings survive a noisy machine.

A bench run has rows ``(method, ratio, batch)`` — the uncompressed model and the oracles included. After each row's
warm-up, the run makes ``repeats`` *rounds*; a round measures every row exactly once, in an order shuffled afresh
for that round by a seeded generator (``random.Random(seed)``), so a burst of load on a shared machine hits all rows
alike rather than the few that happened to run during it, and round ``k`` of two rows can be compared directly
(:mod:`~tokpress.eval.bench.paired`). Consecutive rounds never repeat an order (when there are two rows or more).

Also here: :func:`rebatch`, the inputs of one prompt repeated to a batch size.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def round_orders(rows: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """``rounds`` permutations of ``range(rows)``, each shuffled by ``random.Random(seed)``; a shuffle equal to the
    previous round's order is drawn again (``rows >= 2``), so every round's order differs from the one before."""
    rng = random.Random(seed)
    orders: list[list[int]] = []
    for _ in range(rounds):
        order = list(range(rows))
        rng.shuffle(order)
        while rows >= 2 and orders and order == orders[-1]:
            rng.shuffle(order)
        orders.append(order)
    return orders


def run_rounds(
    rows: Sequence[Any],
    measure: Callable[[Any], T],
    rounds: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[list[T]], list[list[int]]]:
    """Call ``measure(row)`` once per row per round, in the orders of :func:`round_orders`.

    Returns:
        ``(values, positions)``: ``values[i][k]`` is row ``i``'s measurement in round ``k``; ``positions[i][k]`` is
        where row ``i`` ran within round ``k`` (0 = first).
    """
    values: list[list[T]] = [[] for _ in rows]
    positions: list[list[int]] = [[] for _ in rows]
    for k, order in enumerate(round_orders(len(rows), rounds, seed)):
        if progress is not None:
            progress(f"round {k + 1}/{rounds}")
        for place, i in enumerate(order):
            values[i].append(measure(rows[i]))
            positions[i].append(place)
    return values, positions


def rebatch(inputs: dict[str, Any], batch: int) -> dict[str, Any]:
    """Model inputs of ``B`` identical prompts (``input_ids`` ``[B, L]``) as ``batch`` copies of the first.

    Every tensor whose first dimension is a multiple of ``B`` is taken as ``B`` equal blocks stacked along it —
    per-sample tensors (``[B, ...]``: ids, masks, grids, LLaVA's ``[B, F, C, H, W]`` pixels) and per-sample
    concatenations (Qwen's ``[B * patches, D]`` pixels) alike — so its first block is repeated ``batch`` times.
    Other values are passed on unchanged. The inputs are returned as they are when ``B == batch``.
    """
    have = int(inputs["input_ids"].shape[0])
    if have == batch:
        return inputs
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] % have == 0:
            block = value[: value.shape[0] // have]
            value = block.repeat(batch, *([1] * (value.ndim - 1)))
        out[key] = value
    return out
