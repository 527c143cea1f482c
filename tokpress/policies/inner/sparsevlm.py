"""``sparsevlm`` — SparseVLM (Zhang et al., ICML 2025, "SparseVLM: Visual Token Sparsification for Efficient
Vision-Language Model Inference", arXiv 2410.04417; code ``Gumpest/SparseVLMs``, v1.0: ``score.py``, ``utils.py``
and ``modelling_sparse_llama.py``).

Algorithm: at three decoder layers the visual tokens are rated by the text and the least relevant are removed,
the best of the removed ones being recycled into a few merged tokens. At each stage:

1. *Raters.* The text after the video (the question and the chat template's tail) is split into raters and the
   rest: for every visual token ``v`` a softmax over the text tokens ``t`` of the affinity ``a[t, v]``, averaged
   over ``v``, gives each text token a relevance ``R[t]``; the raters are the ``t`` with ``R[t] > mean(R)`` (all the
   text when none is above the mean).
2. *Scores.* The layer's attention (softmax over every key the query may see, mean over heads) from the raters to
   each visual token, averaged over the raters.
3. *Keep.* The stage's budget ``k`` of its ``n`` tokens: the top ``k - m`` by score plus ``m`` recycled tokens.
4. *Recycle.* Of the ``p = n - k + m`` tokens the scores prune, the ``r = int(0.3 p) + 1`` best-scoring form a
   pool; density-peaks clustering (DPC-kNN, ``k = m`` neighbours, :func:`tokpress.ops.dpc_knn`) groups the pool
   around ``m = r // 10 + 1`` centers, and each cluster becomes one token: the mean of its members' hidden states,
   placed at its density-peak center (the member whose index and position it takes). ``Plan.sizes`` is the number
   of original tokens a recycled token stands for (the summed sizes of its members); the other ``p - r`` pruned
   tokens are gone. ``m`` is the smallest fixed point of ``m = f(n - k + m)`` (at most ``k - 1``).

Layers: the authors score with the attention of layers 2, 6 and 15 of LLaMA's 32 and prune those layers' output,
which is tokpress's stages at K = 3, 7, 16 (a stage at K reads layer K - 1). Other depths scale the score layers,
``round(l L / 32)`` (halves up), so K = 3, 6, 14 on 28 layers and 1, 2, 3 on 4; ``inner_layer`` moves the whole
schedule (the first stage to it, the others by the same offset), ``layers=(...)`` names the stage layers K
outright. Layers past the last decoder layer are clamped to it; stages that meet at one layer become one stage
that leaves what the later of them would.

Budget mapping: ``retain_ratio`` r is the fraction of the visual tokens entering the first stage that the last one
leaves (recycled tokens included, as PyramidDrop's r). The earlier stages follow the authors' presets
(``RETAIN_TOKN``, of 576 tokens after the three stages): 64 -> 66/30/17, 96 -> 238/48/26, 128 -> 303/110/36,
192 -> 300/200/110. Each preset is the point ``r = last / 576`` with stage fractions ``(first, second, last) / 576``;
between presets (and towards (0, 0, 0) at r = 0 and (1, 1, 1) at r = 1) each stage's fraction is interpolated
linearly in r, and each stage's ratio is its fraction over the previous one. ``r = 110 / 576`` therefore keeps
exactly 300, 200 and 110 of 576, the authors' "192" setting (their label is the layer-averaged count). With
``layers`` of another length than three, the fractions are geometric (``r ** (i / S)``).

Deviations from the authors' code, with reasons:

- Rater affinity: the authors take ``a[t, v] = h_v . h_t`` on the decoder's *input embeddings*, once, and reuse
  the raters at all stages. tokpress policies see no text hidden states, so ``a[t, v]`` is the score layer's own
  attention logit (rotated query of ``t`` . key of ``v`` times the softmax scale; the softmax over ``t`` per head,
  then the mean over heads and ``v``), recomputed at every stage. ``raters="attention"`` instead takes the text
  tokens whose attention mass on the visual tokens is above the mean, ``raters="all"`` every text token.
- No eager attention: the question rows' attention is computed from the projections the layer computes anyway
  (``attention_queries = "projections"``), in float32, a few heads at a time (O(q S) memory).
- Budget: the authors keep their preset count *plus* the recycled tokens (309 instead of 300 at the first stage of
  "192"); tokpress keeps exactly the stage's budget, recycled tokens included.
- Recycled tokens keep their center's original position; the authors put them after the kept visual tokens and
  renumber positions contiguously (tokpress keeps original positions, DESIGN.md "Positions"). LightCompress's port
  also indexes a recycled token by its cluster center.
- Merge weights: the authors' ``cluster_and_merge`` averages with unit weights; tokpress weights by the number of
  original tokens each member stands for (the same when nothing was merged before). ``recycle_weights="score"``
  weights members by ``score * size`` instead.
- Ties: DPC-kNN breaks density ties by index instead of adding ``rand * 1e-6``; score ties keep the lower index.
- Not reproduced: the paper's rank-based adaptive ratio (the released code uses the preset table instead) and
  v2.0 (SparseVLM+, ``USE_VERSION=2_0``: RoPE-bias correction and head selection); ``recycle=False`` prunes only.
- Batch and video: the authors' code handles one sample with one image; tokpress scores every visual token of every
  video of a sample together, per sample. With no text after the video the last token is the only rater.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import dpc_knn, group_mean, group_size, topk_sorted
from tokpress.policies.base import InnerPolicy, InnerTokens, Plan, PolicyConfig, Projections
from tokpress.policies.inner.stage_layers import check_layers, scaled_stage_layers, stage_layers
from tokpress.registry import register_policy

#: the layers whose attention scores the authors' three stages (their outputs are pruned)
AUTHOR_SCORE_LAYERS = (2, 6, 15)
AUTHOR_TOKENS = 576
#: the authors' presets (``score.py``, v1.0): visual tokens of 576 left after each stage, RETAIN_TOKN 64/96/128/192
AUTHOR_PRESETS = ((66, 30, 17), (238, 48, 26), (303, 110, 36), (300, 200, 110))
RATERS = ("relation", "attention", "all")
WEIGHTS = ("size", "score")
#: elements of one head chunk's ``[h, q, S]`` logits (64 MiB in float32)
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class SparseVLMConfig(PolicyConfig):
    layers: tuple[int, ...] = ()
    """Stage layers K, increasing (a stage at K reads layer K - 1's attention); empty: the authors' 2, 6, 15 of 32
    scaled to the depth (K = 3, 7, 16 on 32 layers) and moved by ``inner_layer``."""
    raters: str = "relation"
    """Which text tokens rate: ``"relation"`` (the authors' rule on the layer's logits), ``"attention"`` (attention
    mass on the visual tokens above the mean) or ``"all"``."""
    recycle: bool = True
    """Recycle the best pruned tokens into merged tokens (the authors' default); False prunes only."""
    recycle_ratio: float = 0.3
    """Share of a stage's pruned tokens that enter the recycling pool (``int(ratio * p) + 1``; the authors' 0.3)."""
    cluster_every: int = 10
    """One merged token per this many pooled tokens (``r // cluster_every + 1`` clusters; the authors' 10)."""
    recycle_weights: str = "size"
    """Weights of a cluster's mean: ``"size"`` (original tokens per member; the authors' plain mean) or
    ``"score"`` (``score * size``)."""

    def validate(self) -> None:
        object.__setattr__(self, "layers", check_layers(self.layers, "(3, 7, 16)"))
        self.check(self.raters in RATERS, f"raters must be one of {RATERS}, got {self.raters!r}")
        self.check(isinstance(self.recycle, bool), f"recycle must be True or False, got {self.recycle!r}")
        ratio = self.recycle_ratio
        self.check(
            isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 <= ratio <= 1,
            f"recycle_ratio must be a number in [0, 1] (the authors use 0.3), got {ratio!r}",
        )
        every = self.cluster_every
        self.check(
            isinstance(every, int) and not isinstance(every, bool) and every >= 2,
            f"cluster_every must be an int >= 2 (the authors use 10), got {every!r}",
        )
        self.check(
            self.recycle_weights in WEIGHTS, f"recycle_weights must be one of {WEIGHTS}, got {self.recycle_weights!r}"
        )


def scaled_layers(num_layers: int) -> list[int]:
    """The authors' stage layers on a ``num_layers`` decoder: ``round(l L / 32) + 1`` for ``l`` = 2, 6, 15."""
    return scaled_stage_layers(AUTHOR_SCORE_LAYERS, num_layers)


def stage_fractions(ratio: float, stages: int = 3) -> list[float]:
    """Fraction of the original visual tokens left after each stage; the last is ``ratio``.

    Three stages: piecewise-linear in ``ratio`` through the authors' presets (and 0 at 0, 1 at 1); otherwise
    geometric, ``ratio ** (i / stages)``.
    """
    if stages != 3:
        return [ratio ** (i / stages) for i in range(1, stages)] + [ratio]
    anchors = [(0.0, (0.0, 0.0, 0.0))]
    anchors += [(c[-1] / AUTHOR_TOKENS, tuple(x / AUTHOR_TOKENS for x in c)) for c in AUTHOR_PRESETS]
    anchors += [(1.0, (1.0, 1.0, 1.0))]
    for (r0, c0), (r1, c1) in zip(anchors, anchors[1:]):
        if ratio <= r1:
            t = (ratio - r0) / (r1 - r0)
            return [(1 - t) * a + t * b for a, b in zip(c0[:-1], c1[:-1])] + [ratio]
    return [1.0, 1.0, 1.0]


def recycle_counts(n: int, budget: int, ratio: float, every: int) -> tuple[int, int]:
    """``(m, r)``: recycled tokens and pool size of a stage keeping ``budget`` of ``n`` (the authors' counts).

    ``p = n - budget + m`` tokens are pruned by score, ``r = min(p, int(ratio p) + 1)`` of them pooled and
    ``m = min(r // every + 1, budget - 1)`` recycled; ``m`` is the least fixed point (0 when nothing is pruned or
    ``budget < 2``).
    """
    if budget >= n or budget < 2:
        return 0, 0
    m = 0
    while True:  # non-decreasing from 0 and bounded by budget - 1: a few steps
        p = n - budget + m
        r = min(p, int(p * ratio) + 1)
        nxt = min(r // every + 1, budget - 1)
        if nxt == m:
            return m, r
        m = nxt


def question_attention(
    p: Projections, candidates: int, relation_too: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text rows' attention to the candidates, float32, both ``[q, n]``.

    The rows are the queries ``p.question`` marks (the last query when there are none).

    Returns:
        ``probs``: the layer's attention (softmax over every key the row may see: valid, causal), mean over heads.
        ``relation``: per head, the softmax over the rows of the logits at each candidate, mean over heads
        (``None`` without ``relation_too``).
    """
    rows = p.question.nonzero().squeeze(1)
    if rows.numel() == 0:
        rows = p.query_index.argmax().view(1)
    queries = p.queries[rows].float()  # [q, H, d]
    q, heads = queries.shape[:2]
    group = heads // p.keys.shape[0]
    size = p.keys.shape[1]
    allowed = p.key_valid[None, :] & (torch.arange(size, device=rows.device)[None, :] <= p.query_index[rows, None])
    bias = torch.zeros(q, size, device=queries.device).masked_fill(~allowed.to(queries.device), float("-inf"))
    cand = p.candidates.to(queries.device)
    probs = torch.zeros(q, candidates, device=queries.device)
    relation = torch.zeros(q, candidates, device=queries.device)
    step = max(1, CHUNK_ELEMENTS // max(1, q * size))
    for h0 in range(0, heads, step):  # a few heads at a time: memory O(q S) per head
        h = torch.arange(h0, min(heads, h0 + step), device=queries.device)
        keys = p.keys[h // group].float().to(queries.device)  # [h, S, d]
        logits = torch.einsum("qhd,hsd->hqs", queries[:, h], keys) * p.scaling + bias
        probs += logits.softmax(-1)[:, :, cand].sum(0)
        if relation_too:
            relation += logits[:, :, cand].softmax(1).sum(0)
    return probs / heads, relation / heads if relation_too else None


def select_raters(probs: torch.Tensor, relation: torch.Tensor, rule: str) -> torch.Tensor:
    """``[q]`` bool: the rater rows of :func:`question_attention`'s ``[q, n]`` outputs under ``rule``."""
    if rule == "all":
        return torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    value = relation.mean(1) if rule == "relation" else probs.sum(1)
    raters = value > value.mean()
    return raters if bool(raters.any()) else torch.ones_like(raters)


def rater_scores(p: Projections, candidates: int, rule: str = "relation") -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [n], raters [q])``: the raters' mean attention to each candidate and which text rows rated."""
    probs, relation = question_attention(p, candidates)
    raters = select_raters(probs, relation, rule)
    return probs[raters].mean(0), raters


def recycle_plan(
    hidden: torch.Tensor,
    scores: torch.Tensor,
    sizes: torch.Tensor,
    budget: int,
    m: int,
    r: int,
    by_score: bool = False,
) -> Plan:
    """Keep the top ``budget - m`` tokens by ``scores`` and ``m`` merged tokens of the ``r`` best pruned ones.

    Args:
        hidden: ``[n, D]`` the tokens' hidden states (what is clustered and averaged).
        scores: ``[n]`` float32 rater scores.
        sizes: ``[n]`` original tokens each stands for.
        by_score: weight the cluster means by ``score * size`` instead of ``size``.

    Returns:
        A plan whose ``features`` are ``[budget, D]`` float32 (kept tokens unchanged, recycled ones their cluster's
        mean) and ``sizes`` the originals each kept token stands for.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    top, pool = order[: budget - m], order[budget - m : budget - m + r].sort().values
    centers, assign, _ = dpc_knn(hidden[pool], m, k=m)
    keep = torch.cat([top, pool[centers]]).sort().values
    members = torch.cat([top, pool])
    groups = torch.searchsorted(keep, torch.cat([top, pool[centers][assign]]))
    pooled = sizes[pool].float() * (scores[pool].clamp_min(torch.finfo(torch.float32).tiny) if by_score else 1.0)
    weights = torch.cat([torch.ones(top.shape[0], device=hidden.device), pooled])  # kept: x * 1 / 1, exactly x
    features = group_mean(hidden[members], groups, budget, weights)
    return Plan(keep, features, group_size(groups, budget, sizes[members]))


@register_policy("sparsevlm", stage="inner")
class SparseVLMPolicy(InnerPolicy):
    config_cls = SparseVLMConfig
    needs_attention = True
    attention_queries = "projections"
    projection_rows = "question"

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The first stage: layer 3 of 32 (the authors' score layer 2, plus one), scaled; within ``[1, L - 1]``."""
        return max(1, min(scaled_layers(num_layers)[0], num_layers - 1))

    @classmethod
    def schedule(cls, config: PolicyConfig, num_layers: int, layer: int, ratio: float) -> list[tuple[int, float]]:
        cfg = config if isinstance(config, SparseVLMConfig) else SparseVLMConfig()
        layers = stage_layers("sparsevlm", cfg.layers, AUTHOR_SCORE_LAYERS, num_layers, layer)
        left: dict[int, float] = {}
        for k, fraction in zip(layers, stage_fractions(ratio, len(layers))):
            left[k] = fraction  # stages that meet at one layer: the later one's fraction
        out, prev = [], 1.0
        for k in sorted(left):
            out.append((k, min(1.0, left[k] / prev)))
            prev = left[k]
        return out

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        p = tokens.projections
        if p is None:
            raise InputError(
                "inner policy 'sparsevlm' needs InnerTokens.projections (the score layer's queries and keys); "
                "the engine hands them to policies with attention_queries='projections'"
            )
        n = tokens.hidden.shape[0]
        device = tokens.hidden.device
        if budget >= n:
            return Plan(torch.arange(n, device=device))
        cfg = self.config
        scores, _ = rater_scores(p, n, cfg.raters)
        scores = scores.to(device)
        m, r = recycle_counts(n, budget, cfg.recycle_ratio, cfg.cluster_every) if cfg.recycle else (0, 0)
        if m == 0:
            return Plan(topk_sorted(scores, budget))
        sizes = tokens.sizes if tokens.sizes is not None else torch.ones(n, device=device)
        return recycle_plan(tokens.hidden, scores, sizes.to(device), budget, m, r, cfg.recycle_weights == "score")
