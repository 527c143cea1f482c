"""``prunevid`` (inner) — the question-aware pruning stage of PruneVid (Huang et al., ACL 2025, "PruneVid: Visual
Token Pruning for Efficient Video Large Language Models").

Algorithm (the reference's ``VTPWindowCache``): in prefill, the attention of the layer ``selected_layer = 10``
(0-based, PLLaVA's 32-layer Llama-2) gives every visual token one score, the **maximum over heads and over the text
queries after the video** (the engine's ``attention_queries = "question"``). The reference keeps the top
``int(alpha * n)`` (``alpha = 0.4``) static tokens of every segment and the top ``int(alpha * n)`` dynamic tokens of
every frame; the kept tokens keep their original positions, the hidden states of the later layers are cut to them,
**and so are the KV caches of layers 0..10** (``prune_earlier_kv``: what the text generated later sees in every
layer is the kept set).

Budget mapping: ``alpha`` is the stage's ratio, ``budget`` the exact total. The layer: the reference reads the
attention of layer 10 and cuts the tokens entering layer 11, so on a 32-layer decoder tokpress's ``K`` (the layer
the tokens are about to enter, scored at ``K - 1``) is 11; on other depths the scoring layer scales with depth,
``K = round(10 * L / 32) + 1`` (10 on a 28-layer Qwen2-7B), within ``[1, L - 1]``.

Deviation: the inner stage does not know which tokens the outer stage merged as static (it sees ordinals and the
videos' grids, not PruneVid's segment bookkeeping), so it keeps the top share by attention **per frame**: a token's
frame comes from its ordinal and ``tokens.videos`` (a static token of the outer ``prunevid`` sits in its segment's
first frame, so it competes there). Each frame keeps ``floor`` or ``ceil`` of ``budget * n_f / n`` of its ``n_f``
tokens (largest remainder, ties to the earlier frame), so the total is exactly ``budget``; the reference's
``int(alpha * n)`` per group would miss it. Tokens of a video's ``extra`` slots form one more group per video, and
ordinals outside every video (or no ``videos`` at all) one group. Ties in attention go to the lower index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import apportion
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig, VideoSlot
from tokpress.registry import register_policy

#: PruneVid's scoring layer (0-based) and the depth of the decoder it was chosen for (PLLaVA-7B, Llama-2-7B)
PAPER_LAYER, PAPER_DEPTH = 10, 32


@dataclass(frozen=True)
class PruneVidInnerConfig(PolicyConfig):
    """Options of :class:`PruneVidInnerPolicy`: none of its own. The paper's ``alpha`` is the stage's ratio and its
    ``selected_layer`` the stage's layer (see :meth:`PruneVidInnerPolicy.default_layer`)."""


def frame_groups(ordinals: torch.Tensor, videos: tuple[VideoSlot, ...]) -> torch.Tensor:
    """``[n]`` group of each token: its frame (numbered across the sample's videos), one extra group per video for
    its ``extra`` slots, and a last group for ordinals outside every video."""
    group = torch.full_like(ordinals, -1)
    base = 0
    for slot in videos:  # loop over the sample's videos
        g = slot.grid
        rel = ordinals - slot.offset
        in_grid = (rel >= 0) & (rel < g.numel)
        group = torch.where(in_grid, base + torch.div(rel, g.per_frame, rounding_mode="floor"), group)
        in_extra = (rel >= g.numel) & (rel < g.numel + slot.extra)
        group = group.masked_fill(in_extra, base + g.frames)
        base += g.frames + 1
    return group.masked_fill(group < 0, base)


def top_per_group(scores: torch.Tensor, group: torch.Tensor, budget: int) -> torch.Tensor:
    """Sorted indices of the top ``floor``/``ceil`` of ``budget * n_g / n`` ``scores`` in every group (exactly
    ``budget`` in all; ties to the lower index)."""
    counts = torch.bincount(group)
    quota = apportion(budget, counts)
    by_score = torch.sort(scores.float(), descending=True, stable=True).indices
    order = by_score[torch.sort(group[by_score], stable=True).indices]  # by group, then by score within a group
    start = torch.cumsum(counts, 0) - counts
    g = group[order]
    rank = torch.arange(order.numel(), device=order.device) - start[g]
    return order[rank < quota[g]].sort().values


@register_policy("prunevid", stage="inner")
class PruneVidInnerPolicy(InnerPolicy):
    config_cls = PruneVidInnerConfig
    needs_attention = True
    attention_queries = "question"
    prune_earlier_kv = True

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """``round(10 * L / 32) + 1`` (11 on PLLaVA's 32 layers), within ``[1, L - 1]``."""
        return max(1, min(num_layers - 1, math.floor(PAPER_LAYER * num_layers / PAPER_DEPTH + 0.5) + 1))

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        if tokens.attention is None:
            raise InputError(
                "inner policy 'prunevid' needs the text-to-video attention (InnerTokens.attention) but got none; "
                "the engine provides it for policies with needs_attention=True"
            )
        group = frame_groups(tokens.ordinals.to(tokens.attention.device), tokens.videos)
        return Plan(top_per_group(tokens.attention, group, budget))
