"""``fastv`` — FastV (Chen et al., ECCV 2024, "An Image is Worth 1/2 Tokens After Layer 2").

At layer K keep the visual tokens that receive the most attention from the last query at layer K-1 (mean over
heads), in their original order and with their original positions; every text token is kept. The score is
recomputed from layer K-1's query and key projections for the last position only (O(L d)), so SDPA and
flash-attention keep working. Default K = 2 (the paper); ``retain_ratio`` = 1 - R in the paper's notation.
"""

from __future__ import annotations

from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan
from tokpress.registry import register_policy


@register_policy("fastv", stage="inner")
class FastVPolicy(InnerPolicy):
    needs_attention = True

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        return Plan(topk_sorted(tokens.attention, budget))
