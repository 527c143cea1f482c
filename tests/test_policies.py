"""Each policy's distinctive behaviour on crafted tensors, calling the policies directly (no model)."""

from __future__ import annotations

import pytest
import torch

from tokpress import config
from tokpress.errors import InputError
from tokpress.policies.base import Grid, InnerTokens, Plan, Projections, VideoSlot, VideoTokens
from tokpress.policies.fixed import FixedInnerPolicy, FixedOuterPolicy
from tokpress.policies.inner.fastv import FastVPolicy
from tokpress.policies.outer.evs import EVSPolicy
from tokpress.policies.outer.frames import FramesPolicy
from tokpress.policies.outer.random import RandomPolicy
from tokpress.policies.outer.uniform import UniformPolicy
from tokpress.registry import get_policy, policy_names


def make(cls, **options):
    return cls(cls.config_cls(**options))


def random_video(grid: Grid, dim: int = 16, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    """Random features and a random per-frame vision attention (sums to 1 in each frame)."""
    gen = torch.Generator().manual_seed(seed)
    attention = torch.rand(grid.frames, grid.per_frame, generator=gen).softmax(-1).flatten()
    return VideoTokens(torch.randn(grid.numel, dim, generator=gen).to(dtype), grid, attention=attention)


def assert_valid_keep(keep: torch.Tensor, budget: int, n: int) -> None:
    assert keep.dtype == torch.long, keep.dtype
    assert keep.dim() == 1 and keep.numel() == budget, (tuple(keep.shape), budget)
    if budget:
        assert 0 <= int(keep[0]) and int(keep[-1]) < n
        assert bool((keep[1:] > keep[:-1]).all()), "indices must be sorted and distinct"


def per_frame_counts(keep: torch.Tensor, grid: Grid) -> list[int]:
    return torch.bincount(keep // grid.per_frame, minlength=grid.frames).tolist()


# ---- EVS --------------------------------------------------------------------------------------------------------
def moving_square_video(frames=5, height=6, width=8, side=2, dim=32, seed=0):
    """A static textured background with a ``side`` x ``side`` square moving one column right per frame.

    Returns the video and, per frame t >= 1, the grid indices whose features differ from frame t - 1.
    """
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(frames, height, width)
    background = torch.randn(height, width, dim, generator=gen)  # textured: every position its own vector
    square = torch.randn(dim, generator=gen)  # one flat colour: positions the square stays on do not change
    video = background[None].repeat(frames, 1, 1, 1)
    occupied = torch.zeros(frames, height, width, dtype=torch.bool)
    for t in range(frames):
        top, left = 2, 1 + t
        occupied[t, top : top + side, left : left + side] = True
    video[occupied] = square
    changed = torch.zeros_like(occupied)
    changed[1:] = occupied[1:] ^ occupied[:-1]  # the square's new leading column and the column it left
    expected_changed = changed.flatten().nonzero().squeeze(1)
    return VideoTokens(video.reshape(grid.numel, dim), grid), expected_changed


def test_evs_keeps_first_frame_and_exactly_the_moving_square():
    video, changed = moving_square_video()
    grid = video.grid
    # the construction really moves: 2 columns of 2 tokens change in each of the 4 later frames
    assert changed.numel() == 4 * 4 and bool((changed >= grid.per_frame).all())
    budget = grid.per_frame + changed.numel()
    keep = make(EVSPolicy).plan(video, budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    expected = torch.cat([torch.arange(grid.per_frame), changed])
    assert keep.tolist() == sorted(expected.tolist())


def test_evs_adapts_per_frame_counts_to_motion():
    # the square only moves between frames 2 and 3; every other frame is an exact repeat
    gen = torch.Generator().manual_seed(5)
    grid = Grid(4, 4, 4)
    background = torch.randn(grid.per_frame, 8, generator=gen)
    video = background[None].repeat(grid.frames, 1, 1)
    moved = torch.tensor([5, 6, 9, 10])
    video[3, moved] = torch.randn(moved.numel(), 8, generator=gen)
    keep = make(EVSPolicy).plan(VideoTokens(video.reshape(grid.numel, 8), grid), grid.per_frame + 4).keep
    assert per_frame_counts(keep, grid) == [grid.per_frame, 0, 0, 4]
    assert keep[grid.per_frame :].tolist() == (3 * grid.per_frame + moved).tolist()


def test_evs_scores_dissimilarity_to_the_same_position_only():
    # frame 1 is frame 0 with positions shuffled: every token exists in the previous frame, but elsewhere,
    # so all of frame 1 is "new"; frame 2 repeats frame 1 exactly.
    gen = torch.Generator().manual_seed(6)
    grid = Grid(3, 2, 3)
    f0 = torch.randn(grid.per_frame, 8, generator=gen)
    f1 = f0[torch.tensor([1, 2, 3, 4, 5, 0])]
    video = VideoTokens(torch.cat([f0, f1, f1]), grid)
    keep = make(EVSPolicy).plan(video, 2 * grid.per_frame).keep
    assert keep.tolist() == list(range(2 * grid.per_frame))


@pytest.mark.parametrize("budget", [1, 3, 23, 24, 47])
def test_evs_first_frame_comes_before_anything_else(budget):
    # vLLM semantics: the first frame scores +inf. Even when every later token changes completely, a budget of
    # at most one frame keeps only first-frame tokens (the earliest ones, stable order).
    gen = torch.Generator().manual_seed(budget)
    grid = Grid(4, 4, 6)
    video = random_video(grid, seed=budget)
    video.features[grid.per_frame :] = torch.randn(grid.numel - grid.per_frame, 16, generator=gen)
    keep = make(EVSPolicy).plan(video, budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    if budget <= grid.per_frame:
        assert keep.tolist() == list(range(budget))
    else:
        assert keep[: grid.per_frame].tolist() == list(range(grid.per_frame))


def test_evs_first_frame_wins_over_a_static_first_frame_with_motion_later():
    # frames 0 and 1 identical (frame 1 scores 0), frames 2.. fully new (score ~1): still frame 0 first.
    gen = torch.Generator().manual_seed(7)
    grid = Grid(4, 3, 3)
    f0 = torch.randn(grid.per_frame, 8, generator=gen)
    rest = torch.randn(2 * grid.per_frame, 8, generator=gen)
    video = VideoTokens(torch.cat([f0, f0, rest]), grid)
    keep = make(EVSPolicy).plan(video, grid.per_frame + 2 * grid.per_frame).keep
    assert keep.tolist() == list(range(grid.per_frame)) + list(range(2 * grid.per_frame, grid.numel))


def test_evs_pin_hand_derived_scores_and_global_ranking():
    """vLLM ``compute_retention_mask`` on a 3-frame x 4-token video of 2-D integer features, derived by hand.

    Score of token ``(t, p)``: ``1 - cos(x[t, p], x[t - 1, p])``; frame 0 scores 255 in vLLM (+inf here), i.e. it
    outranks everything. One stable descending argsort over all frames; the top ``retain`` are kept.

    frame 0 (0..3):  a      a      a       b           a = (1, 0), b = (0, 1)
    frame 1 (4..7):  (2,0)  (3,4)  (-1,0)  (1,0)       vs frame 0: cos 1, 3/5, -1, 0 -> scores 0, 0.4, 2, 1
    frame 2 (8..11): (0,1)  (3,4)  (-3,4)  (3,-4)      vs frame 1: cos 0, 1, 3/5, 3/5 -> scores 1, 0, 0.4, 0.4

    Descending stable order: 0 1 2 3 (inf) | 6 (2) | 7 8 (1, tie -> lower index first) | 5 10 11 (0.4) | 4 9 (0).
    """
    grid = Grid(3, 1, 4)
    a, b = [1.0, 0.0], [0.0, 1.0]
    x = torch.tensor(
        [a, a, a, b]
        + [[2.0, 0.0], [3.0, 4.0], [-1.0, 0.0], [1.0, 0.0]]
        + [[0.0, 1.0], [3.0, 4.0], [-3.0, 4.0], [3.0, -4.0]]
    )
    video = VideoTokens(x, grid)
    expected = {
        4: [0, 1, 2, 3],  # the first frame alone (vLLM's floor: never fewer than one frame)
        5: [0, 1, 2, 3, 6],  # + the flipped token (score 2)
        6: [0, 1, 2, 3, 6, 7],  # the score-1 tie between 7 (frame 1) and 8 (frame 2) goes to the lower index
        7: [0, 1, 2, 3, 6, 7, 8],
        10: [0, 1, 2, 3, 5, 6, 7, 8, 10, 11],  # + the three 0.4's; the two unchanged tokens 4, 9 go last
        12: list(range(12)),
    }
    for budget, keep in expected.items():
        # vLLM: q = 1 - budget / N retains max(P, int(N (1 - q))) = budget tokens for these budgets
        assert make(EVSPolicy).plan(video, budget).keep.tolist() == keep, budget
    # counts adapt to the content: at budget 7 frame 1 (two big changes) keeps 2 tokens, frame 2 keeps 1
    assert per_frame_counts(make(EVSPolicy).plan(video, 7).keep, grid) == [4, 2, 1]


@pytest.mark.parametrize("budget", [1, 5, 17, 40, 63, 64])
def test_evs_exact_budget(budget):
    grid = Grid(4, 4, 4)
    keep = make(EVSPolicy).plan(random_video(grid, seed=3), budget).keep
    assert_valid_keep(keep, budget, grid.numel)


# ---- uniform ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,budget", [(4, 8), (4, 20), (6, 6), (5, 100)])
def test_uniform_equal_counts_when_divisible(frames, budget):
    grid = Grid(frames, 5, 5)
    keep = make(UniformPolicy).plan(random_video(grid), budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    assert per_frame_counts(keep, grid) == [budget // frames] * frames


@pytest.mark.parametrize("frames,budget", [(4, 10), (8, 18), (8, 3), (7, 51), (3, 74), (6, 1)])
def test_uniform_floor_ceil_counts_spread_over_frames(frames, budget):
    grid = Grid(frames, 5, 5)
    keep = make(UniformPolicy).plan(random_video(grid), budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    counts = per_frame_counts(keep, grid)
    lo, hi = budget // frames, -(-budget // frames)
    assert set(counts) <= {lo, hi}
    assert sum(counts) == budget
    # the extra tokens are spread: after every frame the running total is within one token of t * budget / T
    total = 0
    for t, c in enumerate(counts):
        total += c
        assert abs(total - (t + 1) * budget / frames) < 1, counts


@pytest.mark.parametrize("per_frame_budget", [4, 5, 7, 10, 13, 21])
def test_uniform_spreads_tokens_over_rows(per_frame_budget):
    # 5 rows of 7 tokens; the kept tokens of a frame are evenly spaced in raster order, so every row holds
    # floor or ceil of c / H of them (and with c >= H every row is covered).
    height, width, frames = 5, 7, 3
    grid = Grid(frames, height, width)
    c = per_frame_budget
    keep = make(UniformPolicy).plan(random_video(grid), c * frames).keep
    for t in range(frames):
        in_frame = keep[(keep // grid.per_frame) == t] - t * grid.per_frame
        assert in_frame.numel() == c
        rows = torch.bincount(in_frame // width, minlength=height).tolist()
        assert set(rows) <= {c // height, -(-c // height)}, rows
        if c >= height:
            assert min(rows) >= 1
        gaps = (in_frame[1:] - in_frame[:-1]).tolist()
        assert max(gaps) - min(gaps) <= 1, gaps


def test_uniform_pin_hand_derived():
    """The documented rule by hand on P = 8 tokens per frame (2 rows x 4).

    Frame t gets ``floor((t + 1) b / T) - floor(t b / T)`` tokens (floor or ceil of b / T, extras spread);
    ``c`` tokens of a frame sit at the centres of ``c`` equal bins of the 8 raster positions, rounded down:
    ``floor((2 i + 1) * 8 / (2 c))`` -> c = 1: 4; c = 2: 2, 6; c = 3: floor(1.33), 4, floor(6.67) = 1, 4, 6.
    """
    two = Grid(2, 2, 4)
    plan = make(UniformPolicy).plan(random_video(two), 6)  # 3 + 3
    assert plan.keep.tolist() == [1, 4, 6, 9, 12, 14]
    assert plan.features is None and plan.sizes is None
    # b = 5, T = 2: bounds floor(0), floor(2.5), floor(5) = 0, 2, 5 -> 2 + 3 tokens
    assert make(UniformPolicy).plan(random_video(two), 5).keep.tolist() == [2, 6, 9, 12, 14]
    # b = 4, T = 3: bounds 0, floor(1.33), floor(2.67), 4 = 0, 1, 2, 4 -> 1 + 1 + 2 tokens
    three = Grid(3, 2, 4)
    assert make(UniformPolicy).plan(random_video(three), 4).keep.tolist() == [4, 12, 16 + 2, 16 + 6]


def test_uniform_full_budget_keeps_all():
    grid = Grid(3, 4, 5)
    assert make(UniformPolicy).plan(random_video(grid), grid.numel).keep.tolist() == list(range(grid.numel))


def test_uniform_ignores_content():
    grid = Grid(4, 3, 3)
    a = make(UniformPolicy).plan(random_video(grid, seed=0), 13).keep
    b = make(UniformPolicy).plan(random_video(grid, seed=1), 13).keep
    assert a.tolist() == b.tolist()


# ---- frames -----------------------------------------------------------------------------------------------------
def kept_frames(keep: torch.Tensor, grid: Grid) -> tuple[list[int], list[int]]:
    counts = per_frame_counts(keep, grid)
    return [t for t, c in enumerate(counts) if c], [c for c in counts if c]


@pytest.mark.parametrize("frames,n_frames", [(8, 1), (8, 2), (8, 3), (8, 8), (7, 4), (10, 3)])
def test_frames_keeps_whole_evenly_spaced_frames(frames, n_frames):
    grid = Grid(frames, 3, 4)
    budget = n_frames * grid.per_frame
    keep = make(FramesPolicy).plan(random_video(grid), budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    chosen, counts = kept_frames(keep, grid)
    assert counts == [grid.per_frame] * n_frames  # whole frames: all P tokens of each chosen frame
    expected = torch.cat([t * grid.per_frame + torch.arange(grid.per_frame) for t in chosen])
    assert keep.tolist() == expected.tolist()
    if n_frames > 1:
        gaps = [b - a for a, b in zip(chosen, chosen[1:])]
        assert max(gaps) - min(gaps) <= 1, chosen
    # spread over the whole clip, not packed at one end: margins at most one spacing wide
    assert chosen[0] <= frames / n_frames and frames - 1 - chosen[-1] <= frames / n_frames, chosen


@pytest.mark.parametrize("budget", [1, 5, 13, 25, 35])
def test_frames_remainder_keeps_exact_budget(budget):
    grid = Grid(6, 3, 4)  # P = 12
    p = grid.per_frame
    keep = make(FramesPolicy).plan(random_video(grid), budget).keep
    assert_valid_keep(keep, budget, grid.numel)
    chosen, counts = kept_frames(keep, grid)
    n_frames = -(-budget // p)
    assert len(chosen) == n_frames
    rest = budget - (n_frames - 1) * p
    # every chosen frame is whole except the last chosen one, which holds the remainder
    assert counts == [p] * (n_frames - 1) + [rest]
    last = keep[keep // p == chosen[-1]] - chosen[-1] * p
    if 1 < rest < p:
        gaps = (last[1:] - last[:-1]).tolist()
        assert max(gaps) - min(gaps) <= 1  # the remainder is spread within its frame
    if rest >= grid.height:
        assert set((last // grid.width).tolist()) == set(range(grid.height))


def test_frames_pin_hand_derived():
    """The documented rule by hand on 6 frames of P = 4 tokens: ``ceil(b / P)`` frames at the centres of equal bins
    of the 6 frames, ``floor((2 i + 1) * 6 / (2 m))``; the last chosen frame holds the remainder, spread the same way
    over its 4 positions."""
    grid = Grid(6, 1, 4)
    cases = {
        # m = 2 frames: floor(1.5), floor(4.5) = frames 1, 4, both whole
        8: [4, 5, 6, 7, 16, 17, 18, 19],
        # m = 3 frames: 1, 3, 5; frames 1 and 3 whole, frame 5 keeps 10 - 8 = 2 of 4: floor(1), floor(3) = 1, 3
        10: [4, 5, 6, 7, 12, 13, 14, 15, 21, 23],
        # m = 1 frame: floor(3) = frame 3, keeping 3 of 4: floor(0.67), floor(2), floor(3.33) = 0, 2, 3
        3: [12, 14, 15],
    }
    for budget, keep in cases.items():
        assert make(FramesPolicy).plan(random_video(grid), budget).keep.tolist() == keep, budget


# ---- random -----------------------------------------------------------------------------------------------------
def test_random_same_seed_same_result_different_seed_different():
    grid = Grid(4, 5, 5)
    video = random_video(grid)
    a = make(RandomPolicy, seed=3).plan(video, 40).keep
    b = make(RandomPolicy, seed=3).plan(random_video(grid, seed=9), 40).keep
    c = make(RandomPolicy, seed=4).plan(video, 40).keep
    assert_valid_keep(a, 40, grid.numel)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_random_independent_of_sample_and_video_index():
    grid = Grid(4, 5, 5)
    policy = make(RandomPolicy, seed=11)
    feats = random_video(grid).features
    alone = policy.plan(VideoTokens(feats, grid, sample=0, video=0), 30).keep
    for sample, video in [(1, 0), (0, 2), (3, 1)]:
        in_batch = policy.plan(VideoTokens(feats, grid, sample=sample, video=video), 30).keep
        assert in_batch.tolist() == alone.tolist()
    # and repeated calls do not advance a shared generator
    assert policy.plan(VideoTokens(feats, grid), 30).keep.tolist() == alone.tolist()


@pytest.mark.parametrize("budget", [1, 7, 50, 99, 100])
def test_random_exact_budget(budget):
    grid = Grid(4, 5, 5)
    keep = make(RandomPolicy, seed=budget).plan(random_video(grid), budget).keep
    assert_valid_keep(keep, budget, grid.numel)


def test_random_is_uniform_over_positions():
    grid = Grid(2, 2, 5)  # N = 20
    hits = torch.zeros(grid.numel)
    seeds = 400
    for seed in range(seeds):
        hits[make(RandomPolicy, seed=seed).plan(random_video(grid), 5).keep] += 1
    # each token is kept with probability 5 / 20: expect 100 of 400 (std ~8.7)
    assert hits.sum() == 5 * seeds
    assert 60 < hits.min() and hits.max() < 140, hits.tolist()


def test_random_draws_every_subset_equally_often():
    """The docstring promises a uniformly random subset, not only uniform marginals (which e.g. a random rotation
    of evenly spaced tokens also has): with N = 4 and budget 2 each of the C(4, 2) = 6 pairs has probability 1/6."""
    grid = Grid(1, 1, 4)
    video = random_video(grid)
    seeds = 600
    counts: dict[tuple[int, ...], int] = {}
    for seed in range(seeds):
        pair = tuple(make(RandomPolicy, seed=seed).plan(video, 2).keep.tolist())
        counts[pair] = counts.get(pair, 0) + 1
    assert sorted(counts) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    # expected 100 each, binomial std sqrt(600 * 1/6 * 5/6) ~ 9.1: a 4.4-sigma band
    assert all(60 <= c <= 140 for c in counts.values()), counts


# ---- fastv ------------------------------------------------------------------------------------------------------
def inner_tokens(n=12, dim=8, attention=None, ordinals=None, sample=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return InnerTokens(
        hidden=torch.randn(n, dim, generator=gen),
        ordinals=torch.arange(n) if ordinals is None else ordinals,
        attention=attention,
        layer=2,
        sample=sample,
    )


@pytest.mark.parametrize("budget", [1, 4, 11, 12])
def test_fastv_keeps_top_attention_sorted(budget):
    gen = torch.Generator().manual_seed(budget)
    n = 12
    attention = torch.rand(n, generator=gen).softmax(0)
    ordinals = torch.arange(n) * 3 + 7  # survivors of an earlier stage: ordinals are not positions
    keep = FastVPolicy(FastVPolicy.config_cls()).plan(inner_tokens(n, attention=attention, ordinals=ordinals), budget)
    assert_valid_keep(keep.keep, budget, n)
    threshold = attention.sort(descending=True).values[budget - 1]
    assert keep.keep.tolist() == (attention >= threshold).nonzero().squeeze(1).tolist()
    assert FastVPolicy.needs_attention


def test_fastv_ignores_hidden_states():
    attention = torch.tensor([0.05, 0.3, 0.01, 0.2, 0.14, 0.3])
    policy = FastVPolicy(FastVPolicy.config_cls())
    a = policy.plan(inner_tokens(6, attention=attention, seed=0), 3).keep
    b = policy.plan(inner_tokens(6, attention=attention, seed=1), 3).keep
    assert a.tolist() == b.tolist() == [1, 3, 5]


def test_fastv_pin_paper_defaults_hand_derived():
    """FastV (paper: K = 2, R = 50%): at layer K keep the (1 - R) N visual tokens the last query attends to most at
    layer K - 1 (mean over heads), in their original order.

    Two heads' last-query attention over N = 8 visual tokens and their mean, by hand:
        head 0: .02 .20 .05 .10 .01 .30 .02 .05     top-4 alone: 5 1 3 (2|7)
        head 1: .10 .04 .25 .12 .03 .06 .18 .05     top-4 alone: 2 6 3 0
        mean:   .06 .12 .15 .11 .02 .18 .10 .05     top-4: 5 (.18), 2 (.15), 1 (.12), 3 (.11)
    retain_ratio = 1 - R = 0.5 -> budget round(0.5 * 8) = 4 -> keep [1, 2, 3, 5] (ordinals 8, 9, 10, 12).
    """
    assert FastVPolicy.default_layer(28) == 2 and FastVPolicy.needs_attention
    assert FastVPolicy.attention_queries == "last"
    mean = torch.tensor([0.06, 0.12, 0.15, 0.11, 0.02, 0.18, 0.10, 0.05])
    ordinals = torch.arange(8) + 7  # an earlier stage may have shifted them: plans index the tokens given
    tokens = inner_tokens(8, attention=mean, ordinals=ordinals)
    plan = FastVPolicy(FastVPolicy.config_cls()).plan(tokens, config.budget(0.5, 8))
    assert plan.keep.tolist() == [1, 2, 3, 5]
    assert plan.features is None and plan.sizes is None  # pruning only: survivors keep their hidden states
    # a budget cut inside a tie (.11 at 3 and .11 at 6 below) keeps the lower index
    tied = torch.tensor([0.06, 0.12, 0.15, 0.11, 0.02, 0.18, 0.11, 0.05])
    assert FastVPolicy(FastVPolicy.config_cls()).plan(inner_tokens(8, attention=tied), 4).keep.tolist() == [1, 2, 3, 5]


# ---- fixed ------------------------------------------------------------------------------------------------------
def test_fixed_outer_replays_indices_per_sample_and_video():
    grid = Grid(2, 2, 3)  # N = 12
    keep = [[[5, 0, 11], [1, 2, 3]], [[7, 8, 4]]]
    policy = make(FixedOuterPolicy, keep=keep)
    feats = random_video(grid).features
    assert policy.plan(VideoTokens(feats, grid, 0, 0), 3).keep.tolist() == [0, 5, 11]
    assert policy.plan(VideoTokens(feats, grid, 0, 1), 3).keep.tolist() == [1, 2, 3]
    got = policy.plan(VideoTokens(feats, grid, 1, 0), 3).keep
    assert got.dtype == torch.long and got.tolist() == [4, 7, 8]


@pytest.mark.parametrize(
    "indices,budget",
    [
        ([0, 1, 2], 2),  # wrong count
        ([0, 1], 3),  # wrong count
        ([0, 1, 12], 3),  # out of range (N = 12)
        ([-1, 1, 2], 3),  # negative
        ([3, 3, 4], 3),  # duplicate
    ],
)
def test_fixed_outer_rejects_bad_indices(indices, budget):
    grid = Grid(2, 2, 3)
    policy = make(FixedOuterPolicy, keep=[[indices]])
    with pytest.raises(InputError):
        policy.plan(random_video(grid), budget)


def test_fixed_outer_missing_entry_raises():
    grid = Grid(2, 2, 3)
    policy = make(FixedOuterPolicy, keep=[[[0, 1]]])
    with pytest.raises(InputError):
        policy.plan(VideoTokens(random_video(grid).features, grid, sample=1), 2)
    with pytest.raises(InputError):
        policy.plan(VideoTokens(random_video(grid).features, grid, video=1), 2)


def test_fixed_inner_replays_ordinals_as_positions():
    # tokens entering the layer are survivors of an outer stage: ordinals 0, 2, 5, 7, 9, 11
    ordinals = torch.tensor([0, 2, 5, 7, 9, 11])
    policy = make(FixedInnerPolicy, keep=[[11, 5], [0, 2, 7]])
    plan = policy.plan(inner_tokens(6, ordinals=ordinals, sample=0), 2)
    assert plan.keep.dtype == torch.long and plan.keep.tolist() == [2, 5]  # positions, not ordinals
    plan = policy.plan(inner_tokens(6, ordinals=ordinals, sample=1), 3)
    assert plan.keep.tolist() == [0, 1, 3]


def test_fixed_inner_rejects_bad_keep():
    ordinals = torch.tensor([0, 2, 5, 7, 9, 11])
    with pytest.raises(InputError):  # wrong count for the budget
        make(FixedInnerPolicy, keep=[[0, 2, 5]]).plan(inner_tokens(6, ordinals=ordinals), 2)
    with pytest.raises(InputError):  # ordinal 3 was dropped earlier: not among the tokens
        make(FixedInnerPolicy, keep=[[0, 3]]).plan(inner_tokens(6, ordinals=ordinals), 2)
    with pytest.raises(InputError):  # out of range of the original video tokens
        make(FixedInnerPolicy, keep=[[0, 40]]).plan(inner_tokens(6, ordinals=ordinals), 2)
    with pytest.raises(InputError):  # no entry for sample 1
        make(FixedInnerPolicy, keep=[[0, 2]]).plan(inner_tokens(6, ordinals=ordinals, sample=1), 2)


def test_fixed_pin_replays_recorded_features_and_stages():
    """Replay of a recorded merging plan: row i of the given features replaces kept token i (keep sorted, as recorded
    plans are); inner multi-stage: the stage is picked by the layer, and its ordinals map to positions among the
    tokens that entered that layer."""
    grid = Grid(1, 1, 4)
    merged = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    policy = make(FixedOuterPolicy, keep=[[[1, 3]]], features=[[merged]])
    plan = policy.plan(VideoTokens(torch.zeros(4, 2), grid), 2)
    assert plan.keep.tolist() == [1, 3] and torch.equal(plan.features, merged)

    stage2 = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    inner = make(
        FixedInnerPolicy,
        keep=[[[0, 2, 5, 7]], [[7, 2]]],
        features=[[None], [stage2]],
        layers=(2, 5),
        ratios=(0.5, 0.5),
    )
    assert FixedInnerPolicy.schedule(inner.config, 28, 2, 0.25) == [(2, 0.5), (5, 0.5)]
    first = inner.plan(InnerTokens(torch.zeros(8, 2), torch.arange(8), None, layer=2), 4)
    assert first.keep.tolist() == [0, 2, 5, 7] and first.features is None
    # layer 5 sees the survivors, ordinals 0 2 5 7: ordinals 2 and 7 sit at positions 1 and 3; the features were
    # given in keep's order (7 then 2), so position 1 (ordinal 2) gets row 1 and position 3 (ordinal 7) row 0
    second = inner.plan(InnerTokens(torch.zeros(4, 2), torch.tensor([0, 2, 5, 7]), None, layer=5), 2)
    assert second.keep.tolist() == [1, 3] and torch.equal(second.features, stage2[[1, 0]])


def test_fixed_features_follow_their_indices_when_keep_is_unsorted():
    """Row i of ``features`` belongs to ``keep[i]``: keep [5, 0, 11] with rows f5, f0, f11 keeps 0, 5, 11 with rows
    f0, f5, f11."""
    grid = Grid(1, 3, 4)
    rows = torch.tensor([[5.0], [0.0], [11.0]])
    plan = make(FixedOuterPolicy, keep=[[[5, 0, 11]]], features=[[rows]]).plan(
        VideoTokens(torch.zeros(12, 1), grid), 3
    )
    assert plan.keep.tolist() == [0, 5, 11] and plan.features.flatten().tolist() == [0.0, 5.0, 11.0]
    with pytest.raises(InputError, match="rows"):
        make(FixedOuterPolicy, keep=[[[5, 0, 11]]], features=[[rows[:2]]]).plan(
            VideoTokens(torch.zeros(12, 1), grid), 3
        )


# ---- every registered policy ------------------------------------------------------------------------------------
OUTER = [name for name in policy_names("outer") if name != "fixed"]
INNER = [name for name in policy_names("inner") if name != "fixed"]


def check_plan_shape(plan: Plan, budget: int, n: int, dim: int) -> None:
    assert isinstance(plan, Plan)
    assert_valid_keep(plan.keep, budget, n)
    if plan.features is not None:
        assert plan.features.shape == (budget, dim)
    if plan.sizes is not None:
        assert plan.sizes.shape == (budget,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", OUTER)
def test_every_outer_policy_keeps_exact_budget(name, dtype):
    grid = Grid(4, 3, 5)  # N = 60, P = 15; non-square frames catch height / width mix-ups
    n, p = grid.numel, grid.per_frame
    policy = get_policy("outer", name)(get_policy("outer", name).config_cls())
    for budget in sorted({1, 2, p - 1, p, p + 1, n // 3, n // 2, n - 1, n}):
        video = random_video(grid, dim=16, seed=budget, dtype=dtype)
        check_plan_shape(policy.plan(video, budget), budget, n, 16)
    full = policy.plan(random_video(grid, dtype=dtype), n)
    assert full.keep.tolist() == list(range(n))


def random_projections(n: int, gen: torch.Generator, heads: int = 4, kv: int = 2, d: int = 8) -> Projections:
    """Score-layer projections of one sample: a text token, the ``n`` candidates, then 4 question tokens."""
    s = n + 5
    return Projections(
        queries=torch.randn(s, heads, d, generator=gen),
        query_index=torch.arange(s),
        question=torch.arange(s) > n,
        keys=torch.randn(kv, s, d, generator=gen),
        key_valid=torch.ones(s, dtype=torch.bool),
        candidates=torch.arange(1, n + 1),
        scaling=d**-0.5,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", INNER)
def test_every_inner_policy_keeps_exact_budget(name, dtype):
    n, dim = 30, 16
    cls = get_policy("inner", name)
    policy = cls(cls.config_cls())
    for budget in (1, 2, 15, 29, 30):
        gen = torch.Generator().manual_seed(budget)
        tokens = InnerTokens(
            hidden=torch.randn(n, dim, generator=gen).to(dtype),
            ordinals=torch.arange(n),
            attention=torch.rand(n, generator=gen).softmax(0),
            layer=cls.default_layer(28),
            videos=(VideoSlot(0, Grid(5, 2, 3)),),  # 30 tokens: 5 frames of 2 x 3
            projections=random_projections(n, gen) if cls.attention_queries == "projections" else None,
        )
        check_plan_shape(policy.plan(tokens, budget), budget, n, dim)
