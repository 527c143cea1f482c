"""``framefusion`` — FrameFusion (Fu et al., ICCV 2025, "FrameFusion: Combining Similarity and Importance for Video
Token Reduction on Large Visual Language Models", arXiv 2501.01986).

Algorithm (reference): in the shallow layers, each visual token whose cosine similarity to the token at the *same
spatial position in the previous frame* is at least ``S_th`` is merged into it — a run of consecutive similar
frames folds into the token before the run, as the uniform mean of the run — repeated layer after layer while
enough tokens are similar; then, once, the visual tokens are pruned by the last query's attention (mean over heads)
down to what a FLOPs budget (``cost``) allows. Survivors keep their original positions.

tokpress runs it as one exact-budget stage at layer K (default ``round(2 L / 28)``, layer 2 of a 28-layer Qwen2,
within ``[1, L - 1]``) on the hidden states entering layer K:

1. Similarity: token ``(v, t, p)`` (video, frame, position within the frame, from ``InnerTokens.ordinals`` and
   ``InnerTokens.videos``) against its predecessor, the latest earlier frame of the same video whose token at
   position ``p`` is among the given tokens (normally ``t - 1``; an earlier frame where an outer stage dropped
   ``(v, t - 1, p)``). First-frame tokens, and tokens outside every video grid, have no predecessor.
2. Merging: of the tokens with similarity ``>= similarity_threshold``, the ``min(#similar, n - budget)`` most
   similar are merged (ties: lower index first) — never more than the budget needs. Each merged token joins the
   nearest earlier unmerged token of its position chain, so a run ``t, t+1, t+2`` of similar frames folds into
   ``t``. The merged token sits at that earliest member's position and its hidden state is the uniform float32 mean
   of the group (FrameFusion's rule; equal to the size-weighted mean since every token entering the stage stands
   for one). ``Plan.sizes`` counts the group members.
3. Pruning: the groups left (at least ``budget`` of them) are ranked by the mean attention of their members at
   layer K - 1 and the top ``budget`` are kept (ties: lower index). Pruned groups are dropped, not merged, so
   ``Plan.sizes`` sums to the number of tokens given minus the members of the pruned groups (to exactly ``n``
   whenever merging alone meets the budget).

When nothing is merged the plan carries only ``keep`` (pure attention pruning, like FastV).

Budget mapping: ``retain_ratio`` r = the fraction of the visual tokens entering layer K that leave it (exactly
``budget(r, n)``). FrameFusion's ``cost`` c is the fraction of visual-token compute over all L layers; with every
visual token present in layers ``< K`` and ``r`` of them afterwards, ``c = (K + (L - K) r) / L``, i.e.
``r = (c L - K) / (L - K)``.

Deviations from the reference code (``thu-nics/FrameFusion``, ``framefusion/main.py``), with the reasons:

- One stage instead of per-layer cascaded merging from layer 0 followed by pruning at the first layer after merging
  stops: tokpress stages promise an exact token count fixed before the data are seen, and the reference's per-layer
  merge counts are data dependent. Merging and pruning therefore happen together at one layer, on the hidden states
  entering it (the reference merges the layer-0 input, then post-attention residuals), and with K - 1's attention
  scoring the unmerged tokens (the reference scores the already merged sequence: a group's mean attention stands in
  for the merged token's). A token cannot be merged twice in one stage, so cascades are resolved at once: each run
  of similar frames folds into the token before it, as the reference's runs do.
- The budget is ``retain_ratio`` rather than ``cost`` (mapping above), so ``ratio_lower_bound`` (stop cascading
  when fewer than 10% of tokens are similar) has no role and is not an option. The reference's required sparsity
  uses a hard-coded depth of 28 layers; tokpress needs none.
- When more tokens are similar than the budget needs, both merge the most similar ones; the reference then skips
  pruning altogether, as tokpress does (nothing is left to prune).
- Chains follow the given tokens: after an outer stage, a token merges into the latest surviving earlier frame at
  its position (the reference sees every frame). Videos of one sample never merge into each other.
- Tokens that fall outside every ``VideoSlot`` grid (or all tokens, when the engine passes no ``videos``) are never
  merged; a warning is logged once when no video grid is known.
- Ties are broken by index (deterministic); the reference uses ``torch.topk``. The reference runs batch size 1
  only; tokpress plans each sample of a batch on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import cosine_pairs, group_mean, group_size, topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig, VideoSlot
from tokpress.registry import register_policy

logger = logging.getLogger("tokpress")


@dataclass(frozen=True)
class FrameFusionConfig(PolicyConfig):
    similarity_threshold: float = 0.6
    """S_th: a token merges into the previous frame's same-position token only if their cosine is at least this."""

    def validate(self) -> None:
        s = self.similarity_threshold
        self.check(
            isinstance(s, (int, float)) and not isinstance(s, bool) and -1.0 <= s <= 1.0,
            f"similarity_threshold must be a cosine in [-1, 1] (FrameFusion uses 0.6), got {s!r}",
        )


def predecessors(ordinals: torch.Tensor, videos: tuple[VideoSlot, ...]) -> torch.Tensor:
    """``[n]`` index of each token's predecessor among the given tokens, or ``-1`` when it has none.

    The predecessor of ``(video v, frame t, position p)`` is the given token of video ``v`` at position ``p`` in the
    latest frame before ``t``. Tokens outside every video grid have none and are nobody's predecessor.
    """
    n, device = ordinals.shape[0], ordinals.device
    prev = torch.full((n,), -1, dtype=torch.long, device=device)
    if not videos or n < 2:
        return prev
    slots = sorted(videos, key=lambda v: v.offset)
    offset = torch.tensor([v.offset for v in slots], device=device)
    numel = torch.tensor([v.grid.numel for v in slots], device=device)
    per_frame = torch.tensor([v.grid.per_frame for v in slots], device=device)
    frames = torch.tensor([v.grid.frames for v in slots], device=device)
    ords = ordinals.long()
    slot = (torch.searchsorted(offset, ords, right=True) - 1).clamp_min(0)
    local = ords - offset[slot]
    inside = (local >= 0) & (local < numel[slot])
    frame, pos = local // per_frame[slot], local % per_frame[slot]
    # position-major key: one chain per (video, position), frames ascending within it; outside tokens sort last
    chain = torch.where(inside, offset[slot] + pos, -1 - torch.arange(n, device=device))
    last = torch.maximum((offset + numel).max(), ords.max() + 1)
    key = torch.where(inside, offset[slot] + pos * frames[slot] + frame, last + torch.arange(n, device=device))
    by_chain = torch.sort(key, stable=True).indices
    same = chain[by_chain[1:]] == chain[by_chain[:-1]]
    prev[by_chain[1:]] = torch.where(same, by_chain[:-1], -1)
    return prev


@register_policy("framefusion", stage="inner")
class FrameFusionPolicy(InnerPolicy):
    config_cls = FrameFusionConfig
    needs_attention = True

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__(config)
        self._warned = False

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """Layer 2 of 28 scaled to the depth (``round(2 L / 28)``), within ``[1, L - 1]``."""
        return max(1, min(num_layers - 1, (2 * num_layers + 14) // 28))

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        if tokens.attention is None:
            raise InputError("framefusion prunes by attention: pass InnerTokens.attention (needs_attention is set)")
        if not tokens.videos and not self._warned:
            logger.warning("framefusion: no video grids given (InnerTokens.videos); merging is off, pruning only")
            self._warned = True
        hidden, n = tokens.hidden, tokens.hidden.shape[0]
        device = hidden.device
        prev = predecessors(tokens.ordinals.to(device), tokens.videos)
        has_prev = prev >= 0
        sim = torch.full((n,), float("-inf"), device=device)
        if bool(has_prev.any()):  # cos(token, predecessor), float32
            sim[has_prev] = cosine_pairs(hidden, has_prev.nonzero().squeeze(1), prev[has_prev])
        similar = int((sim >= self.config.similarity_threshold).sum())
        num_merge = min(similar, n - budget)
        if num_merge == 0:
            return Plan(topk_sorted(tokens.attention, budget))
        merged = torch.zeros(n, dtype=torch.bool, device=device)
        merged[topk_sorted(sim, num_merge)] = True
        head = self._run_heads(prev, merged)
        survivors = (~merged).nonzero().squeeze(1)  # ascending; the group heads
        group_of = torch.cumsum(~merged, 0) - 1  # group id of each head, in index order
        groups = group_of[head]
        num_groups = survivors.numel()
        # one pass for both means: the group's hidden state and its members' mean attention (last column)
        w = tokens.sizes  # size-weighted: tokens merged at earlier stages weigh what they stand for
        both = group_mean(
            torch.cat([hidden.float(), tokens.attention.float().to(device)[:, None]], 1), groups, num_groups, w
        )
        features, score = both[:, :-1], both[:, -1]
        sizes = group_size(groups, num_groups, w)
        chosen = topk_sorted(score, budget)  # group ids ascending = heads ascending
        return Plan(survivors[chosen], features[chosen], sizes[chosen])

    @staticmethod
    def _run_heads(prev: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
        """``[n]`` the nearest unmerged token up each token's chain (itself when unmerged).

        Merged tokens form runs along their chains; each run hangs from the unmerged token before it. Pointer
        jumping resolves every run in ``ceil(log2(longest run))`` vectorised steps (the loop is over doublings, not
        tokens).
        """
        n = prev.shape[0]
        up = torch.where(merged, prev, torch.arange(n, device=prev.device))  # a merged token always has a predecessor
        while True:
            nxt = up[up]
            if torch.equal(nxt, up):
                return up
            up = nxt
