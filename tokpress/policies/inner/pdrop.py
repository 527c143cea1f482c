"""``pdrop`` — PyramidDrop (Xing et al., CVPR 2025, "PyramidDrop: Accelerating Your Large Vision-Language Models via
Pyramid Visual Redundancy Reduction", arXiv 2410.17247).

Algorithm: the decoder is cut into ``S + 1`` stages. At the end of each of the first ``S`` stages the visual tokens
that entered it are ranked by the attention the last instruction token pays them (one query row, mean over heads)
and only the top fraction ``lambda`` goes on, so the visual token count shrinks geometrically with depth — a
pyramid. The paper's LLaVA-1.5 setting (32 layers): drops before layers 8, 16 and 24 with ``lambda = 0.5``, so
layers 0-7 / 8-15 / 16-23 / 24-31 see 100% / 50% / 25% / 12.5% of the visual tokens.

Budget mapping: ``retain_ratio`` r is the fraction of the visual tokens entering the first drop that survive the
last one. :meth:`PyramidDropPolicy.schedule` gives every drop the same ratio ``lambda = r ** (1 / S)`` (r = 0.125
with the default ``S = num_stages = 3`` reproduces the paper's ``lambda = 0.5``). Each drop keeps
``budget(lambda, n)`` = ``round(lambda * n)`` (at least 1) of the ``n`` tokens entering it, so after the last drop
``round(lambda * round(lambda * round(lambda * N)))`` tokens remain: r N up to per-stage rounding (within
``S / 2`` tokens; at least 1).

Layers: the first drop is at ``layer`` K (``tokpress.apply(..., inner_layer=K)``; default ``round(L / 4)``), the
others at ``K + floor(i * (L - K) / S)`` for ``i = 1 .. S - 1``: 8, 16, 24 for L = 32 (the paper), 7, 14, 21 for
L = 28. Each drop at layer K uses layer K - 1's attention. On shallow decoders (or a late K) where some of these
layers coincide, the duplicates collapse into one drop and ``lambda = r ** (1 / S')`` over the ``S'`` distinct
layers, so r still holds; layers are always strictly increasing and in ``[K, L - 1]``.

Deviations from the reference code (``Cooperx521/PyramidDrop``, ``modeling_llama_pdrop.py``):

- Score: the reference recomputes the ranking attention with the *upcoming* layer K's input norm, q/k projections
  and RoPE on the hidden states entering layer K; tokpress uses the last query's attention at layer K - 1 (mean
  over heads), which the engine recomputes from that layer's projections for every attention-based inner policy.
  Both are one recomputed last-query row; they differ by one layer.
- Positions: the reference renumbers the survivors contiguously after each drop; tokpress keeps their original
  positions (consistent with Hugging Face ``generate()``, see DESIGN.md "Positions").
- Counts: the reference keeps ``int(N * lambda ** s)`` (floor, relative to the original N) at drop ``s``; tokpress
  keeps ``round(lambda * n)`` of the tokens entering each drop (its per-stage budget semantics).
- Ties: ``torch.topk`` leaves their order unspecified; tokpress keeps the lower index (deterministic).
- Video: the reference released image models only (one image span per sample); tokpress ranks all the visual
  tokens of a sample (every frame of every video) together.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokpress.errors import ConfigError, InputError
from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig
from tokpress.registry import register_policy


@dataclass(frozen=True)
class PyramidDropConfig(PolicyConfig):
    num_stages: int = 3
    """Number of drops S (the paper's 4 stages = 3 drops); each keeps ``retain_ratio ** (1 / S)`` of its input."""

    def validate(self) -> None:
        n = self.num_stages
        self.check(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1,
            f"num_stages must be an int >= 1 (the number of drops; the paper uses 3), got {n!r}",
        )


def drop_layers(num_layers: int, layer: int, num_stages: int) -> list[int]:
    """Distinct, increasing layers of the drops: ``layer + floor(i * (num_layers - layer) / num_stages)``.

    The floor keeps every layer below ``num_layers``; coinciding layers (shallow decoders) collapse into one.
    """
    span = num_layers - layer
    return sorted({layer + i * span // num_stages for i in range(num_stages)})


@register_policy("pdrop", stage="inner")
class PyramidDropPolicy(InnerPolicy):
    config_cls = PyramidDropConfig
    needs_attention = True

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The first drop at a quarter of the depth (layer 8 of LLaVA-1.5's 32), within ``[1, L - 1]``."""
        return max(1, min(num_layers - 1, (num_layers + 2) // 4))  # round(L / 4), halves rounded up

    @classmethod
    def schedule(cls, config: PolicyConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        if not 1 <= layer < num_layers:
            raise ConfigError(
                f"pdrop's first drop layer must be in [1, {num_layers - 1}] for a {num_layers}-layer decoder, "
                f"got {layer!r}"
            )
        stages = config.num_stages if isinstance(config, PyramidDropConfig) else PyramidDropConfig().num_stages
        layers = drop_layers(num_layers, layer, stages)
        step = ratio ** (1.0 / len(layers))
        return [(k, step) for k in layers]

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        if tokens.attention is None:
            raise InputError("pdrop ranks tokens by attention: pass InnerTokens.attention (needs_attention is set)")
        return Plan(topk_sorted(tokens.attention, budget))
