"""``mustdrop`` (inner stage) — MustDrop (Liu et al., arXiv 2411.10803; code ``liuting20/MustDrop``,
``modelling_sparse_llama.py``), the prefilling and decoding stages.

Algorithm:

1. *Dual-attention filter* (prefill), at four decoder layers. The text after the visual tokens (the question and
   the chat template's tail) attends to them: the layer's attention, softmax over every key the row may see, mean
   over heads, gives ``A[t, v]``. A visual token's *global* attention is ``G[v] = sum_t A[t, v]`` and its
   *individual* attention ``I[v] = max_t A[t, v]``. The authors drop a token when both are small,
   ``G[v] < global_thr * sum_v G[v]`` and ``I[v] < individual_thr``, i.e. they keep it when
   ``s[v] = max(G[v] / (global_thr * sum_v G[v]), I[v] / individual_thr) >= 1``. tokpress keeps the stage's
   budget of tokens with the largest ``s`` (the same tokens whenever the budget equals the count the thresholds
   keep). The key token set marked by the outer stage (``mustdrop`` outer, ``Plan.marks``) is always kept.
2. *Output-aware cache* (decode). After the prefill, the KV cache of every layer from the first filter on is cut to
   the tokens the last filter left (``cut_kv_to_final``): every token generated afterwards reads, from those
   layers, only the visual tokens that survived the whole prefill, as in the authors' code (which rebuilds the cache
   of the layers between its first and last pruning layer from the final indices). The paper describes the decode
   stage as pruning the visual cache entries the generated tokens stop attending to; ``decode=True`` adds that as
   a decode-time stage (DyCoke's selection, :mod:`tokpress.policies.inner.dycoke`, via ``decode_stage``): at every
   decode step the layers above the last filter see only the visual tokens the new token attends to most. It is
   off by default because the authors' released code does not run it.

Layers: the authors filter with the attention of layers 2, 6, 10 and 14 of LLaMA's 32 and prune those layers'
output, which is tokpress's stages at K = 3, 7, 11, 15 (a stage at K reads layer K - 1). Other depths scale the
score layers, ``round(l L / 32)`` (halves up); ``inner_layer`` moves the whole schedule, ``layers=(...)`` names the
stage layers K outright. Stages that meet at one layer become one.

Budget mapping: ``retain_ratio`` r is the fraction of the visual tokens entering the first filter that the last one
leaves; every filter keeps the same share ``r ** (1 / S)`` of what enters it (the authors' thresholds decide each
count from the attention itself; a promised budget needs a schedule). The ``mustdrop`` preset pairs it with the
outer stage at ``inner_ratio = 0.5`` (a tokpress choice: the authors report layer-averaged counts).

Deviations from the authors' code, with reasons:

- Counts: a per-stage budget instead of the two thresholds (see above); the thresholds still weigh ``G`` against
  ``I`` in ``s``. With marked key tokens the engine keeps them itself and the policy ranks the others, so
  ``sum_v G[v]`` runs over the unmarked tokens (the authors' over all visual tokens).
- Decode: the authors' cut also covers the first pruning layer's own cache (layer 2); tokpress's cache segments
  start at stage layers, so that one layer (the first stage's score layer) keeps every token.
- Positions: survivors keep their original positions (DESIGN.md "Positions"); the authors narrow the position ids.
- No eager attention: the text rows' attention comes from the layer's projections (``attention_queries =
  "projections"``), in float32, a few heads at a time.
- Video and batch: the authors' code handles one sample with one image; tokpress filters every visual token of a
  sample together, per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig
from tokpress.policies.inner.sparsevlm import question_attention
from tokpress.policies.inner.stage_layers import check_layers, scaled_stage_layers, stage_layers
from tokpress.registry import register_policy

#: the layers whose attention the authors' four filters read (their outputs are pruned)
AUTHOR_SCORE_LAYERS = (2, 6, 10, 14)


@dataclass(frozen=True)
class MustDropInnerConfig(PolicyConfig):
    layers: tuple[int, ...] = ()
    """Stage layers K, increasing; empty: the authors' 2, 6, 10, 14 of 32 scaled to the depth, plus one."""
    global_thr: float = 0.0012
    """Share of the text's total attention on the visual tokens below which a token's global attention is small
    (the authors' TextVQA setting)."""
    individual_thr: float = 0.001
    """Attention below which a token's largest single-row attention is small (the authors' TextVQA setting)."""
    decode: bool = False
    """False (the authors' released form): no decode-time selection. True: also run DyCoke's decode-time selection
    after the prefill — at every decode step, layers from ``decode_layer`` on attend only to the cached visual tokens
    the new token attends to most, one more step of the filters' schedule (the share each filter keeps); the
    selection is renewed when the new token's attention drifts, and the key set always stays visible."""
    decode_layer: int | None = None
    """Layer of that decode-time stage (it reads the layer below); default: one above the last prefill stage."""

    def validate(self) -> None:
        object.__setattr__(self, "layers", check_layers(self.layers, "(3, 7, 11, 15)"))
        self.check(isinstance(self.decode, bool), f"decode must be True or False, got {self.decode!r}")
        layer = self.decode_layer
        self.check(
            layer is None or (isinstance(layer, int) and not isinstance(layer, bool) and layer >= 1),
            f"decode_layer must be None or an int >= 1, got {layer!r}",
        )
        for name in ("global_thr", "individual_thr"):
            value = getattr(self, name)
            self.check(
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                f"{name} must be a number > 0, got {value!r}",
            )


def scaled_layers(num_layers: int) -> list[int]:
    """The authors' stage layers on a ``num_layers`` decoder: ``round(l L / 32) + 1`` for ``l`` = 2, 6, 10, 14."""
    return scaled_stage_layers(AUTHOR_SCORE_LAYERS, num_layers)


def dual_attention_scores(attention: torch.Tensor, global_thr: float, individual_thr: float) -> torch.Tensor:
    """``[n]`` float32 ``max(G / (global_thr * sum G), I / individual_thr)`` from the text rows' attention
    ``[q, n]`` to the visual tokens: a token is kept by the authors' thresholds exactly when its score is >= 1."""
    attention = attention.float()
    total = attention.sum(0)  # G
    peak = attention.amax(0) if attention.shape[0] else torch.zeros_like(total)  # I
    scale = float(total.sum()) * global_thr
    by_total = total / scale if scale > 0 else torch.zeros_like(total)
    return torch.maximum(by_total, peak / individual_thr)


@register_policy("mustdrop", stage="inner")
class MustDropInnerPolicy(InnerPolicy):
    config_cls = MustDropInnerConfig
    needs_attention = True
    attention_queries = "projections"
    projection_rows = "question"
    cut_kv_to_final = True

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The first stage: layer 3 of 32 (the authors' score layer 2, plus one), scaled; within ``[1, L - 1]``."""
        return max(1, min(scaled_layers(num_layers)[0], num_layers - 1))

    @classmethod
    def schedule(cls, config: PolicyConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        cfg = config if isinstance(config, MustDropInnerConfig) else MustDropInnerConfig()
        layers = sorted(set(stage_layers("mustdrop", cfg.layers, AUTHOR_SCORE_LAYERS, num_layers, layer)))
        step = ratio ** (1.0 / len(layers))
        return [(k, step) for k in layers]

    @classmethod
    def decode_stage(
        cls, config: PolicyConfig, num_layers: int, schedule: list[tuple[int, float]]
    ) -> tuple[str, int, float, dict] | None:
        """With ``decode=True``: DyCoke's decode-time selection one layer above the last filter (or at
        ``decode_layer``), keeping the filters' per-stage share of the cached visual tokens visible."""
        if not isinstance(config, MustDropInnerConfig) or not config.decode:
            return None
        last_layer, step = schedule[-1]
        layer = config.decode_layer if config.decode_layer is not None else last_layer + 1
        return "dycoke", layer, step, {}

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        p = tokens.projections
        if p is None:
            raise InputError(
                "inner policy 'mustdrop' needs InnerTokens.projections (the score layer's queries and keys); "
                "the engine hands them to policies with attention_queries='projections'"
            )
        n = tokens.hidden.shape[0]
        if budget >= n:
            return Plan(torch.arange(n, device=tokens.hidden.device))
        probs, _ = question_attention(p, n, relation_too=False)
        scores = dual_attention_scores(probs, self.config.global_thr, self.config.individual_thr)
        return Plan(topk_sorted(scores.to(tokens.hidden.device), budget))
