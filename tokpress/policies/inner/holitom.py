"""``holitom`` (inner stage) — HoliTom (Shao et al., NeurIPS 2025, "HoliTom: Holistic Token Merging for Fast Video
Large Language Models"), the inner-LLM merge.

At decoder layer k, keep the visual tokens that receive the most attention from the last query at layer k - 1
(mean over heads, as FastV); every other visual token is merged into the kept token whose hidden state is most
cosine-similar to its own (float32, on the hidden states entering layer k). Survivors keep their original positions.

Budget mapping: the paper keeps ``round(L_v (1 - r))`` tokens with ``r = 0.5``; here the stage's ratio is the kept
fraction ``1 - r`` (the HoliTom preset runs it at 0.5) and ``budget = round(ratio n)``. The paper's layer
``k = 18`` of Qwen2-7B's 28 is scaled to the model's depth by :meth:`HoliTomInnerPolicy.default_layer`.

Deviations from the reference code (cokeshao/HoliTom), with reasons:

- Merge arithmetic: the reference folds each dropped token into its target in a Python loop as
  ``h <- (h + h_drop) / 2``, so a kept token that absorbs several tokens weights them ``1/2, 1/4, ...`` by the
  arbitrary loop order. tokpress takes the proper size-weighted mean: the kept token's new hidden state is the plain
  mean of itself and every token assigned to it, and ``Plan.sizes`` is ``1 + absorbed`` (sums to ``n``).
  ``InnerTokens`` carries no sizes, so a token that already stands for several originals (outer merge) weighs 1.
- The last query's attention comes from the engine (recomputed from layer k - 1's projections, SDPA and
  flash-attention keep working); the reference forces layer k - 1 to eager attention. Ties in the ranking go to the
  earlier token.
- Which tokens may be merged is the engine's choice of droppable visual tokens; the reference also merges the
  LLaVA-OneVision newline token that sits in the visual span.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import cosine_matrix, group_mean, group_size, topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig
from tokpress.registry import register_policy


@dataclass(frozen=True)
class HoliTomInnerConfig(PolicyConfig):
    """No options of its own: the paper's knobs are the stage's layer (``inner_layer``, k = 18 of 28) and ratio
    (``inner_ratio``, keep 1 - r = 0.5)."""


@register_policy("holitom", stage="inner")
class HoliTomInnerPolicy(InnerPolicy):
    config_cls = HoliTomInnerConfig
    needs_attention = True
    attention_queries = "last"

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The paper's layer 18 of 28, scaled: ``round(18 L / 28)`` (halves up), clamped to ``[1, L - 1]``."""
        return max(1, min((36 * num_layers + 28) // 56, num_layers - 1))

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        if tokens.attention is None:
            raise InputError(
                "inner policy 'holitom' needs InnerTokens.attention (the last query's attention at layer k - 1); "
                "the engine must compute it for policies with needs_attention"
            )
        n = tokens.hidden.shape[0]
        keep = topk_sorted(tokens.attention, budget)
        if budget >= n:
            return Plan(keep)
        dropped = torch.ones(n, dtype=torch.bool, device=keep.device)
        dropped[keep] = False
        dropped = dropped.nonzero().squeeze(1)
        group = torch.empty(n, dtype=torch.long, device=keep.device)
        group[keep] = torch.arange(budget, device=keep.device)
        group[dropped] = cosine_matrix(tokens.hidden[dropped], tokens.hidden[keep]).argmax(-1)
        w = tokens.sizes  # tokens merged at earlier stages weigh what they stand for
        return Plan(keep, group_mean(tokens.hidden, group, budget, w), group_size(group, budget, w))
