"""FastVID (outer): DySeg cuts, anchor frames, salient selection, density-weighted temporal merge, exact budgets.

Every expectation below is derived by hand from the algorithm in ``tokpress/policies/outer/fastvid.py``'s
docstring (methods.md §3), on crafted tensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, Plan, VideoTokens
from tokpress.policies.outer.fastvid import (
    FastVIDConfig,
    FastVIDPolicy,
    anchor_frames,
    dtm_merge,
    dyseg,
    stprune_counts,
)


def make(**options) -> FastVIDPolicy:
    return FastVIDPolicy(FastVIDConfig(**options))


def random_video(grid: Grid, dim: int = 16, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(grid.numel, dim, generator=gen).to(dtype)
    return VideoTokens(x, grid, attention=torch.rand(grid.numel, generator=gen))


def per_frame_counts(keep: torch.Tensor, grid: Grid) -> list[int]:
    return torch.bincount(keep // grid.per_frame, minlength=grid.frames).tolist()


def check_plan(plan: Plan, budget: int, n: int, dim: int, dtype) -> None:
    keep = plan.keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert int(keep[0]) >= 0 and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "kept indices must be sorted and distinct"
    if plan.features is not None:
        assert plan.features.shape == (budget, dim) and plan.features.dtype == dtype
        assert bool(torch.isfinite(plan.features.float()).all())
    if plan.sizes is not None:
        assert plan.sizes.shape == (budget,) and bool((plan.sizes > 0).all())


def cluster_tokens(centre: torch.Tensor, eps: float = 0.1, far: float = 3.0) -> torch.Tensor:
    """Four tokens ``[far, c + eps e1, c, c - eps e1]``: ``c`` (row 2) is the densest — its squared distances to
    the other three sum to ``2 eps^2 + far^2`` against at least ``6 eps^2 + far^2`` — so it is the single DPC peak."""
    dim = centre.numel()
    e1, e2 = torch.eye(dim)[0], torch.eye(dim)[1]
    return torch.stack([centre + far * e2, centre + eps * e1, centre, centre - eps * e1])


# ---- DySeg ------------------------------------------------------------------------------------------------------
def frames_with_similarities(sims: list[float]) -> torch.Tensor:
    """``[T, 2]`` global features whose adjacent cosines are ``sims``, with norms that differ (cosine ignores them)."""
    angles = torch.tensor([0.0] + [math.acos(s) for s in sims], dtype=torch.float64).cumsum(0)
    norms = torch.arange(1, len(sims) + 2, dtype=torch.float64)
    return (torch.stack([angles.cos(), angles.sin()], 1) * norms[:, None]).float()


SIMS = [0.99, 0.95, 0.85, 0.98, 0.93, 0.97, 0.99]  # transitions 0..6 of 8 frames


@pytest.mark.parametrize(
    "c,tau,lengths",
    [
        (3, 0.9, [3, 2, 3]),  # lowest two: t=2 (0.85), t=4 (0.93); below 0.9: t=2 only -> cuts {2, 4}
        (3, 0.96, [2, 1, 2, 3]),  # lowest two {2, 4} plus below 0.96: {1, 2, 4} -> cuts {1, 2, 4}
        (1, 0.9, [3, 5]),  # no lowest cuts; below 0.9: t=2
        (2, -1.0, [3, 5]),  # one lowest cut (t=2), threshold never fires
        (1, -1.0, [8]),  # no cut at all: one segment
        (20, -1.0, [1] * 8),  # c - 1 > T - 1: every transition is cut
    ],
)
def test_dyseg_cuts_at_lowest_similarities_and_below_tau(c, tau, lengths):
    g = frames_with_similarities(SIMS)
    out = dyseg(g, c, tau)
    assert out.dtype == torch.long
    assert out.tolist() == lengths


def test_dyseg_single_frame_is_one_segment():
    assert dyseg(torch.randn(1, 4), 8, 0.9).tolist() == [1]


# ---- anchor frames ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "p,expected",
    [
        # segments: frames 0-4 (S=5), 5 (S=1), 6-9 (S=4), 10-12 (S=3)
        (2, {0, 2, 4, 5, 7, 9, 10, 12}),  # last frame of each segment and every 2nd frame back
        (4, {0, 4, 5, 9, 12}),  # S=5: local 4 and 0; S=4: local 3 only; S=3: local 2 only
        (1, set(range(13))),
    ],
)
def test_anchor_frames_are_the_last_frame_and_every_pth_back(p, expected):
    is_anchor = anchor_frames(torch.tensor([5, 1, 4, 3]), p)
    assert set(is_anchor.nonzero().squeeze(1).tolist()) == expected


def scene_video(grid: Grid, cut_after: int, seed: int = 0) -> VideoTokens:
    """Frames ``0..cut_after`` show scene A, the others scene B (orthogonal means, small per-token noise)."""
    gen = torch.Generator().manual_seed(seed)
    dim = 16
    a, b = 3 * torch.eye(dim)[0], 3 * torch.eye(dim)[1]
    base = torch.stack([a if t <= cut_after else b for t in range(grid.frames)])
    x = base[:, None, :] + 0.3 * torch.randn(grid.frames, grid.per_frame, dim, generator=gen)
    return VideoTokens(x.reshape(grid.numel, dim), grid, attention=torch.rand(grid.numel, generator=gen))


@pytest.mark.parametrize(
    "p,counts",
    [
        # budget 40 over 8 frames: keep 5, context int(5 * 0.4) = 2, salient 3 per frame. Segments [0-2], [3-7].
        # p=2: anchor frames 0, 2 (context 6 -> 3 + 3) and 3, 5, 7 (context 10 -> 3 + 3 + 4, remainder at the end)
        (2, [6, 3, 6, 6, 3, 6, 3, 7]),
        # p=4: anchor frame 2 (context 6) and 3, 7 (context 10 -> 5 + 5)
        (4, [3, 3, 9, 8, 3, 3, 3, 8]),
    ],
)
def test_anchors_land_on_segment_end_and_every_pth_frame_back_through_plan(p, counts):
    grid = Grid(8, 2, 5)
    video = scene_video(grid, cut_after=2)
    assert dyseg(video.features.view(8, 10, -1).mean(1), 2, -1.0).tolist() == [3, 5]  # the construction
    plan = make(c=2, tau=-1.0, p=p).plan(video, 40)
    check_plan(plan, 40, grid.numel, 16, torch.float32)
    assert per_frame_counts(plan.keep, grid) == counts
    # a non-anchor frame keeps exactly its 3 top-attention tokens
    att = video.attention.view(8, 10)
    for t, c in enumerate(counts):
        kept = plan.keep[plan.keep // 10 == t] - 10 * t
        top = set(att[t].topk(3).indices.tolist())
        assert top <= set(kept.tolist())
        if c == 3:
            assert set(kept.tolist()) == top


# ---- budget split -----------------------------------------------------------------------------------------------
def test_stprune_counts_by_hand():
    lengths = torch.tensor([5, 1, 4])  # frames 0-4, 5, 6-9; p=2 -> anchor frames 0, 2, 4 | 5 | 7, 9
    # budget 60, P=15: keep 6, context int(2.4) = 2, salient 4 per frame.
    # seg 0: context 10 over 3 anchor frames -> 3, 3, 3 and the remainder to the last -> 3, 3, 4
    # seg 1: 2; seg 2: context 8 over 2 -> 4, 4
    salient, anchors = stprune_counts(lengths, 15, 60, 0.4, 2)
    assert salient.tolist() == [4] * 10
    assert anchors.tolist() == [3, 0, 3, 0, 4, 2, 0, 4, 0, 4]
    # budget 140: keep 14, context int(5.6) = 5, salient 9; room for anchors 15 - 9 = 6 per frame.
    # seg 0: context 25 -> wants 8, 8, 9 on frames 0, 2, 4 but holds 6 each; 7 overflow to the non-anchor frames
    #        from the end: frame 3 takes 6 (-> 15 salient), frame 1 takes 1 (-> 10)
    # seg 1: 5 anchors. seg 2: context 20 -> 10, 10 on frames 7, 9, held 6, 6; 8 overflow: frame 8 +6, frame 6 +2
    salient, anchors = stprune_counts(lengths, 15, 140, 0.4, 2)
    assert salient.tolist() == [9, 10, 9, 15, 9, 9, 11, 9, 15, 9]
    assert anchors.tolist() == [6, 0, 6, 0, 6, 5, 0, 6, 0, 6]
    # one 5-frame segment (anchor frames 0, 2, 4), budget 15, P=10: keep 3, context 1, salient 2 per frame;
    # context 5 over 3 anchor frames -> 1 each and the remainder 2 one each to the two nearest the end (4, then 2)
    salient, anchors = stprune_counts(torch.tensor([5]), 10, 15, 0.4, 2)
    assert salient.tolist() == [2] * 5 and anchors.tolist() == [1, 0, 2, 0, 2]


def test_stprune_counts_spill_to_other_anchor_frames_first():
    # one 3-frame segment, p=2 -> anchor frames 0 and 2. P=3, budget 7, d=0.5: keep 2, 2, 3 -> context 1, 1, 1,
    # salient 1, 1, 2. Context 3 over 2 anchor frames -> 1 each, remainder to frame 2 -> wants 1, 2; but frame 2
    # has room for 3 - 2 = 1 only: the spare token goes to anchor frame 0 (room 2), not to the non-anchor frame 1.
    salient, anchors = stprune_counts(torch.tensor([3]), 3, 7, 0.5, 2)
    assert salient.tolist() == [1, 1, 2] and anchors.tolist() == [2, 0, 1]
    # P=10, budget 21, d=1: keep 7 each, all context (21) -> wants 10 (frame 0) and 11 (frame 2), room 10 each:
    # both anchor frames are full, so the extra token becomes a salient token of the non-anchor frame 1.
    salient, anchors = stprune_counts(torch.tensor([3]), 10, 21, 1.0, 2)
    assert salient.tolist() == [0, 1, 0] and anchors.tolist() == [10, 0, 10]
    # segments [1, 3] with p=4: the 3-frame segment's only anchor frame is frame 3. P=10, budget 28, d=1: keep 7
    # each; context 21 -> frame 3 holds 10; the 11 left become salient tokens of frame 2 (10), then frame 1 (1).
    salient, anchors = stprune_counts(torch.tensor([1, 3]), 10, 28, 1.0, 4)
    assert salient.tolist() == [0, 1, 10, 0] and anchors.tolist() == [7, 0, 0, 10]


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize("d", [0.0, 0.4, 1.0])
def test_stprune_counts_always_exact_and_feasible(p, d):
    gen = torch.Generator().manual_seed(p)
    for trial in range(6):
        lengths = torch.randint(1, 7, (int(torch.randint(1, 5, (1,), generator=gen)),), generator=gen)
        per_frame = int(torch.randint(1, 12, (1,), generator=gen))
        n = int(lengths.sum()) * per_frame
        for budget in {1, n // 3 or 1, n // 2 or 1, n - 1 or 1, n}:
            salient, anchors = stprune_counts(lengths, per_frame, budget, d, p)
            assert int(salient.sum() + anchors.sum()) == budget, (trial, budget)
            assert bool((salient >= 0).all() and (anchors >= 0).all())
            assert bool((salient + anchors <= per_frame).all())
            assert not bool(anchors[~anchor_frames(lengths, p)].any())


# ---- salient tokens ---------------------------------------------------------------------------------------------
def test_d_zero_keeps_exactly_the_top_attention_tokens_of_every_frame():
    grid = Grid(4, 3, 4)  # P = 12; budget 20 -> 5 per frame, all salient when d = 0
    video = random_video(grid, seed=3)
    plan = make(d=0.0).plan(video, 20)
    expected = (video.attention.view(4, 12).topk(5, dim=1).indices + 12 * torch.arange(4)[:, None]).flatten()
    assert plan.keep.tolist() == sorted(expected.tolist())
    assert torch.equal(plan.features, video.features[plan.keep])
    assert plan.sizes.tolist() == [1.0] * 20


def test_salient_tokens_are_the_top_attention_ones_and_stay_unchanged():
    grid = Grid(4, 3, 4)  # budget 24 -> keep 6, context int(2.4) = 2, salient 4 per frame
    video = random_video(grid, seed=4)
    plan = make().plan(video, 24)
    top = (video.attention.view(4, 12).topk(4, dim=1).indices + 12 * torch.arange(4)[:, None]).flatten()
    rows = torch.searchsorted(plan.keep, top)
    assert torch.equal(plan.keep[rows], top)
    assert torch.equal(plan.features[rows], video.features[top])
    assert plan.sizes[rows].tolist() == [1.0] * top.numel()
    # the salient set follows the attention, not the features: reversing the attention order changes it
    flipped = VideoTokens(video.features, grid, attention=-video.attention)
    bottom = video.attention.view(4, 12).topk(4, dim=1, largest=False).indices + 12 * torch.arange(4)[:, None]
    assert set(bottom.flatten().tolist()) <= set(make().plan(flipped, 24).keep.tolist())


# ---- density-weighted temporal merge ----------------------------------------------------------------------------
def test_dtm_merge_joins_by_cosine_and_weights_by_count():
    e0, e1 = torch.eye(4)[0], torch.eye(4)[1]
    v = 0.5 * e0 + 0.3 * e1  # Euclid-closer to 2 e1, cosine-closer to 2 e0: joins the e0 anchor
    pool = torch.stack([2 * e0, e0 + 0.1 * e1, 2 * e1, 3 * e0 - 0.2 * e1, v, e1 + 0.2 * e0])
    merged, n = dtm_merge(pool, torch.tensor([0, 2]), beta=0.3)
    assert n.tolist() == [4.0, 2.0]  # {0, 1, 3, 4} and {2, 5}, each anchor counted in its own group
    w0, w1 = max(1 / 5, 0.3), max(1 / 3, 0.3)  # 0.3 and 1/3
    expected0 = w0 * pool[0] + (1 - w0) * (pool[0] + pool[1] + pool[3] + pool[4]) / 4
    expected1 = w1 * pool[2] + (1 - w1) * (pool[2] + pool[5]) / 2
    torch.testing.assert_close(merged, torch.stack([expected0, expected1]))


def test_dtm_merge_an_anchor_always_joins_itself():
    # anchors e0 and 2 e0 have the same direction: every cosine ties, and ties go to the earlier anchor, except
    # that an anchor is always a member of its own group (it sits at its own position and stands for itself)
    e0, e1 = torch.eye(3)[0], torch.eye(3)[1]
    pool = torch.stack([e0, 2 * e0, e0 + 0.1 * e1])
    merged, n = dtm_merge(pool, torch.tensor([0, 1]), beta=0.6)
    assert n.tolist() == [2.0, 1.0]
    torch.testing.assert_close(merged[1], pool[1])  # alone: 0.6 x + 0.4 mean({x}) = x
    torch.testing.assert_close(merged[0], 0.6 * pool[0] + 0.4 * (pool[0] + pool[2]) / 2)


@pytest.mark.parametrize("beta,w", [(0.6, 0.6), (0.1, 0.2)])  # w = max(1 / (4 + 1), beta)
def test_single_frame_context_token_is_the_weighted_merge(beta, w):
    # 1 frame of 6 tokens, budget 3: keep 3, context int(1.2) = 1, salient 2 (tokens 0 and 5, top attention).
    # The 4 others [far, c + eps e1, c, c - eps e1] merge into their density peak, token 3 (= c).
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(8, generator=gen)
    x = torch.cat([torch.randn(1, 8, generator=gen), cluster_tokens(centre), torch.randn(1, 8, generator=gen)])
    attention = torch.tensor([0.9, 0.1, 0.2, 0.1, 0.2, 0.8])
    plan = make(beta=beta).plan(VideoTokens(x, Grid(1, 2, 3), attention=attention), 3)
    assert plan.keep.tolist() == [0, 3, 5]
    expected = w * x[3] + (1 - w) * x[1:5].mean(0)
    torch.testing.assert_close(plan.features, torch.stack([x[0], expected, x[5]]))
    assert plan.sizes.tolist() == [1.0, 4.0, 1.0]


def test_context_token_absorbs_the_non_anchor_frames_of_its_segment():
    # 2 frames of 5 tokens, one segment (c=1, tau=-1), p=4 -> frame 1 is the only anchor frame.
    # budget 3: keep 1, 2 -> context int(0.5) = 0 and int(1.0) = 1, salient 1 each (tokens 0 and 5).
    # Frame 1's non-salient tokens 6..9 are [far, c + eps e1, c, c - eps e1] -> anchor 8, and all 8 non-salient
    # tokens of the segment (1-4 of frame 0 too) join it: n = 8, w = max(1/9, 0.1) = 1/9.
    gen = torch.Generator().manual_seed(1)
    centre = torch.randn(8, generator=gen)
    frame0 = torch.randn(5, 8, generator=gen)
    frame1 = torch.cat([torch.randn(1, 8, generator=gen), cluster_tokens(centre)])
    x = torch.cat([frame0, frame1])
    attention = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4, 0.9, 0.1, 0.2, 0.3, 0.4])
    plan = make(c=1, tau=-1.0, p=4, d=0.5, beta=0.1).plan(VideoTokens(x, Grid(2, 1, 5), attention=attention), 3)
    assert plan.keep.tolist() == [0, 5, 8]
    pool = torch.tensor([1, 2, 3, 4, 6, 7, 8, 9])
    expected = x[8] / 9 + (8 / 9) * x[pool].mean(0)
    torch.testing.assert_close(plan.features, torch.stack([x[0], x[5], expected]))
    assert plan.sizes.tolist() == [1.0, 1.0, 8.0]


def test_every_anchor_frame_absorbs_the_whole_segment():
    # p=1, one 2-frame segment: both frames are anchor frames. budget 4: keep 2, 2 -> context 1, salient 1 each.
    # Each frame's anchor is its cluster centre (tokens 3 and 8); each absorbs all 8 non-salient tokens of the
    # segment, so n = 8 for both and each stands for 8 / 2 = 4 tokens.
    gen = torch.Generator().manual_seed(2)
    x = torch.cat(
        [
            torch.randn(1, 8, generator=gen),
            cluster_tokens(torch.randn(8, generator=gen)),
            torch.randn(1, 8, generator=gen),
            cluster_tokens(torch.randn(8, generator=gen)),
        ]
    )
    attention = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4, 0.9, 0.1, 0.2, 0.3, 0.4])
    plan = make(c=1, tau=-1.0, p=1, d=0.5).plan(VideoTokens(x, Grid(2, 1, 5), attention=attention), 4)
    assert plan.keep.tolist() == [0, 3, 5, 8]
    pool = x[[1, 2, 3, 4, 6, 7, 8, 9]].mean(0)
    w = max(1 / 9, 0.6)
    torch.testing.assert_close(
        plan.features, torch.stack([x[0], w * x[3] + (1 - w) * pool, x[5], w * x[8] + (1 - w) * pool])
    )
    assert plan.sizes.tolist() == [1.0, 4.0, 1.0, 4.0]


@pytest.mark.parametrize("budget", [18, 30, 45, 60, 89])
def test_sizes_account_for_every_token_when_each_segment_has_context(budget):
    grid = Grid(6, 3, 5)  # c=8 > T: every frame is a segment; budget >= 3 T -> context >= 1 per frame
    plan = make().plan(random_video(grid, seed=budget), budget)
    assert plan.sizes.sum().item() == pytest.approx(grid.numel)


# ---- exact budget, dtypes, determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("options", [{}, {"p": 1}, {"d": 1.0}, {"d": 0.0}, {"c": 1, "tau": -1.0}, {"c": 2}])
def test_exact_budget(options, dtype):
    grid = Grid(6, 3, 5)  # N = 90, P = 15
    n = grid.numel
    policy = make(**options)
    for budget in (1, 2, 5, 14, 15, 16, 30, 45, 70, 89, 90):
        plan = policy.plan(random_video(grid, seed=budget, dtype=dtype), budget)
        check_plan(plan, budget, n, 16, dtype)
    assert make(**options).plan(random_video(grid, dtype=dtype), n).keep.tolist() == list(range(n))


def test_full_budget_is_the_identity():
    grid = Grid(4, 2, 3)
    plan = make().plan(random_video(grid), grid.numel)
    assert plan.keep.tolist() == list(range(grid.numel)) and plan.features is None and plan.sizes is None


def test_bf16_gives_the_fp32_plan_of_the_same_values():
    grid = Grid(6, 3, 5)
    video = random_video(grid, seed=9, dtype=torch.bfloat16)
    as_fp32 = VideoTokens(video.features.float(), grid, attention=video.attention)
    for budget in (7, 27, 50):
        a, b = make().plan(video, budget), make().plan(as_fp32, budget)
        assert torch.equal(a.keep, b.keep) and torch.equal(a.sizes, b.sizes)
        assert a.features.dtype == torch.bfloat16 and b.features.dtype == torch.float32
        assert torch.equal(a.features, b.features.to(torch.bfloat16))


def test_deterministic():
    grid = Grid(8, 3, 4)
    video = random_video(grid, seed=11)
    torch.manual_seed(0)
    a = make(p=2).plan(video, 30)
    torch.manual_seed(1)
    b = make(p=2).plan(video, 30)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)


# ---- contract and errors ----------------------------------------------------------------------------------------
def test_registered_and_asks_for_vision_attention():
    assert FastVIDPolicy.name == "fastvid" and FastVIDPolicy.needs_vision_attention
    cfg = FastVIDConfig()
    assert (cfg.c, cfg.tau, cfg.d, cfg.p, cfg.beta, cfg.k, cfg.form, cfg.ignore) == (
        8,
        None,
        0.4,
        4,
        0.6,
        4,
        "auto",
        0.95,
    )
    assert (cfg.tau_for("llava"), cfg.tau_for("qwen")) == (0.9, 0.84)


def test_missing_or_misshaped_attention_raises():
    grid = Grid(2, 2, 2)
    x = torch.randn(grid.numel, 4)
    with pytest.raises(InputError, match="attention"):
        make().plan(VideoTokens(x, grid), 3)
    with pytest.raises(InputError, match="shape"):
        make().plan(VideoTokens(x, grid, attention=torch.rand(grid.numel + 1)), 3)


@pytest.mark.parametrize(
    "options,name",
    [
        ({"c": 0}, "c"),
        ({"c": True}, "c"),
        ({"tau": 1.5}, "tau"),
        ({"d": -0.1}, "d"),
        ({"d": 1.2}, "d"),
        ({"p": 0}, "p"),
        ({"p": 2.0}, "p"),
        ({"beta": 1.1}, "beta"),
        ({"k": 0}, "k"),
    ],
)
def test_bad_options_raise_config_error(options, name):
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        FastVIDConfig(**options)
