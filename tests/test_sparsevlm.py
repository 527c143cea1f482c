"""SparseVLM: schedule, raters, scores and recycling on crafted projections; loop re-statements of the authors'
rules; end to end on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

import tokpress
import tokpress.policies.inner.sparsevlm as sv  # registers the policy (one import path: no double registration)
from conftest import batch_inputs, sample_inputs
from tokpress.config import budget
from tokpress.errors import ConfigError, InputError
from tokpress.eval.tiny import families as tiny
from tokpress.policies.base import InnerTokens, Projections
from tokpress.policies.inner.sparsevlm import SparseVLMConfig, SparseVLMPolicy
from tokpress.registry import get_policy

E4, E2 = math.exp(4), math.exp(2)


def schedule(num_layers: int, ratio: float, layer: int | None = None, **options):
    layer = SparseVLMPolicy.default_layer(num_layers) if layer is None else layer
    return SparseVLMPolicy.schedule(SparseVLMConfig(**options), num_layers, layer, ratio)


def counts(steps, n: int) -> list[int]:
    out = []
    for _, ratio in steps:
        n = budget(ratio, n)
        out.append(n)
    return out


def onehot(rows: list[list[float]], question: list[bool], candidates: list[int], valid=None) -> Projections:
    """Projections whose attention logits are ``rows`` exactly: one head, one-hot keys, scale 1."""
    s = len(rows[0])
    return Projections(
        queries=torch.tensor(rows, dtype=torch.float32)[:, None, :],
        query_index=torch.arange(len(rows)),
        question=torch.tensor(question),
        keys=torch.eye(s)[None],
        key_valid=torch.ones(s, dtype=torch.bool) if valid is None else torch.tensor(valid),
        candidates=torch.tensor(candidates),
        scaling=1.0,
    )


def policy(**options) -> SparseVLMPolicy:
    return SparseVLMPolicy(SparseVLMConfig(**options))


def inner(hidden: torch.Tensor, projections: Projections, sizes=None) -> InnerTokens:
    n = hidden.shape[0]
    return InnerTokens(hidden, torch.arange(n), None, 3, sizes=sizes, projections=projections)


def scored(logits: list[float]) -> Projections:
    """One text row (the sole rater) after ``n`` candidates whose logits are ``logits``: probs ∝ exp(logits)."""
    n = len(logits)
    row = [0.0] + list(logits) + [0.0]
    rows = [[0.0] * (n + 2) for _ in range(n + 1)] + [row]
    return onehot(rows, [False] * (n + 1) + [True], list(range(1, n + 1)))


# ---- registration, layers, schedule ------------------------------------------------------------------------------
def test_registered_as_projection_policy():
    assert get_policy("inner", "sparsevlm") is SparseVLMPolicy
    assert SparseVLMPolicy.needs_attention and SparseVLMPolicy.attention_queries == "projections"


@pytest.mark.parametrize(
    ("num_layers", "layers"), [(32, [3, 7, 16]), (28, [3, 6, 14]), (64, [5, 13, 31]), (4, [1, 2, 3]), (2, [1, 1, 2])]
)
def test_layers_scale_the_authors_score_layers(num_layers, layers):
    # authors: attention of layers 2, 6, 15 of 32 prunes their output -> stages K = 3, 7, 16; round(l L / 32) + 1
    assert sv.scaled_layers(num_layers) == layers
    assert SparseVLMPolicy.default_layer(num_layers) == min(layers[0], num_layers - 1)


@pytest.mark.parametrize(
    ("tokens", "kept"), [(110, [300, 200, 110]), (36, [303, 110, 36]), (26, [238, 48, 26]), (17, [66, 30, 17])]
)
def test_schedule_reproduces_every_author_preset(tokens, kept):
    steps = schedule(32, tokens / 576)
    assert [k for k, _ in steps] == [3, 7, 16]
    assert counts(steps, 576) == kept


def test_schedule_interpolates_between_presets_and_ends_at_the_ratio():
    # halfway between the "128" (303/110/36) and "192" (300/200/110) presets: the stage-wise midpoints
    steps = schedule(32, 73 / 576)
    fractions = [steps[0][1], steps[0][1] * steps[1][1], steps[0][1] * steps[1][1] * steps[2][1]]
    assert fractions == pytest.approx([301.5 / 576, 155 / 576, 73 / 576])
    for ratio in (0.01, 0.1, 0.25, 0.5, 0.9):
        steps = schedule(32, ratio)
        assert math.prod(r for _, r in steps) == pytest.approx(ratio)
        assert all(0 < r <= 1 for _, r in steps)
    # towards 1 the presets meet (1, 1, 1): ratio 1 keeps everything at every stage
    assert schedule(32, 1.0) == [(3, 1.0), (7, 1.0), (16, 1.0)]


def test_schedule_on_shallow_decoders_and_moved_layers():
    assert [k for k, _ in schedule(4, 0.25)] == [1, 2, 3]
    # 2 layers: all three stages meet at layer 1, which leaves what the last would: the ratio itself
    assert schedule(2, 0.25) == [(1, 0.25)]
    # inner_layer moves the schedule; the third stage (4) clamps onto layer 3 and the two merge there
    moved = schedule(4, 0.25, layer=2)
    assert [k for k, _ in moved] == [2, 3]
    assert moved[0][1] == pytest.approx(schedule(4, 0.25)[0][1]) and math.prod(r for _, r in moved) == pytest.approx(
        0.25
    )
    assert [k for k, _ in schedule(32, 0.2, layer=5)] == [5, 9, 18]


def test_explicit_layers_and_their_errors():
    assert [k for k, _ in schedule(32, 0.2, layers=(2, 6, 15))] == [2, 6, 15]
    two = schedule(32, 0.25, layers=[4, 12])  # not three stages: geometric
    assert two == [(4, pytest.approx(0.5)), (12, pytest.approx(0.5))]
    with pytest.raises(ConfigError, match="smaller layers"):
        schedule(4, 0.25, layers=(1, 4))
    for bad in [(3, 3), (5, 2), (0, 2), ("a",), 3]:
        with pytest.raises(ConfigError, match="layers must be increasing"):
            SparseVLMConfig(layers=bad)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("raters", "best", "raters must be one of"),
        ("recycle", 1, "recycle must be True or False"),
        ("recycle_ratio", 1.5, "recycle_ratio must be"),
        ("cluster_every", 1, "cluster_every must be an int >= 2"),
        ("recycle_weights", "mean", "recycle_weights must be one of"),
    ],
)
def test_bad_options_name_the_fix(option, value, match):
    with pytest.raises(ConfigError, match=match):
        SparseVLMConfig(**{option: value})


def test_apply_refuses_bad_options_before_touching_the_model(get_model):
    model = get_model("qwen2_5_vl")
    with pytest.raises(ConfigError, match="raters must be one of"):
        tokpress.apply(model, inner="sparsevlm", retain_ratio=0.25, raters="nope")
    assert getattr(model, "tokpress", None) is None


# ---- raters and scores -------------------------------------------------------------------------------------------
# keys: 0 = system, 1..4 = visual candidates, 5..7 = text; row t holds its logits over keys 0..7
RATER_ROWS = [[0.0] * 8 for _ in range(5)] + [
    [0, 4, 0, 2, 0, 0, 0, 0],  # row 5: strong on the visual tokens -> the rater
    [0, 0, 0, 0, 1, 0, 0, 0],  # rows 6, 7: mild preference for candidate 3
    [0, 0, 0, 0, 1, 0, 0, 0],
]
QUESTION = [False] * 5 + [True] * 3
CANDIDATES = [1, 2, 3, 4]


def test_relation_raters_and_their_scores():
    p = onehot(RATER_ROWS, QUESTION, CANDIDATES)
    scores, raters = sv.rater_scores(p, 4)
    # relation per candidate: softmax over rows 5..7 of (4,0,0) (0,0,0) (2,0,0) (0,1,1); row 5 averages
    # (e^4/(e^4+2) + 1/3 + e^2/(e^2+2) + 1/(1+2e)) / 4 = 0.56 > 1/3, rows 6, 7 0.22 < 1/3
    assert raters.tolist() == [True, False, False]
    # row 5 sees keys 0..5 (causal): softmax of (0, 4, 0, 2, 0, 0) at the candidates
    z = 4 + E4 + E2
    torch.testing.assert_close(scores, torch.tensor([E4, 1, E2, 1]) / z)
    assert policy(recycle=False).plan(inner(torch.randn(4, 8), p), 2).keep.tolist() == [0, 2]


def test_all_raters_let_the_other_rows_pull_in_their_token():
    p = onehot(RATER_ROWS, QUESTION, CANDIDATES)
    scores, raters = sv.rater_scores(p, 4, "all")
    assert raters.all()
    # rows 6, 7 put e/(6+e) and e/(7+e) on candidate 3: it overtakes candidate 2 (0.202 vs 0.110)
    assert policy(recycle=False, raters="all").plan(inner(torch.randn(4, 8), p), 2).keep.tolist() == [0, 3]
    row5 = torch.tensor([E4, 1, E2, 1]) / (4 + E4 + E2)
    row6 = torch.tensor([1, 1, 1, math.e]) / (6 + math.e)
    row7 = torch.tensor([1, 1, 1, math.e]) / (7 + math.e)
    torch.testing.assert_close(scores, (row5 + row6 + row7) / 3)


def test_attention_rule_ignores_a_row_whose_mass_sinks_into_text():
    # row 7 has the largest logits on every visual token (relation rater) but attends mostly to key 0 (sink)
    rows = [r[:] for r in RATER_ROWS]
    rows[7] = [12, 1.5, 1.5, 1.5, 1.5, 0, 0, 0]
    p = onehot(rows, QUESTION, CANDIDATES)
    assert sv.rater_scores(p, 4, "relation")[1].tolist() == [True, False, True]
    # attention mass on the visual tokens: row 5 0.97, row 6 (3 + e) / (6 + e) = 0.66, row 7 ~1e-4 (e^12 on key 0);
    # their mean 0.54 lets row 6 in and keeps row 7 out
    assert sv.rater_scores(p, 4, "attention")[1].tolist() == [True, True, False]


def test_one_text_row_or_none_falls_back_to_every_row_or_the_last_token():
    rows = [[0.0] * 6 for _ in range(6)]
    rows[5] = [0, 1, 3, 2, 0, 0]
    one = onehot(rows, [False] * 5 + [True], [1, 2, 3, 4])
    # one row: its relation equals the mean, so no row is above it -> all (one) rows rate
    assert sv.rater_scores(one, 4)[1].tolist() == [True]
    none = onehot(rows, [False] * 6, [1, 2, 3, 4])
    torch.testing.assert_close(sv.rater_scores(none, 4)[0], sv.rater_scores(one, 4)[0])


def test_padding_keys_and_causality_are_masked():
    rows = [[0.0] * 7 for _ in range(7)]
    rows[6] = [50, 0, 1, 2, 0, 0, 0]  # key 0 is padding: its huge logit must not count
    p = onehot(rows, [False] * 6 + [True], [1, 2, 3], valid=[False] + [True] * 6)
    z = 1 + math.e + E2 + 3  # keys 1..6 (key 0 masked)
    torch.testing.assert_close(sv.rater_scores(p, 3)[0], torch.tensor([1, math.e, E2]) / z)


def loop_scores(p: Projections, rule: str) -> tuple[list[float], list[bool]]:
    """The authors' rater rule and scores (``attn_postprocess_topk``) in plain loops, on the layer's logits."""
    heads, kv, s = p.queries.shape[1], p.keys.shape[0], p.keys.shape[1]
    rows = [i for i in range(p.queries.shape[0]) if bool(p.question[i])]
    cands = p.candidates.tolist()
    logit = {}
    probs = {}
    for h in range(heads):
        key = p.keys[h // (heads // kv)].double()
        for t in rows:
            seen = [j for j in range(s) if bool(p.key_valid[j]) and j <= int(p.query_index[t])]
            vals = {j: float(p.queries[t, h].double() @ key[j]) * p.scaling for j in seen}
            top = max(vals.values())
            total = sum(math.exp(v - top) for v in vals.values())
            for v in cands:
                logit[h, t, v] = vals[v]
                probs[h, t, v] = math.exp(vals[v] - top) / total
    attn = {(t, v): sum(probs[h, t, v] for h in range(heads)) / heads for t in rows for v in cands}
    if rule == "relation":  # per visual token a softmax over the text rows, then the mean over visual tokens
        rel = {t: 0.0 for t in rows}
        for h in range(heads):
            for v in cands:
                top = max(logit[h, t, v] for t in rows)
                total = sum(math.exp(logit[h, t, v] - top) for t in rows)
                for t in rows:
                    rel[t] += math.exp(logit[h, t, v] - top) / total / heads / len(cands)
        value = [rel[t] for t in rows]
    else:
        value = [sum(attn[t, v] for v in cands) for t in rows]
    mean = sum(value) / len(value)
    raters = [x > mean for x in value]
    if not any(raters):
        raters = [True] * len(rows)
    picked = [t for t, r in zip(rows, raters) if r]
    return [sum(attn[t, v] for t in picked) / len(picked) for v in cands], raters


@pytest.mark.parametrize("rule", ["relation", "attention"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_scores_match_a_loop_restatement(rule, seed, monkeypatch):
    monkeypatch.setattr(sv, "CHUNK_ELEMENTS", 40)  # force several head chunks
    gen = torch.Generator().manual_seed(seed)
    s, heads, kv, d = 14, 4, 2, 8
    question = torch.zeros(s, dtype=torch.bool)
    question[9:] = True
    p = Projections(
        queries=torch.randn(s, heads, d, generator=gen) * 2,
        query_index=torch.arange(s),
        question=question,
        keys=torch.randn(kv, s, d, generator=gen),
        key_valid=torch.tensor([False, False] + [True] * (s - 2)),  # left padding
        candidates=torch.arange(3, 9),
        scaling=d**-0.5,
    )
    scores, raters = sv.rater_scores(p, 6, rule)
    want_scores, want_raters = loop_scores(p, rule)
    assert raters.tolist() == want_raters
    torch.testing.assert_close(scores.double(), torch.tensor(want_scores, dtype=torch.float64), rtol=1e-5, atol=1e-7)


def test_missing_projections_is_an_input_error():
    with pytest.raises(InputError, match="projections"):
        policy().plan(InnerTokens(torch.randn(4, 8), torch.arange(4), None, 3), 2)


# ---- recycling ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "keep", "expected"),
    [
        (576, 300, (9, 86)),  # p = 285 -> r = int(85.5) + 1 = 86 -> m = 9 (and 9 is a fixed point)
        (300, 200, (4, 32)),  # p = 104 -> r = 32 -> m = 4
        (12, 5, (1, 3)),  # p = 8 -> r = 3 -> m = 1
        (40, 10, (2, 10)),  # p = 32 -> r = 10 -> m = 2
        (10, 1, (0, 0)),  # one token kept: nothing to recycle into
        (10, 10, (0, 0)),
        (100, 2, (1, 30)),  # m would be 4, capped at budget - 1
    ],
)
def test_recycle_counts_follow_the_authors(n, keep, expected):
    assert sv.recycle_counts(n, keep, 0.3, 10) == expected


def test_one_cluster_becomes_the_size_weighted_mean_of_the_best_pruned_tokens():
    # 12 tokens, budget 5: m = 1, r = 3 -> keep the top 4 by score + one token for the 3 best pruned ones
    logits = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2]
    order = [3, 7, 0, 11, 5, 1, 9, 2, 10, 4, 8, 6]  # token order[i] gets logits[i]
    ranked = [0.0] * 12
    for i, tok in enumerate(order):
        ranked[tok] = float(logits[i])
    hidden = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([1.0, 2, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1])
    plan = policy().plan(inner(hidden, scored(ranked), sizes), 5)
    top, pool = [3, 7, 0, 11], [1, 5, 9]  # the 4 best; the 3 best of the rest (order[4:7] = 5, 1, 9)
    # one cluster, k = 1: every density is 1, so the lowest index is the densest and the peak: token 1
    assert plan.keep.tolist() == sorted(top + [1])
    at = plan.keep.tolist().index(1)
    w = sizes[pool]
    torch.testing.assert_close(plan.features[at], (w[:, None] * hidden[pool]).sum(0) / w.sum())
    assert plan.sizes[at] == 2 + 3 + 1
    others = [i for i in range(5) if i != at]
    assert torch.equal(plan.features[others], hidden[plan.keep[others]])  # kept tokens pass through exactly
    assert plan.sizes[others].tolist() == sizes[plan.keep[others]].tolist()


def test_score_weights_weight_members_by_score_times_size():
    hidden = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    sizes = torch.tensor([1.0, 2, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1])
    scores = torch.tensor([0.2, 0.05, 0.01, 0.3, 0.0, 0.04, 0.0, 0.25, 0.0, 0.03, 0.0, 0.12])
    plan = sv.recycle_plan(hidden, scores, sizes, 5, 1, 3, by_score=True)
    pool = [1, 5, 9]  # pruned by score: 1 (0.05), 5 (0.04), 9 (0.03) are the best three
    assert plan.keep.tolist() == [0, 1, 3, 7, 11]
    w = scores[pool] * sizes[pool]
    torch.testing.assert_close(plan.features[1], (w[:, None] * hidden[pool]).sum(0) / w.sum())
    assert plan.sizes.tolist() == [1, 6, 1, 1, 1]


def test_two_clusters_merge_their_own_members():
    # 40 tokens, budget 10: m = 2 recycled tokens, r = 10 pooled; the pool forms two far-apart groups of five
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(40, 8, generator=gen) * 0.1
    logits = torch.zeros(40)
    logits[:8] = 10 + torch.arange(8.0)  # tokens 0..7 are the top 8 by score
    pool = list(range(20, 30))
    logits[pool] = 5.0 + torch.arange(10.0) * 0.01
    groups = [pool[:5], pool[5:]]
    hidden[groups[0]] += 10 * torch.eye(8)[0]
    hidden[groups[1]] -= 10 * torch.eye(8)[0]
    plan = policy().plan(inner(hidden, scored(logits.tolist())), 10)
    keep = plan.keep.tolist()
    assert keep[:8] == list(range(8)) and len(keep) == 10
    recycled = keep[8:]
    assert recycled[0] in groups[0] and recycled[1] in groups[1]
    for at, members in zip((8, 9), groups):
        torch.testing.assert_close(plan.features[at], hidden[members].mean(0))
        assert plan.sizes[at] == 5


def loop_recycle(hidden: torch.Tensor, scores: torch.Tensor, budget: int, m: int, r: int):
    """The authors' recycling (top-30 % of the pruned by score, ``cluster_and_merge``) in plain loops."""
    n = hidden.shape[0]
    ranked = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    top, pool = ranked[: budget - m], sorted(ranked[budget - m : budget - m + r])
    x = hidden[pool].double()
    c = x.shape[1]
    dist = [[float((x[i] - x[j]).norm()) / math.sqrt(c) for j in range(r)] for i in range(r)]
    density = [math.exp(-sum(d * d for d in sorted(row)[:m]) / m) for row in dist]
    dmax = max(max(row) for row in dist)
    score = []
    for i in range(r):
        denser = [dist[i][j] for j in range(r) if (density[j], -j) > (density[i], -i)]
        score.append((min(denser) if denser else dmax) * density[i])
    centers = sorted(sorted(range(r), key=lambda i: (-score[i], i))[:m])
    assign = [min(range(m), key=lambda k: (dist[i][centers[k]], k)) for i in range(r)]
    for k, center in enumerate(centers):  # a center joins itself
        assign[center] = k
    merged = {pool[center]: x[[i for i in range(r) if assign[i] == k]].mean(0) for k, center in enumerate(centers)}
    return sorted(top + list(merged)), merged


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_recycling_matches_a_loop_restatement(seed):
    gen = torch.Generator().manual_seed(seed)
    n, keep = 70, 20
    hidden = torch.randn(n, 6, generator=gen)
    scores = torch.rand(n, generator=gen)
    m, r = sv.recycle_counts(n, keep, 0.3, 10)
    assert (m, r) == (2, 16)  # p = 52 -> r = 16 -> m = 2
    plan = sv.recycle_plan(hidden, scores, torch.ones(n), keep, m, r)
    want_keep, merged = loop_recycle(hidden, scores, keep, m, r)
    assert plan.keep.tolist() == want_keep
    for idx, feature in merged.items():
        torch.testing.assert_close(plan.features[want_keep.index(idx)].double(), feature, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("n", "keep"), [(576, 300), (300, 200), (200, 110), (97, 13), (12, 2), (12, 1), (5, 4)])
@pytest.mark.parametrize("recycle", [True, False])
def test_budget_is_exact(n, keep, recycle):
    gen = torch.Generator().manual_seed(n + keep)
    hidden = torch.randn(n, 16, generator=gen)
    sizes = torch.randint(1, 4, (n,), generator=gen).float()
    logits = torch.randn(n, generator=gen)
    plan = policy(recycle=recycle).plan(inner(hidden, scored(logits.tolist()), sizes), keep)
    assert plan.keep.numel() == keep and plan.keep.dtype == torch.long
    assert bool((plan.keep[1:] > plan.keep[:-1]).all()) and 0 <= int(plan.keep[0]) and int(plan.keep[-1]) < n
    m, r = sv.recycle_counts(n, keep, 0.3, 10) if recycle else (0, 0)
    order = torch.sort(logits, descending=True).indices
    top, pool = order[: keep - m], order[keep - m : keep - m + r]
    assert set(top.tolist()) <= set(plan.keep.tolist())
    if m == 0:
        assert plan.features is None and plan.sizes is None
        return
    assert plan.features.shape == (keep, 16)
    assert set(plan.keep.tolist()) - set(top.tolist()) <= set(pool.tolist())  # recycled tokens sit in the pool
    # the kept tokens stand for themselves, the m recycled ones for the whole pool
    assert float(plan.sizes.sum()) == pytest.approx(float(sizes[top].sum() + sizes[pool].sum()))


def test_ratio_one_keeps_everything_without_features():
    plan = policy().plan(inner(torch.randn(6, 4), scored([0.0] * 6)), 6)
    assert plan.keep.tolist() == list(range(6)) and plan.features is None


# ---- end to end --------------------------------------------------------------------------------------------------
def run(model, inputs, **kwargs):
    tokpress.apply(model, inner="sparsevlm", retain_ratio=0.25, **kwargs)
    model.tokpress.record_plans = True
    model(**inputs)
    last = model.tokpress.last
    stages = len(model.tokpress.config.inner)
    return [last.kept[f"inner{s}"] for s in range(stages)], [last.plans[f"inner{s}"] for s in range(stages)]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_end_to_end_three_stages_sdpa_equals_eager_and_batch_equals_alone(get_model, family):
    inputs = batch_inputs(family)
    kept, plans = run(get_model(family, "sdpa"), inputs)
    assert len(kept) == 3  # layers 1, 2, 3 of the 4-layer tiny decoder
    eager, _ = run(get_model(family, "eager"), inputs)
    assert eager == kept
    assert any(p.features is not None for stage in plans for p in stage)  # recycling happened
    for b in range(2):
        alone, _ = run(get_model(family, "sdpa"), sample_inputs(inputs, family, b))
        assert [stage[0] for stage in alone] == [stage[b] for stage in kept]
        n = len(kept[0][b])  # every stage keeps its budget of the tokens entering it
        for stage in kept[1:]:
            assert len(stage[b]) < n
            n = len(stage[b])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_generate_twice_gives_the_same_tokens(get_model, family):
    model = get_model(family, "sdpa")
    inputs = batch_inputs(family)
    tokpress.apply(model, inner="sparsevlm", retain_ratio=0.25)
    gen = dict(max_new_tokens=4, do_sample=False, suppress_tokens=[tiny.IMAGE_ID, tiny.VIDEO_ID])
    first = model.generate(**inputs, **gen)
    second = model.generate(**inputs, **gen)
    assert torch.equal(first, second)
    assert first.shape == (2, inputs["input_ids"].shape[1] + 4)
