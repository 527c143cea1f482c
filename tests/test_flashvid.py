"""FlashVID (outer): ADTS selection, TSTM redundancy trees, the spatial DPC merge, exact budgets.

The hand-derived expectations follow the paper and the authors' code (Fanziyang-v/FlashVID, ``flashvid/utils.py``
and ``flashvid/token_selection.py``), as described in ``tokpress/policies/outer/flashvid.py``'s docstring; the
"restated" tests compare against plain loop re-statements of the reference's computations written here.
"""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, Plan, VideoTokens
from tokpress.policies.outer.flashvid import (
    FlashVIDConfig,
    FlashVIDPolicy,
    adts_order,
    adts_select,
    adts_weights,
    cluster_counts,
    frame_shares,
    selected_counts,
    tstm_roots,
)
from tokpress.registry import get_policy


def make(**options) -> FlashVIDPolicy:
    return FlashVIDPolicy(FlashVIDConfig(**options))


def unit(*degrees: float) -> torch.Tensor:
    """``[n, 2]`` unit vectors at the given angles (degrees)."""
    r = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([r.cos(), r.sin()], 1).float()


def random_video(grid: Grid, dim: int = 16, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(grid.numel, dim, generator=gen).to(dtype)
    return VideoTokens(x, grid, attention=torch.rand(grid.numel, generator=gen))


def smooth_video(grid: Grid, dim: int = 16, seed: int = 0, drift: float = 0.3) -> VideoTokens:
    """Frames that drift slowly from a shared base (plenty of temporal links), small per-frame noise."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(grid.per_frame, dim, generator=gen)
    steps = drift * torch.randn(grid.frames, grid.per_frame, dim, generator=gen)
    x = base[None] + steps.cumsum(0)
    return VideoTokens(x.reshape(grid.numel, dim), grid, attention=torch.rand(grid.numel, generator=gen))


def check_plan(plan: Plan, budget: int, n: int, dim: int, dtype) -> None:
    keep = plan.keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert int(keep[0]) >= 0 and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "kept indices must be sorted and distinct"
    assert plan.features is not None and plan.features.shape == (budget, dim) and plan.features.dtype == dtype
    assert bool(torch.isfinite(plan.features.float()).all())
    assert plan.sizes is not None and plan.sizes.shape == (budget,) and plan.sizes.dtype == torch.float32
    assert bool((plan.sizes >= 1).all())


# ---- config -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        dict(alpha=1.5),
        dict(alpha=-0.1),
        dict(alpha=True),
        dict(temporal_threshold=1.2),
        dict(segment_threshold="0.9"),
        dict(min_segment_num=0),
        dict(min_segment_num=2.0),
        dict(token_selection_method="topk"),
        dict(k=0),
        dict(form="gemma"),
    ],
)
def test_bad_options_raise_config_error_naming_the_value(options):
    with pytest.raises(ConfigError) as err:
        FlashVIDConfig(**options)
    assert repr(next(iter(options.values()))) in str(err.value)


def test_defaults_are_the_authors_and_forms_follow_their_scripts():
    cfg = FlashVIDConfig()
    assert (cfg.alpha, cfg.temporal_threshold, cfg.segment_threshold, cfg.k) == (0.7, 0.8, 0.9, 7)
    # scripts/llava_ov.sh, llava_vid.sh: attn_div_v2 with 8 segments; qwen2_5_vl.sh, qwen3_vl.sh: attn_div with 4
    assert cfg.resolve("llava_onevision") == ("attn_div_v2", 8)
    assert cfg.resolve("") == ("attn_div_v2", 8)
    assert cfg.resolve("qwen2_vl") == ("attn_div", 4)
    assert FlashVIDConfig(form="qwen").resolve("llava_onevision") == ("attn_div", 4)
    assert FlashVIDConfig(form="llava", min_segment_num=3).resolve("qwen2_vl") == ("attn_div_v2", 3)
    assert FlashVIDConfig(token_selection_method="div").resolve("qwen2_vl") == ("div", 4)


def test_registered_with_full_vision_attention():
    cls = get_policy("outer", "flashvid")
    assert cls is FlashVIDPolicy
    assert cls.needs_vision_attention and cls.vision_attention == "full"


# ---- budget shares ------------------------------------------------------------------------------------------------
def test_frame_shares_and_selected_counts_by_hand():
    assert frame_shares(3, 7).tolist() == [2, 2, 3]  # floor(t * 7 / 3) = 0, 2, 4, 7
    assert frame_shares(4, 2).tolist() == [0, 1, 0, 1]
    # ceil(b * 0.7) in double precision, as the reference's math.ceil: 3 * 0.7 = 2.0999... -> 3, 10 * 0.7 = 7.0 -> 7,
    # 25 * 0.7 = 17.5 -> 18 (LLaVA-OV at r = 0.1: 25 tokens per frame, 18 selected, 7 merged)
    assert selected_counts(torch.tensor([0, 1, 2, 3, 4, 10, 25]), 0.7).tolist() == [0, 1, 2, 3, 3, 7, 18]
    assert selected_counts(torch.tensor([5, 6]), 0.0).tolist() == [0, 0]
    assert selected_counts(torch.tensor([5, 6]), 1.0).tolist() == [5, 6]


# ---- ADTS ---------------------------------------------------------------------------------------------------------
# One frame, four tokens: x0 = (1, 0), x1 = (0, 1), x2 = (1, 1)/sqrt2, x3 = (-1, 0); distance 1 - cos:
# d01 = 1, d02 = d12 = 1 - 1/sqrt2 = 0.2929, d03 = 2, d13 = 1, d23 = 1 + 1/sqrt2 = 1.7071.
FOUR = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2**-0.5, 2**-0.5], [-1.0, 0.0]])
ATT = torch.tensor([0.1, 0.4, 0.2, 0.3])


def test_adts_attn_div_by_hand():
    # calibrated D[i, j] = d_ij * a_j.
    # pick 1: a_j * min_{i != j} d_ij = .1 * .2929, .4 * .2929, .2 * .2929, .3 * 1 = .029, .117, .059, .300 -> 3
    # pick 2: a_j * d_3j = .1 * 2, .4 * 1, .2 * 1.7071 = .200, .400, .341 -> 1
    # pick 3: a_j * min(d_3j, d_1j) = .1 * 1 (x0), .2 * .2929 (x2) = .100, .059 -> 0; then 2
    order = adts_order(FOUR[None], ATT[None], 4)
    assert order.tolist() == [[3, 1, 0, 2]]


def test_adts_div_and_attn_by_hand():
    # div (no calibration): pick 1: min d = .2929, .2929, .2929, 1 -> 3; pick 2: d_3j = 2, 1, 1.7071 -> 0;
    # pick 3: min(d_3j, d_0j) = 1 (x1), .2929 (x2) -> 1
    assert adts_order(FOUR[None], None, 4).tolist() == [[3, 0, 1, 2]]
    lengths = torch.tensor([1])
    for method, k, expected in [("attn_div", 3, [0, 1, 3]), ("div", 2, [0, 3]), ("attn", 3, [1, 2, 3])]:
        sel = adts_select(FOUR[None], ATT[None], lengths, torch.tensor([k]), method)
        assert sel[0].nonzero().squeeze(1).tolist() == expected, method


def test_adts_v2_event_relevance_uses_the_segment_mean_by_hand():
    # Two frames in one segment, three mutually orthogonal tokens each (all distances 1), equal attention, so the
    # picks follow the relevance x_j . g, g = mean of the two frame means = ((1/3 + 10/3)/2, (2/3 + 1/3)/2,
    # (1 + 1/3)/2) = (11/6, 1/2, 2/3).
    # frame 0: (1,0,0), (0,2,0), (0,0,3) -> relevance 11/6, 1, 2 -> order 2, 0, 1 (its own mean would give 2, 1, 0)
    # frame 1: (10,0,0), (0,1,0), (0,0,1) -> relevance 55/3, 1/2, 2/3 -> order 0, 2, 1
    x = torch.tensor(
        [[[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], [[10.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]],
    )
    att = torch.full((2, 3), 1 / 3)
    w = adts_weights(x, att, torch.tensor([2]), "attn_div_v2")
    assert torch.allclose(w, torch.tensor([[11 / 6, 1, 2], [55 / 3, 1 / 2, 2 / 3]]) / 3)
    assert adts_order(x, w, 3).tolist() == [[2, 0, 1], [0, 2, 1]]
    # attn_div ignores the norms: equal scores, ties to the lowest index
    assert adts_order(x, adts_weights(x, att, torch.tensor([2]), "attn_div"), 3).tolist() == [[0, 1, 2], [0, 1, 2]]
    # as two one-frame segments, frame 0's relevance uses its own mean (1/3, 2/3, 1): 1/3, 4/3, 3 -> 2, 1, 0
    w = adts_weights(x, att, torch.tensor([1, 1]), "attn_div_v2")
    assert adts_order(x, w, 3)[0].tolist() == [2, 1, 0]


def reference_adts(x: torch.Tensor, w: torch.Tensor | None, k: int) -> list[int]:
    """A plain re-statement of the reference's greedy (``attn_div_based_token_selection``) for one frame."""
    p = x.shape[0]
    xn = x.double() / x.double().norm(dim=-1, keepdim=True)
    dist = [[(1 - float(xn[i] @ xn[j])) * (1.0 if w is None else float(w[j])) for j in range(p)] for i in range(p)]
    picks = []
    # first: per column, the second smallest entry (the smallest is the token itself), then the largest of those
    second = [sorted(dist[i][j] for i in range(p))[1] for j in range(p)]
    picks.append(max(range(p), key=lambda j: (second[j], -j)))
    while len(picks) < k:
        scores = {j: min(dist[s][j] for s in picks) for j in range(p) if j not in picks}
        picks.append(max(scores, key=lambda j: (scores[j], -j)))
    return picks


@pytest.mark.parametrize("method", ["attn_div", "attn_div_v2", "div"])
def test_adts_matches_a_restatement_of_the_reference(method):
    gen = torch.Generator().manual_seed(7)
    t, p, d = 4, 12, 8
    x = torch.randn(t, p, d, generator=gen) + 1.5  # a shared offset: positive event relevance, as in real features
    att = torch.rand(t, p, generator=gen)
    lengths = torch.tensor([3, 1])
    w = adts_weights(x, att, lengths, method)
    got = adts_order(x, w, 7)
    for f in range(t):
        assert got[f].tolist() == reference_adts(x[f], None if w is None else w[f], 7), (method, f)


def test_adts_never_repicks_when_scores_are_not_positive():
    # all calibrated distances zero (zero attention): the reference's v2 could pick the same token again
    x = torch.randn(1, 6, 4)
    order = adts_order(x, torch.zeros(1, 6), 6)
    assert sorted(order[0].tolist()) == list(range(6))


# ---- TSTM ---------------------------------------------------------------------------------------------------------
# Three frames of four unit vectors (angles in degrees); token 3 of every frame is the ADTS-selected one.
#   frame 0:  0,  90, 180, (300)
#   frame 1: 10, 250, 120,  (95)
#   frame 2: 20, 200, 100, (270)
# Links (most similar *unselected* token of the previous frame, cosine > 0.8):
#   f1t0 (10)  -> f0t0 (0):   cos 10 = .985        f1t1 (250): best f0t2, cos 70 = .342 -> root
#   f1t2 (120) -> f0t1 (90):  cos 30 = .866
#   f2t0 (20)  -> f1t0 (10):  cos 10 = .985        f2t1 (200): best f1t1, cos 50 = .643 -> root
#   f2t2 (100) -> f1t2 (120): cos 20 = .940  (f1t3 at 95 is closer, cos 5, but it is selected: masked)
# Trees: {f0t0, f1t0, f2t0}, {f0t1, f1t2, f2t2}, {f0t2}, {f1t1}, {f2t1}.
ANGLES = [[0, 90, 180, 300], [10, 250, 120, 95], [20, 200, 100, 270]]
X3 = torch.stack([unit(*row) for row in ANGLES])  # [3, 4, 2]
SEL3 = torch.tensor([[False, False, False, True]] * 3)


def test_tstm_trees_by_hand():
    root = tstm_roots(X3, SEL3, torch.tensor([3]), torch.tensor([12]), 0.8)
    # flat index t * 4 + i; selected tokens -1
    assert root.tolist() == [0, 1, 2, -1, 0, 5, 1, -1, 0, 9, 1, -1]


def test_tstm_link_cap_keeps_the_most_similar_links():
    # cap 3: the candidates by similarity are f1t0 (.985), f2t0 (.985), f2t2 (.940), f1t2 (.866): f1t2 stays a root,
    # and f2t2 (linked to it) now roots there
    root = tstm_roots(X3, SEL3, torch.tensor([3]), torch.tensor([3]), 0.8)
    assert root.tolist() == [0, 1, 2, -1, 0, 5, 6, -1, 0, 9, 6, -1]
    # cap 0 or threshold 1: nothing links
    expected = [0, 1, 2, -1, 4, 5, 6, -1, 8, 9, 10, -1]
    assert tstm_roots(X3, SEL3, torch.tensor([3]), torch.tensor([0]), 0.8).tolist() == expected
    assert tstm_roots(X3, SEL3, torch.tensor([3]), torch.tensor([12]), 1.0).tolist() == expected


def test_tstm_does_not_link_across_segments():
    # segments [0], [1, 2]: frame 1 starts a segment, so f1t0 and f1t2 are roots; frame 2 still links into frame 1
    root = tstm_roots(X3, SEL3, torch.tensor([1, 2]), torch.tensor([4, 8]), 0.8)
    assert root.tolist() == [0, 1, 2, -1, 4, 5, 6, -1, 4, 9, 6, -1]


def reference_trees(x: torch.Tensor, selected: torch.Tensor, threshold: float) -> dict[int, torch.Tensor]:
    """A plain re-statement of the reference's ``spatiotemporal_compression`` for one segment (no soft threshold),
    with each tree averaged over all its members: ``{flat index of root: tree feature}``."""
    s, p, _ = x.shape
    xn = x.double() / x.double().norm(dim=-1, keepdim=True)
    best = [[-1.0] * p for _ in range(s)]
    parent = [[-1] * p for _ in range(s)]
    for t in range(1, s):
        for i in range(p):
            if selected[t, i]:
                continue
            for j in range(p):
                c = float(xn[t, i] @ xn[t - 1, j])
                if not selected[t - 1, j] and c > best[t][i]:
                    best[t][i], parent[t][i] = c, j
    sums = x.double().clone()
    counts = [[1] * p for _ in range(s)]
    out = {}
    for t in range(s - 1, -1, -1):  # the reference's backward pass, carrying subtree sums *and* sizes
        for i in range(p):
            if selected[t, i]:
                continue
            if best[t][i] > threshold:
                sums[t - 1, parent[t][i]] += sums[t, i]
                counts[t - 1][parent[t][i]] += counts[t][i]
            else:
                out[t * p + i] = sums[t, i] / counts[t][i]
    return out


def test_tstm_matches_a_restatement_of_the_reference():
    grid = Grid(5, 3, 4)
    video = smooth_video(grid, dim=8, seed=3, drift=0.25)
    x = video.features.view(5, 12, 8)
    selected = torch.rand(5, 12, generator=torch.Generator().manual_seed(1)) < 0.3
    root = tstm_roots(x, selected, torch.tensor([5]), torch.tensor([60]), 0.8)
    ref = reference_trees(x, selected, 0.8)
    roots = sorted(set(root[root >= 0].tolist()))
    assert roots == sorted(ref)
    assert len(roots) < int((~selected).sum()), "the construction should produce some links"
    flat = x.reshape(60, 8)
    for r in roots:
        assert torch.allclose(flat[root == r].double().mean(0), ref[r], atol=1e-6)


# ---- spatial split ------------------------------------------------------------------------------------------------
def test_cluster_counts_by_hand():
    lengths = torch.tensor([3, 2])
    # segment 0: roots 3, 1, 1 and 4 merged tokens: one per frame, the spare 1 by the remaining roots 2, 0, 0
    # segment 1: roots 5, 0 and 3 merged tokens: 1 + apportion(2, [4, 0]) = 3, 0
    assert cluster_counts(torch.tensor([3, 1, 1, 5, 0]), lengths, torch.tensor([4, 3])).tolist() == [2, 1, 1, 3, 0]
    # fewer merged tokens than frames with roots: split by the roots (largest remainder), frames may get none:
    # 2 over roots 1, 6, 1 -> quotas .25, 1.5, .25 -> 0, 1, 0 + one remainder to the largest (frame 1's .5)
    assert cluster_counts(torch.tensor([1, 6, 1]), torch.tensor([3]), torch.tensor([2])).tolist() == [0, 2, 0]
    # every root kept
    assert cluster_counts(torch.tensor([2, 0, 3]), torch.tensor([3]), torch.tensor([5])).tolist() == [2, 0, 3]


# ---- the whole stage, by hand -------------------------------------------------------------------------------------
def hand_video() -> VideoTokens:
    att = torch.tensor([0.1, 0.1, 0.1, 0.7]).repeat(3)  # token 3 of every frame has the most attention
    return VideoTokens(X3.reshape(12, 2), Grid(3, 2, 2), attention=att)


def hand_policy() -> FlashVIDPolicy:
    """One segment (``min_segment_num`` 1, threshold -1: no cut), ADTS by attention alone (token 3 of each frame)."""
    return make(
        alpha=0.3, token_selection_method="attn", min_segment_num=1, segment_threshold=-1.0, temporal_threshold=0.8
    )


def test_plan_by_hand_with_spatial_clustering():
    # One segment (min_segment_num 1, threshold -1: no cut). Budget 7 -> shares 2, 2, 3; alpha 0.3 -> ADTS
    # ceil(.6) = ceil(.9) = 1 per frame ("attn": token 3), merged C = 1 + 1 + 2 = 4; link cap 12 - 7 = 5 >= the 4
    # links, so the trees are those of test_tstm_trees_by_hand. Roots per frame 3, 1, 1 -> counts 2, 1, 1.
    # Frame 0 clusters its tree tokens r0 = mean(0, 10, 20), r1 = mean(90, 120, 100), r2 = x(180) into 2 with
    # DPC-kNN (k = 2: density exp(-(0 + d_nn^2) / 2), distances Euclidean / sqrt 2):
    #   d01 = 1.0110, d02 = 1.4017, d12 = 0.8673; density r0 .5998, r1 = r2 .6865 (tie: r1, the lower index, is
    #   denser); delta r1 = 1.4017 (the largest), r0 = d01, r2 = d12; scores r0 .6065, r1 .9623, r2 .5954
    #   -> centers r0, r1; r2 joins r1 (d12 < d02). Cluster tokens are plain means of the tree tokens.
    v = hand_video()
    plan = hand_policy().plan(v, 7)
    x = v.features
    assert plan.keep.tolist() == [0, 1, 3, 5, 7, 9, 11]
    r0 = x[[0, 4, 8]].mean(0)
    r1 = x[[1, 6, 10]].mean(0)
    expected = torch.stack([r0, (r1 + x[2]) / 2, x[3], x[5], x[7], x[9], x[11]])
    assert torch.allclose(plan.features, expected, atol=1e-6)
    assert plan.sizes.tolist() == [3, 4, 1, 1, 1, 1, 1]


def test_plan_by_hand_with_the_link_cap():
    # Budget 9 -> shares 3, 3, 3; alpha 0.3 -> 1 selected per frame, C = 6; link cap 12 - 9 = 3 (see
    # test_tstm_link_cap_keeps_the_most_similar_links): roots 3, 2, 1 = 6 = C -> every tree token kept.
    v = hand_video()
    plan = hand_policy().plan(v, 9)
    x = v.features
    assert plan.keep.tolist() == [0, 1, 2, 3, 5, 6, 7, 9, 11]
    expected = torch.stack([x[[0, 4, 8]].mean(0), x[1], x[2], x[3], x[5], x[[6, 10]].mean(0), x[7], x[9], x[11]])
    assert torch.allclose(plan.features, expected, atol=1e-6)
    assert plan.sizes.tolist() == [3, 1, 1, 1, 1, 2, 1, 1, 1]


def test_dyseg_cut_stops_the_trees():
    # two identical frames: without a cut every unselected token of frame 1 links to its copy in frame 0
    x = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    x[1] = x[0]
    v = VideoTokens(x.reshape(12, 8), Grid(2, 2, 3), attention=torch.rand(12))
    one = make(min_segment_num=1, alpha=0.5).plan(v, 8)  # shares 4, 4; 2 selected per frame
    assert one.sizes.sum() == 12 and one.sizes.max() >= 2  # trees span both frames
    # min_segment_num 2 cuts between them: nothing links, all 4 merged tokens come from in-frame DPC clusters
    two = make(min_segment_num=2, alpha=0.5).plan(v, 8)
    assert two.sizes.sum() == 12
    per_frame = torch.zeros(2).index_add_(0, two.keep // 6, two.sizes)
    assert per_frame.tolist() == [6, 6]


# ---- properties ---------------------------------------------------------------------------------------------------
GRIDS = [Grid(1, 3, 3), Grid(2, 2, 3), Grid(5, 3, 3), Grid(8, 4, 4), Grid(13, 2, 5)]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("method", ["attn_div_v2", "attn_div", "attn", "div"])
def test_exact_budget_for_every_budget(grid, method):
    n = grid.numel
    video = smooth_video(grid, seed=n)
    policy = make(token_selection_method=method)
    budgets = range(1, n) if n <= 40 else sorted({1, 2, 3, grid.frames, n // 10, n // 4, n // 3, n // 2, n - 1})
    for b in budgets:
        plan = policy.plan(video, b)
        check_plan(plan, b, n, 16, torch.float32)
        assert float(plan.sizes.sum()) <= n + 1e-4


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("threshold", [-1.0, 0.5, 0.8, 1.0])
def test_exact_budget_across_options(alpha, threshold):
    grid = Grid(6, 3, 4)
    video = random_video(grid, seed=int(alpha * 10 + threshold * 3 + 5))
    policy = make(alpha=alpha, temporal_threshold=threshold, min_segment_num=2)
    for b in (1, 5, 13, 30, 50, 71):
        check_plan(policy.plan(video, b), b, grid.numel, 16, torch.float32)


def test_budget_n_is_the_identity_plan():
    video = random_video(Grid(4, 3, 3))
    plan = make().plan(video, 36)
    assert plan.features is None and plan.sizes is None and torch.equal(plan.keep, torch.arange(36))


def test_sizes_sum_to_n_when_every_frame_has_merged_tokens():
    # shares >= 4 per frame with alpha 0.7 leave every frame >= 1 merged token, so no root is dropped
    grid = Grid(8, 4, 4)
    for seed in range(3):
        video = smooth_video(grid, seed=seed)
        for b in (32, 40, 64, 100, 127):
            plan = make().plan(video, b)
            assert math.isclose(float(plan.sizes.sum()), grid.numel, abs_tol=1e-4), (seed, b)


def test_selected_tokens_are_unchanged_and_merged_ones_are_means():
    grid = Grid(6, 4, 4)
    video = smooth_video(grid, seed=4)
    plan = make().plan(video, 40)
    x = video.features
    single = plan.sizes == 1
    assert torch.equal(plan.features[single], x[plan.keep[single]])
    assert bool((plan.sizes > 1).any())


def test_deterministic_and_dtype_preserving():
    grid = Grid(6, 3, 4)
    video = random_video(grid, seed=2, dtype=torch.bfloat16)
    a = make().plan(video, 20)
    b = make().plan(video, 20)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)
    check_plan(a, 20, grid.numel, 16, torch.bfloat16)


def test_form_auto_follows_the_family():
    grid = Grid(6, 3, 4)
    video = smooth_video(grid, seed=9)
    video.family = "qwen2_vl"  # set as an attribute: works whether or not VideoTokens declares the field
    auto = make().plan(video, 20)
    qwen = make(token_selection_method="attn_div", min_segment_num=4).plan(video, 20)
    assert torch.equal(auto.keep, qwen.keep) and torch.equal(auto.features, qwen.features)


def test_attention_is_required_except_for_div():
    grid = Grid(3, 2, 2)
    video = random_video(grid)
    video.attention = None
    with pytest.raises(InputError, match="attention"):
        make().plan(video, 5)
    check_plan(make(token_selection_method="div").plan(video, 5), 5, 12, 16, torch.float32)
    video = random_video(grid)
    video.attention = torch.rand(11)
    with pytest.raises(InputError, match=r"\(12,\)"):
        make().plan(video, 5)


@pytest.mark.parametrize("layers,expected", [(28, 20), (36, 26), (24, 17), (4, 3), (2, 1)])
def test_inner_stage_is_fastv_at_layer_20_of_28_scaled(layers, expected):
    from tokpress.policies.inner.fastv import FastVPolicy
    from tokpress.policies.inner.flashvid import FlashVIDInnerPolicy
    from tokpress.registry import get_preset

    assert get_policy("inner", "flashvid") is FlashVIDInnerPolicy and issubclass(FlashVIDInnerPolicy, FastVPolicy)
    assert FlashVIDInnerPolicy.needs_attention and FlashVIDInnerPolicy.attention_queries == "last"
    assert FlashVIDInnerPolicy.default_layer(layers) == expected  # round(20 L / 28), clamped to [1, L - 1]
    preset = get_preset("flashvid")
    assert (preset.outer, preset.inner, preset.inner_ratio) == ("flashvid", "flashvid", 0.3)
