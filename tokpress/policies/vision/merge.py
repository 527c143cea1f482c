"""Bipartite soft matching, size-weighted merging and unmerging of vision-encoder tokens (pure tensor ops).

Every function works on a batch of independent token sets ``[F, n, ...]`` — one row per frame, so frames are never
matched with each other — and every row has the same token count before and after a merge, which keeps the batch
rectangular for the encoder.

One merge round is described by ``slot`` ``[F, n]``: the index, among the ``n - r`` tokens that leave the round,
of the token each input token ends up in. Survivors keep their relative order; a merged-away token points at the
token it was merged into. Rounds compose by ``source = slot.gather(1, source)``, so a ``source`` ``[F, N]`` maps each
original patch to the token that carries it, and unmerging is one gather.
"""

from __future__ import annotations

import math

import torch


def merge_schedule(n: int, target: int) -> list[int]:
    """Tokens each bipartite round merges away to go from ``n`` to ``target`` tokens.

    A round matches the ``ceil(n / 2)`` tokens at even positions (set A) into the ``floor(n / 2)`` at odd ones
    (set B), so it removes at most ``ceil(n / 2)`` tokens; rounds repeat until ``target`` is reached.

    Example: ``merge_schedule(729, 182) -> [365, 182]`` (729 -> 364 -> 182); ``merge_schedule(729, 729) -> []``.
    """
    if not 1 <= target <= n:
        raise ValueError(f"target must be in [1, {n}], got {target}")
    rounds = []
    while n > target:
        r = min(n - target, math.ceil(n / 2))
        rounds.append(r)
        n -= r
    return rounds


def bipartite_slots(metric: torch.Tensor, r: int) -> torch.Tensor:
    """One round of bipartite soft matching: merge the ``r`` A-tokens most similar to a B-token into it.

    A is the tokens at even positions, B those at odd positions. Each A-token's best match is the B-token of
    highest cosine similarity; the ``r`` A-tokens with the highest best-match similarity merge into their match (a
    stable sort: on ties the earlier token merges first), every other token survives.

    Args:
        metric: ``[F, n, d]`` what tokens are compared by (keys or hidden states), any float dtype.
        r: tokens to merge away per row, ``0 <= r <= ceil(n / 2)`` (and ``n >= 2`` when ``r > 0``).

    Returns:
        ``slot`` ``[F, n]`` long: the output token (in ``[0, n - r)``) each input token goes to.
    """
    frames, n, _ = metric.shape
    if r == 0:
        return torch.arange(n, device=metric.device).expand(frames, n)
    if not 0 < r <= math.ceil(n / 2) or n < 2:
        raise ValueError(f"cannot merge {r} of {n} tokens in one bipartite round (at most ceil(n / 2), n >= 2)")
    unit = torch.nn.functional.normalize(metric.float(), dim=-1)
    a, b = unit[:, ::2], unit[:, 1::2]
    best, match = (a @ b.transpose(1, 2)).max(dim=-1)  # [F, nA]: similarity to and index of the best B-token
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    merged_a = torch.zeros_like(best, dtype=torch.bool).scatter_(1, order[:, :r], True)
    gone = torch.zeros(frames, n, dtype=torch.bool, device=metric.device)
    gone[:, ::2] = merged_a
    rank = (~gone).cumsum(dim=1) - 1  # rank among the survivors (valid at survivors)
    slot = rank.clone()
    slot[:, ::2] = torch.where(merged_a, rank[:, 1::2].gather(1, match), rank[:, ::2])
    return slot


def merge_weighted(
    x: torch.Tensor, size: torch.Tensor, slot: torch.Tensor, out_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of the tokens that share a slot, and the merged sizes.

    Args:
        x: ``[F, n, D]`` token features.
        size: ``[F, n]`` float, how many original patches each token stands for.
        slot: ``[F, n]`` from :func:`bipartite_slots`.
        out_tokens: ``n - r``, the tokens per row after the round.

    Returns:
        ``([F, out_tokens, D]`` features in ``x.dtype`` (accumulated in float32), ``[F, out_tokens]`` sizes``)``.
        A token merged with nothing comes out bit-identical.
    """
    frames, _, dim = x.shape
    weighted = x.float() * size[..., None].float()
    total = torch.zeros(frames, out_tokens, dim, device=x.device).scatter_add_(
        1, slot[..., None].expand(-1, -1, dim), weighted
    )
    merged_size = torch.zeros(frames, out_tokens, device=x.device).scatter_add_(1, slot, size.float())
    return (total / merged_size[..., None]).to(x.dtype), merged_size


def proportional_bias(size: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias ``log(size)`` on the key axis, ``[F, 1, 1, n]`` in ``dtype``.

    Added to the attention logits, a key that stands for ``s`` patches weighs as ``s`` identical keys would
    (ToMe's proportional attention): ``s * exp(l) = exp(l + log s)``.
    """
    return size.log().to(dtype)[:, None, None, :]


def compose(source: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """``[F, N]`` map from original patches to the tokens after one more round with ``slot`` ``[F, n]``."""
    return slot.gather(1, source)


def unmerge(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Copy each merged token back to every patch it absorbed: ``[F, n, D]`` -> ``[F, N, D]`` via ``source``."""
    return x.gather(1, source[..., None].expand(-1, -1, x.shape[-1]))
