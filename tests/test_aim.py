"""AIM: per-frame iterative bipartite merging (outer) and PageRank progressive pruning (inner)."""

from __future__ import annotations

import math

import pytest
import torch

import tokpress
import tokpress.policies.inner.aim as inner_aim
from conftest import batch_inputs
from tokpress import registry
from tokpress.config import budget
from tokpress.errors import ConfigError, InputError
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.tiny.families import make_inputs, tiny_config, tiny_model
from tokpress.policies.base import Grid, InnerTokens, Projections, VideoTokens
from tokpress.policies.inner.aim import (
    AIMInnerConfig,
    AIMInnerPolicy,
    linear_schedule,
    pagerank_importance,
)
from tokpress.policies.outer.aim import AIMOuterConfig, AIMOuterPolicy, merge_round, merge_rounds
from tokpress.registry import get_policy, register_policy

# ---- outer: merge rounds -------------------------------------------------------------------------------------------


def test_registered():
    assert get_policy("outer", "aim") is AIMOuterPolicy
    assert get_policy("inner", "aim") is AIMInnerPolicy
    assert AIMInnerPolicy.needs_attention and AIMInnerPolicy.attention_queries == "projections"


@pytest.mark.parametrize(
    ("n", "target", "rounds"),
    [
        (196, 49, [98, 49]),  # the authors' r = N/2 then N/4
        (196, 25, [98, 49, 24]),  # their commented-out r = N/8 (196 // 8 = 24)
        (196, 20, [98, 49, 24, 5]),  # halvings, then a partial round
        (196, 150, [46]),
        (3, 1, [1, 1]),  # at most floor(n / 2) per round
        (7, 7, []),
    ],
)
def test_merge_rounds_halve_until_the_target(n, target, rounds):
    assert merge_rounds(n, target) == rounds
    assert n - sum(rounds) == target


def test_merge_rounds_rejects_a_bad_target():
    with pytest.raises(ValueError, match="target"):
        merge_rounds(4, 0)


def crafted_frame() -> torch.Tensor:
    """Six 2-D tokens: A = 0, 2, 4 and B = 1, 3, 5.

    Best matches: A0 (1,0) -> B1 (3,0) cos 1; A2 (.1,1) -> B3 (0,1) cos .995; A4 (2,1) -> B1 cos .894.
    """
    return torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.1, 1.0], [0.0, 1.0], [2.0, 1.0], [-1.0, 0.0]])


def test_two_rounds_in_the_authors_layout_hand_derived():
    x = crafted_frame()[None]
    size, origin = torch.ones(1, 6), torch.arange(6)[None]
    # round 1, r = 2: A0 and A2 (the two best matches) merge; A4 stays. Layout: [A4, B1', B3', B5]
    x1, s1, o1 = merge_round(x, size, origin, 2)
    assert o1.tolist() == [[4, 1, 3, 5]]
    assert s1.tolist() == [[1, 2, 2, 1]]
    torch.testing.assert_close(x1[0], torch.tensor([[2.0, 1.0], [2.0, 0.0], [0.05, 1.0], [-1.0, 0.0]]))
    # round 2, r = 1, split over that layout: A = {4, 3}, B = {1, 5}. Token 4 (2,1) matches 1 (2,0) at .894, token 3
    # (.05,1) matches 1 at .05: token 4 merges into token 1. (In raster order A would be {1, 4} instead.)
    x2, s2, o2 = merge_round(x1, s1, o1, 1)
    assert o2.tolist() == [[3, 1, 5]]
    assert s2.tolist() == [[2, 3, 1]]
    # the authors' plain mean of (2,0) and (2,1), although (2,0) already stands for two tokens
    torch.testing.assert_close(x2[0, 1], torch.tensor([2.0, 0.5]))
    # ToMe's size-weighted mean: (2 * (2,0) + (2,1)) / 3 = the mean of the three original tokens (1,0) (3,0) (2,1)
    w2, _, _ = merge_round(x1, s1, o1, 1, size_weighted=True)
    torch.testing.assert_close(w2[0, 1], torch.tensor([2.0, 1.0 / 3.0]))


def test_merge_round_rejects_more_than_half():
    with pytest.raises(ValueError, match="floor"):
        merge_round(torch.rand(1, 5, 2), torch.ones(1, 5), torch.arange(5)[None], 3)


def authors_merge_loop(tokens: list[tuple[torch.Tensor, int]], r: int) -> list[tuple[torch.Tensor, int]]:
    """A plain-loop re-statement of the authors' round on one frame: (feature, original index) pairs in layout order.

    A = even layout positions, B = odd; each A picks its most cosine-similar B; the r A-tokens with the highest
    similarity (stable order on ties) are averaged into their B (mean of the B and everything merged into it); the
    rest of A follows in decreasing similarity, then B in order.
    """
    a, b = tokens[0::2], tokens[1::2]
    best, match = [], []
    for fa, _ in a:
        sims = [float(torch.dot(fa, fb) / (fa.norm() * fb.norm())) for fb, _ in b]
        j = max(range(len(b)), key=lambda k: (sims[k], -k))
        best.append(sims[j])
        match.append(j)
    order = sorted(range(len(a)), key=lambda i: -best[i])
    groups = [[fb] for fb, _ in b]
    for i in order[:r]:
        groups[match[i]].append(a[i][0])
    merged = [(torch.stack(g).mean(0), b[j][1]) for j, g in enumerate(groups)]
    return [a[i] for i in order[r:]] + merged


@pytest.mark.parametrize("target", [8, 5, 3, 1])
def test_rounds_match_a_loop_restatement_of_the_authors(target):
    gen = torch.Generator().manual_seed(target)
    frames = torch.randn(2, 16, 6, generator=gen, dtype=torch.float64)
    policy = AIMOuterPolicy(AIMOuterConfig())
    plan = policy.plan(VideoTokens(frames.reshape(32, 6).float(), Grid(2, 4, 4)), 2 * target)
    for f in range(2):
        tokens = [(frames[f, i], i) for i in range(16)]
        for r in merge_rounds(16, target):
            tokens = authors_merge_loop(tokens, r)
        want = sorted(tokens, key=lambda t: t[1])
        got = plan.keep[f * target : (f + 1) * target] - f * 16
        assert got.tolist() == [i for _, i in want]
        torch.testing.assert_close(
            plan.features[f * target : (f + 1) * target].double(), torch.stack([t for t, _ in want]), atol=1e-5, rtol=0
        )


# ---- outer: the policy ----------------------------------------------------------------------------------------------


def video(frames: int = 3, h: int = 2, w: int = 4, dim: int = 5, dtype=torch.float32, seed: int = 0) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(frames, h, w)
    return VideoTokens(torch.randn(grid.numel, dim, generator=gen).to(dtype), grid)


@pytest.mark.parametrize(("budget_", "shares"), [(7, [3, 2, 2]), (12, [4, 4, 4]), (2, [1, 1, 0]), (23, [8, 8, 7])])
def test_budget_split_evenly_over_frames_first_frames_get_the_rest(budget_, shares):
    v = video()
    plan = AIMOuterPolicy(AIMOuterConfig()).plan(v, budget_)
    frame = plan.keep // 8
    assert [int((frame == f).sum()) for f in range(3)] == shares
    for f in range(3):  # every kept frame's tokens stand for all 8 of its tokens; a frame with share 0 is gone
        assert float(plan.sizes[frame == f].sum()) == (8.0 if shares[f] else 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_budget_sorted_distinct_deterministic(dtype):
    v = video(frames=4, h=3, w=3, dtype=dtype)
    policy = AIMOuterPolicy(AIMOuterConfig())
    for b in (1, 3, 4, 5, 17, 18, 35):
        plan = policy.plan(v, b)
        assert plan.keep.dtype == torch.long and plan.keep.shape == (b,)
        assert bool((plan.keep[1:] > plan.keep[:-1]).all())
        assert plan.features.shape == (b, 5) and plan.features.dtype == dtype
        assert plan.sizes.shape == (b,) and float(plan.sizes.sum()) == 36.0 * min(b, 4) / 4
        assert torch.equal(policy.plan(v, b).keep, plan.keep)
    full = policy.plan(v, 36)
    assert full.keep.tolist() == list(range(36)) and full.features is None


def test_size_weighted_features_are_the_mean_of_what_each_token_stands_for():
    v = video(frames=2, h=4, w=4, dim=3, seed=1)
    plan = AIMOuterPolicy(AIMOuterConfig(size_weighted=True)).plan(v, 6)  # 16 -> 8 -> 4 -> 3 per frame
    for f in range(2):
        rows = (plan.keep // 16) == f
        total = (plan.features[rows] * plan.sizes[rows, None]).sum(0)
        torch.testing.assert_close(total, v.features[16 * f : 16 * (f + 1)].sum(0), atol=1e-5, rtol=0)
    # the authors' plain mean of two rounds does not conserve the frame's sum in general
    plain = AIMOuterPolicy(AIMOuterConfig()).plan(v, 6)
    assert torch.equal(plain.keep, plan.keep) and torch.equal(plain.sizes, plan.sizes)
    assert not torch.allclose(plain.features, plan.features)


def test_one_round_is_the_mean_of_each_group():
    v = VideoTokens(crafted_frame(), Grid(1, 2, 3))
    plan = AIMOuterPolicy(AIMOuterConfig()).plan(v, 4)  # 6 -> 4: A0 into B1, A2 into B3
    assert plan.keep.tolist() == [1, 3, 4, 5]
    assert plan.sizes.tolist() == [2, 2, 1, 1]
    torch.testing.assert_close(plan.features, torch.tensor([[2.0, 0.0], [0.05, 1.0], [2.0, 1.0], [-1.0, 0.0]]))


def test_outer_config_rejects_non_bool():
    with pytest.raises(ConfigError, match="size_weighted"):
        AIMOuterConfig(size_weighted="yes")


# ---- inner: the linear schedule -------------------------------------------------------------------------------------


def cumulative(stages):
    return [math.prod(r for _, r in stages[: i + 1]) for i in range(len(stages))]


def test_schedule_is_the_authors_on_28_layers():
    stages = AIMInnerPolicy.schedule(AIMInnerConfig(), 28, AIMInnerPolicy.default_layer(28), 0.125)
    assert [k for k, _ in stages] == list(range(15, 22))
    assert cumulative(stages) == pytest.approx([1 - (k - 14) * 0.125 for k in range(15, 22)])
    # the authors keep int(c N) of N original tokens; per-stage rounding gives the same counts here
    n, counts = 392, []
    for _, ratio in stages:
        n = budget(ratio, n)
        counts.append(n)
    assert counts == [int(392 * (1 - (k - 14) * 0.125)) for k in range(15, 22)]


@pytest.mark.parametrize(
    ("num_layers", "layer", "ratio", "layers", "keeps"),
    [
        (28, 15, 0.5, [15, 16, 17, 18], [0.875, 0.75, 0.625, 0.5]),
        (28, 15, 0.25, list(range(15, 21)), [0.875, 0.75, 0.625, 0.5, 0.375, 0.25]),
        (28, 24, 0.125, [24, 25, 26, 27], [0.78125, 0.5625, 0.34375, 0.125]),  # out of layers: steeper
        (4, 1, 0.25, [1, 2, 3], [0.75, 0.5, 0.25]),
        (4, 3, 0.1, [3], [0.1]),
        (28, 15, 1.0, [15], [1.0]),
    ],
)
def test_schedule_falls_linearly_to_the_ratio(num_layers, layer, ratio, layers, keeps):
    stages = linear_schedule(num_layers, layer, ratio)
    assert [k for k, _ in stages] == layers
    assert cumulative(stages) == pytest.approx(keeps)


@pytest.mark.parametrize("num_layers", [2, 3, 4, 16, 28, 32])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3, 0.9, 1.0])
def test_schedule_layers_valid_and_product_is_r(num_layers, ratio):
    layer = AIMInnerPolicy.default_layer(num_layers)
    stages = AIMInnerPolicy.schedule(AIMInnerConfig(step=0.2), num_layers, layer, ratio)
    layers = [k for k, _ in stages]
    assert layers == list(range(layer, layer + len(layers))) and layers[-1] <= num_layers - 1
    assert math.prod(r for _, r in stages) == pytest.approx(ratio)
    assert all(0 < r <= 1 for _, r in stages)


@pytest.mark.parametrize(("num_layers", "expected"), [(28, 15), (32, 17), (4, 3), (2, 1)])
def test_default_layer_follows_the_middle(num_layers, expected):
    assert AIMInnerPolicy.default_layer(num_layers) == expected


def test_schedule_rejects_a_layer_outside_the_decoder():
    with pytest.raises(ConfigError, match="27"):
        AIMInnerPolicy.schedule(AIMInnerConfig(), 28, 28, 0.5)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("temperature", 0), ("iterations", 0), ("iterations", 2.0), ("damping", 1.0), ("step", 0), ("query_chunk", 0)],
)
def test_inner_config_rejects_bad_values(name, bad):
    with pytest.raises(ConfigError, match=name):
        AIMInnerConfig(**{name: bad})


# ---- inner: PageRank ------------------------------------------------------------------------------------------------


def projections_for(probs: list[list[list[float]]], pad: int = 0, scaling: float = 0.5, tau: float = 0.1):
    """Projections whose ``softmax(q k^T scaling / tau)`` rows are ``probs`` (one list of rows per head, causal):
    one-hot keys, and each query the logits ``tau log p / scaling``. ``pad`` invalid keys come first."""
    s = len(probs[0])
    p = torch.tensor(probs, dtype=torch.float64)
    logits = (tau * p.clamp_min(1e-300).log() / scaling).float()  # [H, S, S]; masked entries unused
    keys = torch.cat([torch.zeros(pad, s), torch.eye(s)])[None]  # [1, pad + S, S]
    return Projections(
        queries=logits.transpose(0, 1),  # [S, H, S]
        query_index=torch.arange(s) + pad,
        question=torch.zeros(s, dtype=torch.bool),
        keys=keys,
        key_valid=torch.arange(s + pad) >= pad,
        candidates=torch.tensor([1, 2]) + pad,
        scaling=scaling,
    )


HEAD0 = [[1, 0, 0], [1 / 2, 1 / 2, 0], [1 / 4, 1 / 4, 1 / 2]]
HEAD1 = [[1, 0, 0], [1 / 4, 3 / 4, 0], [1 / 2, 1 / 4, 1 / 4]]


@pytest.mark.parametrize("pad", [0, 2])
def test_pagerank_hand_computed(pad):
    """Two iterations from p = (1/3, 1/3, 1/3):
    head 0: p1 = (7, 3, 2) / 12, p2 = (36, 8, 4) / 48; head 1: p1 = (7, 4, 1) / 12, p2 = (34, 13, 1) / 48.
    RMS over the heads of tokens 1, 2: sqrt((8^2 + 13^2) / 2) / 48, sqrt((4^2 + 1^2) / 2) / 48."""
    p = projections_for([HEAD0, HEAD1], pad=pad)
    got = pagerank_importance(p, temperature=0.1, iterations=2)
    want = torch.tensor([math.sqrt(116.5) / 48, math.sqrt(8.5) / 48])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    one = pagerank_importance(projections_for([HEAD0], pad=pad), temperature=0.1, iterations=1)
    torch.testing.assert_close(one, torch.tensor([3 / 12, 2 / 12]), atol=1e-6, rtol=1e-5)


def authors_importance(logits: torch.Tensor, tau: float, iters: int) -> torch.Tensor:
    """The authors' routine restated: ``logits`` ``[H, N, N]`` already causally masked (-inf), row softmax at
    temperature ``tau``, ``p <- p M`` from uniform, RMS over heads. Returns ``[N]``."""
    m = (logits / tau).softmax(-1)
    heads, n, _ = m.shape
    p = torch.full((heads, 1, n), 1.0 / n, dtype=m.dtype)
    for _ in range(iters):
        p = p @ m
    return p.pow(2).mean(0).sqrt()[0]


def random_projections(seed: int, s: int = 23, pad: int = 3, heads: int = 4, kv: int = 2, d: int = 8):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(kv, s, d, generator=gen)
    valid = torch.arange(s) >= pad
    rows = valid.nonzero().squeeze(1)
    queries = torch.randn(rows.numel(), heads, d, generator=gen)
    cand = rows[2:14]
    return Projections(queries, rows, torch.zeros(rows.numel(), dtype=torch.bool), keys, valid, cand, d**-0.5)


def dense_reference(p: Projections, tau: float, iters: int) -> torch.Tensor:
    """The full ``[H, N, N]`` logits of the valid tokens (double), through :func:`authors_importance`."""
    heads, kv = p.queries.shape[1], p.keys.shape[0]
    keys = p.keys.double().repeat_interleave(heads // kv, 0)[:, p.key_valid]
    logits = torch.einsum("qhd,hkd->hqk", p.queries.double(), keys) * p.scaling
    n = logits.shape[-1]
    logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    scores = authors_importance(logits, tau, iters)
    pos = torch.full((p.key_valid.numel(),), -1)
    pos[p.key_valid] = torch.arange(n)
    return scores[pos[p.candidates]]


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_equals_dense_authors_routine(chunk, seed):
    p = random_projections(seed)
    want = dense_reference(p, 0.1, 5)
    assert (want.max() - want.min()) > 0.1 * want.mean()  # informative
    got = pagerank_importance(p, 0.1, 5, query_chunk=chunk)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=0, rtol=1e-4)


def test_memory_stays_one_block_of_query_rows(monkeypatch):
    shapes = []
    original = inner_aim.transition_rows

    def spy(queries, *args):
        out = original(queries, *args)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(inner_aim, "transition_rows", spy)
    p = random_projections(0)
    pagerank_importance(p, 0.1, 2, query_chunk=7)
    # 20 real queries (key indices 3 .. 22) in blocks of <= 7 rows, each against the keys up to its last query; twice
    assert shapes == [(4, 7, 10), (4, 7, 17), (4, 6, 23)] * 2


def test_chunk_queries_only_is_exact_for_candidates():
    """Dropping the queries of tokens before the candidates (a cached past) changes no candidate's score: those
    rows only attend to earlier keys."""
    p = random_projections(2)
    past = 5
    later = Projections(p.queries[past:], p.query_index[past:], p.question[past:], p.keys, p.key_valid,
                        p.candidates[p.candidates >= int(p.query_index[past])], p.scaling)  # fmt: skip
    full = pagerank_importance(p, 0.1, 5)[p.candidates >= int(p.query_index[past])]
    torch.testing.assert_close(pagerank_importance(later, 0.1, 5), full, atol=0, rtol=1e-6)


def test_plan_keeps_the_most_important_and_needs_projections():
    p = random_projections(3)
    n = p.candidates.numel()
    policy = AIMInnerPolicy(AIMInnerConfig())
    tokens = InnerTokens(torch.zeros(n, 4), torch.arange(n), None, 15, projections=p)
    scores = pagerank_importance(p)
    for k in (1, 5, n - 1):
        keep = policy.plan(tokens, k).keep
        assert keep.tolist() == scores.topk(k).indices.sort().values.tolist()
    assert policy.plan(tokens, n).keep.tolist() == list(range(n))
    with pytest.raises(InputError, match="projections"):
        policy.plan(InnerTokens(torch.zeros(3, 4), torch.arange(3), None, 15), 1)


# ---- end to end on tiny models --------------------------------------------------------------------------------------

RECORD = "aim_record_test"
PROMPTS = [(5, 7), (3, 4)]  # the second sample is left-padded


class RecordAIM(AIMInnerPolicy):
    records: list = []

    def importance(self, tokens: InnerTokens) -> torch.Tensor:
        scores = super().importance(tokens)
        RecordAIM.records.append((tokens.layer, tokens.sample, scores.clone()))
        return scores


@pytest.fixture
def recorder():
    register_policy(RECORD, stage="inner")(RecordAIM)
    RecordAIM.records.clear()
    yield RecordAIM.records
    registry._POLICIES.pop(("inner", RECORD), None)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_importance_under_sdpa_matches_pagerank_of_eager_attention(family, recorder):
    layer = 2
    inputs = make_inputs(family, prompts=PROMPTS)
    eager = tiny_model(family, attn="eager", seed=0)
    probs = eager(**inputs, output_attentions=True).attentions[layer - 1].double()  # [B, H, L, L]
    model = tiny_model(family, attn="sdpa", seed=0)
    tokpress.apply(model, inner=RECORD, inner_layer=layer, inner_ratio=0.5)
    model(**inputs)
    first = {s: scores for k, s, scores in recorder if k == layer}
    assert sorted(first) == [0, 1]
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    placeholder = video_placeholder_id(tiny_config(family))
    for b in range(2):
        real = mask[b].nonzero().squeeze(1)
        p = probs[b][:, real][:, :, real]  # [H, N, N], zero above the diagonal
        want = authors_importance(p.log(), 0.1, 5)  # softmax(log P / tau) == softmax(logits / tau) row-wise
        video = (ids[b, real] == placeholder).nonzero().squeeze(1)
        want = want[video[: video.numel() - (1 if family == "llava_onevision" else 0)]]
        assert (want.max() - want.min()) > 0.05 * want.mean()
        torch.testing.assert_close(first[b].double(), want, atol=0, rtol=1e-5)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_end_to_end_sdpa_and_eager_keep_the_same_tokens(family):
    inputs = batch_inputs(family)
    kept, texts = {}, {}
    for attn in ("sdpa", "eager"):
        model = tiny_model(family, attn=attn, seed=0)
        tokpress.apply(model, outer="aim", inner="aim", retain_ratio=0.5, inner_layer=1, inner_ratio=0.25)
        gen = dict(max_new_tokens=3, do_sample=False)
        first = model.generate(**inputs, **gen)
        last = model.tokpress.last
        kept[attn] = {k: v for k, v in last.kept.items()}
        assert torch.equal(model.generate(**inputs, **gen), first)  # generate twice: same answer
        assert model.tokpress.last.kept == kept[attn]
        texts[attn] = first
        # three inner stages (layers 1, 2, 3), the cumulative keep 0.75, 0.5, 0.25 of the outer's output
        entering = last.after_outer
        extra = 1 if family == "llava_onevision" else 0
        n = [e - extra for e in entering]
        for s, ratio in enumerate([0.75, 2 / 3, 0.5]):
            n = [budget(ratio, k) for k in n]
            assert last.after_inner[s] == [k + extra for k in n]
    assert kept["sdpa"] == kept["eager"]
