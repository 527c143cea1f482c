"""VidCom2 (outer): frame-uniqueness budgets, per-frame token uniqueness, exact budgets.

The hand-derived expectations follow the paper and the authors' code (kernel ``G(d2) = sum_a exp(-d2 / (2a))``,
``a in {1/8, 1/4, 1/2, 1, 2}``; frame share ``~ 1 + softmax(-mean_p G_video / 0.01) - 1/T``; keep the lowest
``G_video + G_frame`` per frame), never from running tokpress. ``reference_plan`` restates the authors' computation
with plain loops for the random comparisons.
"""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.vidcom2 import (
    VidCom2Config,
    VidCom2Policy,
    frame_budgets,
    frame_weights,
    low_variance_channels,
    uniqueness_scores,
)
from tokpress.registry import get_policy

ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)


def make(**options) -> VidCom2Policy:
    return VidCom2Policy(VidCom2Config(**options))


def random_video(grid: Grid, dim: int = 16, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    return VideoTokens(torch.randn(grid.numel, dim, generator=gen).to(dtype), grid)


def per_frame(keep: torch.Tensor, grid: Grid) -> list[int]:
    return torch.bincount(keep // grid.per_frame, minlength=grid.frames).tolist()


def assert_valid_keep(keep: torch.Tensor, budget: int, n: int) -> None:
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "kept indices must be sorted and distinct"


def with_noise_channels(x2: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` crafted channels + two channels of +-10 (variance 100, far above any unit-vector channel's), so the
    default ``channel_ratio = 0.5`` scores exactly the two crafted channels."""
    n = x2.shape[0]
    sign = torch.tensor([1.0, -1.0]).repeat((n + 1) // 2)[:n]
    return torch.cat([x2, 10 * sign[:, None], -10 * sign.flip(0)[:, None]], 1)


def G(d2: float) -> float:
    return sum(math.exp(-d2 / (2 * a)) for a in ALPHAS)


# ---- hand-derived: frame budgets ------------------------------------------------------------------------------------
# 3 frames x 4 tokens, 2-D: frames 0 and 1 are four copies of e1 = (1, 0); frame 2 is [e2, e2, e1, e1].
# Video mean = (10/12, 2/12): |e1 - m|^2 = 1/18, |e2 - m|^2 = 25/18; G(1/18) ~ 4.600, G(25/18) ~ 1.522.
# u = -mean_p G_video = (-4.600, -4.600, -3.061): frame 2 leads by 1.539, / 0.01 = 153.9, so the softmax is (0, 0, 1)
# (exp(-153.9) ~ 1e-67 underflows in float32). Shares ~ 1 + sigma - 1/3 = (2/3, 2/3, 5/3); q = budget * w / 3.
ALLOC_GRID = Grid(3, 2, 2)
E1, E2 = [1.0, 0.0], [0.0, 1.0]
ALLOC_X2 = torch.tensor([E1] * 8 + [E2, E2, E1, E1])


def test_hand_frame_weights():
    x = with_noise_channels(ALLOC_X2)
    sel = low_variance_channels(x, 0.5)
    assert torch.equal(sel, ALLOC_X2)  # variances 0.139, 0.139 (crafted) vs 100, 100 (noise)
    video, frame = uniqueness_scores(sel.view(3, 4, 2), ALPHAS)
    g_near, g_far = G(1 / 18), G(25 / 18)
    assert g_near == pytest.approx(4.6003, abs=1e-3) and g_far == pytest.approx(1.5215, abs=1e-3)
    expected_video = torch.tensor([[g_near] * 4, [g_near] * 4, [g_far, g_far, g_near, g_near]])
    # frame means: e1 for frames 0, 1 (distance 0 -> G = 5); (1/2, 1/2) for frame 2 (distance^2 1/2 for all four)
    expected_frame = torch.tensor([[5.0] * 4, [5.0] * 4, [G(0.5)] * 4])
    torch.testing.assert_close(video, expected_video, atol=1e-5, rtol=0)
    torch.testing.assert_close(frame, expected_frame, atol=1e-5, rtol=0)
    w = frame_weights(video, 0.01)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 2 / 3, 5 / 3], dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "budget,counts",
    [
        # q = (10/9, 10/9, 25/9) = (1.11, 1.11, 2.78): floors (1, 1, 2), one left -> frame 2 (fraction .78).
        # The reference's round(q) = (1, 1, 3) too (R_RATIO = 5/12).
        (5, [1, 1, 3]),
        # q = (2.22, 2.22, 5.56): frame 2 is capped at P = 4; its excess 1.56 goes to frames 0, 1 in proportion to
        # their (equal) shares -> (3, 3, 4). The reference clamps the scale to 1 and drops the excess: (2, 2, 4) = 8.
        (10, [3, 3, 4]),
        # q = (2, 2, 5) -> cap: (2.5, 2.5, 4): floors (2, 2, 4), one left, equal fractions -> the earlier frame.
        (9, [3, 2, 4]),
        # q = (2/3, 2/3, 5/3) but budget >= T: at least one token per frame (the reference's max(1, .)); frames 0, 1
        # are raised to 1, which takes the rest from frame 2 -> (1, 1, 1). The reference keeps (1, 1, 2) = 4.
        (3, [1, 1, 1]),
        # budget < T: no floor. q = (4/9, 4/9, 10/9): floors (0, 0, 1), one left -> largest fraction .44, tie
        # between frames 0 and 1 -> frame 0.
        (2, [1, 0, 1]),
        (1, [0, 0, 1]),  # q = (2/9, 2/9, 5/9): floors 0, the one token goes to frame 2 (fraction .56)
        (12, [4, 4, 4]),
    ],
)
def test_hand_frame_budgets(budget, counts):
    w = torch.tensor([2 / 3, 2 / 3, 5 / 3], dtype=torch.float64)
    assert frame_budgets(w, budget, 4).tolist() == counts


def test_hand_allocation_and_selection():
    """Budget 5 -> counts (1, 1, 3). Frames 0, 1: four identical tokens (equal scores) -> the first of each (0, 4).
    Frame 2: the frame term is G(1/2) for all four tokens, so the video term decides: the two e2 tokens (8, 9;
    G 1.52 < 4.60) come first, then the earlier e1 token (10)."""
    video = VideoTokens(with_noise_channels(ALLOC_X2), ALLOC_GRID)
    assert make().plan(video, 5).keep.tolist() == [0, 4, 8, 9, 10]
    assert make().plan(video, 10).keep.tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 11]


# ---- hand-derived: token selection uses both terms ------------------------------------------------------------------
# 2 frames x 4 tokens, 2-D, frame 1 the mirror image of frame 0: frame 0 = [e1, e2, e2, e2], frame 1 = [e1, -e2, -e2,
# -e2]. Both frames score the same, so each gets half the budget. Video mean (1/4, 0); frame means (1/4, +-3/4).
#   e1:  video d2 = 9/16 -> G 2.624 | frame d2 = 9/8 -> G 1.766 | sum 4.389
#   e2:  video d2 = 17/16 -> G 1.834 | frame d2 = 1/8 -> G 4.176 | sum 6.010
# The video term alone would keep e2 first; the sum keeps e1 (the frame term outweighs it).
MIRROR_X2 = torch.tensor([E1, E2, E2, E2, E1, [0.0, -1.0], [0.0, -1.0], [0.0, -1.0]])


def test_hand_kernel_values_of_mirror_example():
    assert G(9 / 16) + G(9 / 8) == pytest.approx(4.389, abs=1e-3)
    assert G(17 / 16) + G(1 / 8) == pytest.approx(6.010, abs=1e-3)
    video, frame = uniqueness_scores(MIRROR_X2.view(2, 4, 2), ALPHAS)
    torch.testing.assert_close(video[0], torch.tensor([G(9 / 16)] + [G(17 / 16)] * 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(frame[1], torch.tensor([G(9 / 8)] + [G(1 / 8)] * 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("budget,keep", [(2, [0, 4]), (4, [0, 1, 4, 5]), (6, [0, 1, 2, 4, 5, 6])])
def test_hand_selection_combines_video_and_frame_terms(budget, keep):
    video = VideoTokens(with_noise_channels(MIRROR_X2), Grid(2, 2, 2))
    assert make().plan(video, budget).keep.tolist() == keep


# ---- restatement of the authors' computation (plain loops) ----------------------------------------------------------
def reference_plan(x: torch.Tensor, frames: int, ratio: float, temperature: float = 0.01):
    """The authors' VidCom2 on ``x`` ``[N, D]`` float32 with ``R_RATIO = ratio``: returns the real per-frame shares
    ``scale_t * P`` (before their clamp and round), their ``max(1, round(.))`` counts, the kept indices and each
    frame's tokens (global indices) ranked from most to least unique."""
    n, d = x.shape
    p = n // frames
    var = [((x[:, c] - x[:, c].mean()) ** 2).mean().item() for c in range(d)]
    channels = sorted(range(d), key=lambda c: (var[c], c))[: d // 2]
    rows = []
    for i in range(n):
        v = [x[i, c].item() for c in channels]
        norm = max(math.sqrt(sum(e * e for e in v)), 1e-12)
        rows.append([e / norm for e in v])
    dims = range(len(channels))
    video_mean = [sum(r[c] for r in rows) / n for c in dims]
    frame_mean = [[sum(rows[t * p + j][c] for j in range(p)) / p for c in dims] for t in range(frames)]

    def kernel(a, b):
        return G(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))

    vid = [[kernel(rows[t * p + j], video_mean) for j in range(p)] for t in range(frames)]
    frm = [[kernel(rows[t * p + j], frame_mean[t]) for j in range(p)] for t in range(frames)]
    u = [-sum(vid[t]) / p for t in range(frames)]
    exps = [math.exp((ut - max(u)) / temperature) for ut in u]
    sigma = [e / sum(exps) for e in exps]
    shares = [ratio * (1 + s - sum(sigma) / frames) * p for s in sigma]
    counts = [max(1, round(min(ratio * (1 + s - sum(sigma) / frames), 1.0) * p)) for s in sigma]
    keep, ranked = [], []
    for t in range(frames):
        score = [vid[t][j] + frm[t][j] for j in range(p)]
        ranked.append([t * p + j for j in sorted(range(p), key=lambda j: (score[j], j))])
        keep += sorted(ranked[t][: counts[t]])
    return shares, counts, keep, ranked


@pytest.mark.parametrize("temperature", [0.01, 0.1])  # 0.1: softmax far from one-hot on these inputs
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("frames,rows,cols,dim", [(4, 3, 3, 8), (6, 2, 4, 6)])
def test_matches_reference_restatement(seed, frames, rows, cols, dim, temperature):
    grid = Grid(frames, rows, cols)
    gen = torch.Generator().manual_seed(100 + seed)
    # a per-frame offset makes frames differ, so the softmax allocation is far from uniform
    x = torch.randn(grid.numel, dim, generator=gen) + torch.randn(frames, 1, dim, generator=gen).repeat_interleave(
        grid.per_frame, 0
    ).squeeze(1)
    policy = make(temperature=temperature)
    compared = 0
    for budget in range(frames, grid.numel // 2 + 1):  # r <= 1/2: the reference's cap at P never binds
        ratio = budget / grid.numel
        shares, ref_counts, ref_keep, ranked = reference_plan(x, frames, ratio, temperature)
        keep = policy.plan(VideoTokens(x, grid), budget).keep
        counts = per_frame(keep, grid)
        assert sum(counts) == budget
        for c, q in zip(counts, shares):  # every count is floor or ceil of the reference's share (or the floor 1)
            assert math.floor(q - 1e-6) <= c <= max(1, math.ceil(q + 1e-6)), (counts, shares)
        if sum(ref_counts) == budget:  # the reference's rounding happens to be exact: identical plans
            assert counts == ref_counts and keep.tolist() == ref_keep
            compared += 1
        else:  # same tokens within each frame for the counts tokpress chose: the prefix of the reference's ranking
            for t in range(frames):
                ours = keep[(keep // grid.per_frame) == t].tolist()
                assert ours == sorted(ranked[t][: counts[t]])
    assert compared > 0


# ---- properties -----------------------------------------------------------------------------------------------------
GRIDS = [Grid(1, 3, 4), Grid(2, 2, 2), Grid(5, 2, 3), Grid(8, 3, 3), Grid(3, 1, 1)]


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_exact_budget_and_caps_for_every_budget(grid):
    policy = make()
    video = random_video(grid, seed=grid.numel)
    for budget in range(1, grid.numel + 1):
        keep = policy.plan(video, budget).keep
        assert_valid_keep(keep, budget, grid.numel)
        counts = per_frame(keep, grid)
        assert max(counts) <= grid.per_frame
        if budget >= grid.frames:
            assert min(counts) >= 1, (budget, counts)


def test_identity_at_full_budget():
    grid = Grid(4, 3, 3)
    plan = make().plan(random_video(grid), grid.numel)
    assert torch.equal(plan.keep, torch.arange(grid.numel)) and plan.features is None and plan.sizes is None


def test_deterministic_and_dtype_independent_shape():
    grid = Grid(6, 4, 4)
    policy = make()
    a = policy.plan(random_video(grid, seed=3), 30).keep
    b = policy.plan(random_video(grid, seed=3), 30).keep
    assert torch.equal(a, b)
    bf = policy.plan(random_video(grid, seed=3, dtype=torch.bfloat16), 30)
    assert_valid_keep(bf.keep, 30, grid.numel) and bf.features is None


@pytest.mark.parametrize(
    "weights,budget,per_frame_cap",
    [
        ([1.0, 1.0, 1.0], 7, 3),
        ([0.5, 0.5, 2.0], 8, 3),
        ([0.7, 0.7, 0.7, 1.9], 3, 5),
        ([1e-3, 1.0, 5.0, 1.0], 13, 4),
        ([1.5, 0.5], 2, 1),
        ([1.5, 0.5], 1, 7),
    ],
)
def test_frame_budgets_properties(weights, budget, per_frame_cap):
    w = torch.tensor(weights, dtype=torch.float64)
    counts = frame_budgets(w, budget, per_frame_cap)
    assert int(counts.sum()) == budget and int(counts.max()) <= per_frame_cap
    lo = 1 if budget >= w.numel() else 0
    assert int(counts.min()) >= lo


def test_frame_budgets_random_sweep():
    gen = torch.Generator().manual_seed(7)
    for _ in range(300):
        t = int(torch.randint(1, 9, (1,), generator=gen))
        cap = int(torch.randint(1, 6, (1,), generator=gen))
        budget = int(torch.randint(1, t * cap + 1, (1,), generator=gen))
        w = 1 + torch.rand(t, generator=gen, dtype=torch.float64) * torch.rand(1, generator=gen, dtype=torch.float64)
        counts = frame_budgets(w, budget, cap)
        assert int(counts.sum()) == budget and int(counts.max()) <= cap
        assert int(counts.min()) >= (1 if budget >= t else 0)
        if budget >= t:  # free frames (strictly inside the bounds) get floor or ceil of a common-scale share
            ideal = w * budget / w.sum()
            if bool(((ideal >= 1) & (ideal <= cap)).all()):
                assert bool(((counts - ideal).abs() < 1).all())


def test_distinct_frame_gets_more_tokens():
    """Seven static frames and one different frame: the different frame gets ~ (2 - 1/8) / (1 - 1/8) = 15/7 times
    the others' share (softmax ~ one-hot at temperature 0.01)."""
    grid = Grid(8, 4, 4)
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(grid.per_frame, 8, generator=gen)
    x = base.repeat(8, 1) + 0.01 * torch.randn(grid.numel, 8, generator=gen)
    x[5 * 16 : 6 * 16] = torch.randn(16, 8, generator=gen)
    counts = per_frame(make().plan(VideoTokens(x, grid), 32).keep, grid)
    # q = 32 / 8 * (1 - 1/8) = 3.5 for the static frames, 32 / 8 * (2 - 1/8) = 7.5 for frame 5
    assert counts[5] in (7, 8) and all(c in (3, 4) for i, c in enumerate(counts) if i != 5), counts
    # a huge temperature flattens the softmax: everyone gets 4
    assert per_frame(make(temperature=1e6).plan(VideoTokens(x, grid), 32).keep, grid) == [4] * 8


def test_registered_and_config_validation():
    assert get_policy("outer", "vidcom2") is VidCom2Policy
    assert VidCom2Config() == VidCom2Config(temperature=0.01, channel_ratio=0.5, alphas=ALPHAS)
    for bad in (
        dict(temperature=0),
        dict(temperature=-1.0),
        dict(temperature=True),
        dict(channel_ratio=0),
        dict(channel_ratio=1.5),
        dict(alphas=()),
        dict(alphas=(0.5, -1.0)),
        dict(alphas=[0.5]),
    ):
        with pytest.raises(ConfigError):
            VidCom2Config(**bad)


def test_bad_input():
    grid = Grid(2, 2, 2)
    with pytest.raises(InputError, match="features must have shape"):
        make().plan(VideoTokens(torch.randn(7, 4), grid), 3)
    with pytest.raises(InputError, match="budget"):
        make().plan(VideoTokens(torch.randn(8, 4), grid), 0)


def test_single_channel_features():
    """``D = 1``: ``int(1 * 0.5) = 0`` would select no channel; at least one is scored."""
    grid = Grid(2, 2, 2)
    keep = make().plan(VideoTokens(torch.randn(8, 1, generator=torch.Generator().manual_seed(0)), grid), 3).keep
    assert_valid_keep(keep, 3, 8)
