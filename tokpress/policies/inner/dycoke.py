"""``dycoke`` (inner) — DyCoke's dynamic KV-cache selection at decode time (Tao et al., CVPR 2025, "DyCoke: Dynamic
Compression of Tokens for Fast Video Large Language Models"). The prefill-side temporal merging is the outer policy of
the same name.

Algorithm: the full KV cache is kept; at every decode step the new token's attention at layer ``L - 1`` over the
visual tokens in the cache (last query, mean over heads) is compared with a stored attention map by cosine
similarity (float32). On the first step, or when the similarity is below ``threshold`` (0.9), the visible set is
re-selected as the ``budget`` visual tokens with the highest attention; otherwise the stored selection is reused.
Layers ``>= L`` then attend to the selected visual tokens plus every non-visual position (the engine's part: it
masks, the cache stays whole). Prefill is not touched.

Budget mapping: the paper's ``P`` (``dycoke_p``, fraction of visual tokens pruned during decoding) is
``1 - retain_ratio``; the engine passes ``budget = round((1 - P) * n)`` for the ``n`` visual tokens in the cache
(the reference takes ``int(...)``, i.e. floors). The paper's ``L`` (``dycoke_l``) is the inner layer ``K``: 3 by
default for every model size (the paper uses L = 3 on LLaVA-OV 0.5B, 7B and 72B: 24, 28 and 80 layers), so it is
not scaled with depth, only capped by it. Paper settings: L = 3, P = 0.7 (README; builder default P = 0.8).

State: ``tokens.memory`` (one per sample and cache) holds ``attention`` (the map new ones are compared with),
``keep`` (the current selection) and ``reselections`` (a count, as a tensor). The top-k is computed at every step
and chosen with ``torch.where``, so deciding whether to re-select never synchronises with the host.

Deviations from the reference code (``KD-TAO/DyCoke``, ``PrunableDynamicCache.dycoke_pruning``):

- On a stable step tokpress reuses the stored selection, as the paper describes. In the reference the index list is
  reset at every layer below L of every step and only set again when the map changed, so on stable steps layers
  ``>= L`` in fact attend to the whole cache.
- The stored map is per sample and per cache (per prompt); the reference keeps one on the model config that is never
  reset between prompts. The first decode step of every prompt therefore selects.
- ``compare_to="selection"`` (not the default) compares with the map at the last re-selection instead of the previous
  step's map (the reference), so slow drift also triggers a re-selection.
- A stored selection that no longer fits (a different number of visual tokens or a different budget) is replaced by
  a fresh selection instead of being applied.
- Ties in attention go to the lower index (stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig
from tokpress.registry import register_policy

_COMPARE = ("previous", "selection")


@dataclass(frozen=True)
class DyCokeKVConfig(PolicyConfig):
    threshold: float = 0.9
    """Re-select when the cosine between the new attention map and the stored one is below this (paper: 0.9)."""
    compare_to: str = "previous"
    """Stored map: ``"previous"`` decode step's (reference code) or the one at the last ``"selection"``."""

    def validate(self) -> None:
        ok = isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
        self.check(
            ok and -1.0 <= self.threshold <= 1.0,
            f"threshold must be a cosine similarity in [-1, 1], got {self.threshold!r} (the paper uses 0.9)",
        )
        self.check(self.compare_to in _COMPARE, f"compare_to must be one of {_COMPARE}, got {self.compare_to!r}")


@register_policy("dycoke", stage="inner")
class DyCokeKVPolicy(InnerPolicy):
    config_cls = DyCokeKVConfig
    needs_attention = True
    attention_queries = "last"
    decode = True

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The paper's L = 3 (for 24-, 28- and 80-layer models alike), capped by the depth."""
        return max(1, min(3, num_layers - 1))

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        attention = tokens.attention.detach().to(torch.float32, copy=True)  # stored: never alias the engine's
        memory = tokens.memory
        fresh = topk_sorted(attention, budget)
        stored, reference = memory.get("keep"), memory.get("attention")
        fits = (
            stored is not None
            and reference is not None
            and stored.numel() == budget
            and reference.shape == attention.shape
            and reference.device == attention.device
        )
        if not fits:  # first step of this cache (or the stored selection no longer applies)
            memory["keep"], memory["attention"] = fresh, attention
            memory["reselections"] = torch.ones((), dtype=torch.long, device=attention.device)
            return Plan(fresh)
        changed = F.cosine_similarity(attention, reference, dim=0) < self.config.threshold  # 0-d bool, on device
        keep = torch.where(changed, fresh, stored)
        memory["keep"] = keep
        memory["attention"] = (
            attention if self.config.compare_to == "previous" else torch.where(changed, attention, reference)
        )
        memory["reselections"] = memory.get("reselections", 0) + changed.long()
        return Plan(keep)
