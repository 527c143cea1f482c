"""HoliTom (outer: DP temporal segmentation, static DPC-kNN beta-merge, dynamic attention top-k; inner: merge into
the most similar kept token) on crafted tensors. Expectations are derived from the algorithm by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.ops import apportion
from tokpress.policies.base import Grid, InnerTokens, VideoTokens
from tokpress.policies.inner.holitom import HoliTomInnerPolicy
from tokpress.policies.outer.holitom import HoliTomConfig, HoliTomOuterPolicy, segment_frames
from tokpress.registry import get_policy


def outer(**options) -> HoliTomOuterPolicy:
    return HoliTomOuterPolicy(HoliTomConfig(**options))


def inner() -> HoliTomInnerPolicy:
    return HoliTomInnerPolicy(HoliTomInnerPolicy.config_cls())


def assert_valid_keep(keep: torch.Tensor, budget: int, n: int) -> None:
    assert keep.dtype == torch.long and keep.dim() == 1 and keep.numel() == budget, (keep.dtype, keep.shape, budget)
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "indices must be sorted and distinct"


# ---- the DP segmentation ------------------------------------------------------------------------------------------
def partition_value(segments, static: torch.Tensor) -> int:
    """Tokens saved: for each segment, (length - 1) x positions whose every pair inside the segment is static."""
    total = 0
    for first, last in segments:
        for p in range(static.shape[1]):
            if all(bool(static[t, p]) for t in range(first, last)):
                total += last - first
    return total


def brute_force_best(static: torch.Tensor, max_window: int) -> int:
    frames = static.shape[0] + 1
    best = 0
    for cuts in itertools.product([False, True], repeat=frames - 1):  # cut after frame i
        segments, first = [], 0
        for i, cut in enumerate(cuts):
            if cut:
                segments.append((first, i))
                first = i + 1
        segments.append((first, frames - 1))
        if all(last - first + 1 <= max_window for first, last in segments):
            best = max(best, partition_value(segments, static))
    return best


@pytest.mark.parametrize("frames", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("max_window", [1, 2, 3, 1024])
def test_segment_frames_is_optimal_against_brute_force(frames, max_window):
    for seed in range(6):
        gen = torch.Generator().manual_seed(100 * frames + seed)
        density = (0.5, 0.7, 0.9)[seed % 3]
        static = torch.rand(frames - 1, 4, generator=gen) < density
        sim = torch.where(static, 0.95, 0.3)
        segments = segment_frames(sim, 0.8, max_window)
        # a partition of 0 .. T-1 into contiguous segments within the window limit
        assert segments[0][0] == 0 and segments[-1][1] == frames - 1
        assert all(b[0] == a[1] + 1 for a, b in zip(segments, segments[1:]))
        assert all(0 <= last - first < max_window for first, last in segments)
        assert partition_value(segments, static) == brute_force_best(static, max_window), (static.int(), segments)


def test_segment_frames_frozen_video_is_one_segment_and_window_limit_splits_it():
    sim = torch.full((5, 3), 0.99)  # 6 identical frames
    assert segment_frames(sim, 0.8, 1024) == [(0, 5)]
    assert segment_frames(sim, 0.8, 3) in ([(0, 2), (3, 5)],)  # 2 x 2 x 3 = 12 beats any other split
    assert segment_frames(sim, 0.8, 1) == [(t, t) for t in range(6)]


def test_segment_frames_threshold_is_strict_and_ties_prefer_single_frames():
    # similarity exactly tau is not static: nothing to gain, every frame alone (ties go to the single frame)
    assert segment_frames(torch.full((3, 4), 0.8), 0.8, 1024) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    # a static block in frames 1..3 only at one position; frame 0 and 4 differ everywhere
    sim = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.1]])
    assert segment_frames(sim, 0.8, 1024) == [(0, 0), (1, 3), (4, 4)]


# ---- outer: static merge and dynamic attention ----------------------------------------------------------------------
DIM = 64


def frozen_then_moving(seed: int = 0):
    """Frames 0-3 show the same 2 x 3 picture up to noise far below tau; frames 4 and 5 are new random content.

    The 6 static positions form two clusters in feature space, each on a line (distances in DPC-kNN units):
    positions 0, 1, 2 at -0.05, 0, +0.06 around ``a`` and 3, 4, 5 at -0.1, 0, +0.12 around ``b``.
    """
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(6, 2, 3)
    a, b = torch.randn(DIM, generator=gen), torch.randn(DIM, generator=gen)
    q = torch.linalg.qr(torch.randn(DIM, 4, generator=gen)).Q.T * math.sqrt(DIM)  # orthogonal, |q|/sqrt(D) = 1
    picture = torch.stack([a - 0.05 * q[0], a, a + 0.06 * q[0], b - 0.1 * q[2], b, b + 0.12 * q[2]])
    still = picture[None] + 0.002 * torch.randn(4, 6, DIM, generator=gen)
    moving = torch.randn(2, 6, DIM, generator=gen)
    features = torch.cat([still, moving]).reshape(grid.numel, DIM)
    attention = torch.cat(
        [
            torch.full((4, 6), 10.0),  # static tokens get the most attention: it must not matter for them
            torch.tensor([[0.6, 0.9, 0.55, 0.8, 0.7, 0.5], [0.3, 0.1, 0.0, 0.05, 0.2, 0.15]]),
        ]
    ).flatten()
    return VideoTokens(features, grid, attention=attention)


def test_frozen_segment_becomes_one_averaged_token_per_position_at_first_frame():
    video = frozen_then_moving()
    # M - R = 6 static means + 2 x 6 dynamic tokens = 18: nothing is clustered or pruned
    plan = outer().plan(video, 18)
    assert plan.keep.tolist() == list(range(6)) + list(range(24, 36))
    means = video.features[:24].reshape(4, 6, DIM).mean(0)
    torch.testing.assert_close(plan.features[:6], means, rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.features[6:], video.features[24:], rtol=0, atol=0)
    assert plan.sizes.tolist() == [4.0] * 6 + [1.0] * 12


@pytest.mark.parametrize("beta", [0.6, 0.0, 1.0])
def test_static_tokens_dpc_centers_with_beta_merge_and_dynamic_top_attention_per_frame(beta):
    """Groups: static means (6), frame 4 (6), frame 5 (6); budget 9 -> r' = 9 / 18 -> 3 tokens each.

    Static means, DPC-kNN with k = min(K = 7, 3 centers) = 3 — the point itself and its 2 nearest (the reference's
    rule); mean squared distances: 1: (.05^2 + .06^2) / 3 = .0020, 0: (.05^2 + .11^2) / 3 = .0049, 2: (.06^2 +
    .11^2) / 3 = .0052, 4: (.1^2 + .12^2) / 3 = .0081, 3: (.1^2 + .22^2) / 3 = .0195, 5: (.12^2 + .22^2) / 3 = .0209,
    so densities rank 1 > 0 > 2 > 4 > 3 > 5. delta: 1 -> the largest distance (between the clusters, ~1.4), 4 -> a
    point of cluster a (~1.4), 0 -> .05, 2 -> .06, 3 -> .1, 5 -> .12. Scores density x delta: 1 and 4 lead, then
    5 (.98 x .12 = .118) before 3 (.98 x .1 = .098), 2 (.060) and 0 (.050): centers 1, 4, 5. 0 and 2 join 1, 3 joins 4
    (.1 against .22 to 5), 5 absorbs nothing.
    Dynamic: frame 4 keeps its 3 most attended positions 1, 3, 4 (.9, .8, .7), frame 5 keeps 0, 4, 5 (.3, .2, .15),
    although every frame-4 token outscores every frame-5 token: the selection is per frame.
    """
    video = frozen_then_moving()
    plan = outer(beta=beta).plan(video, 9)
    assert plan.keep.tolist() == [1, 4, 5, 24 + 1, 24 + 3, 24 + 4, 30 + 0, 30 + 4, 30 + 5]
    m = video.features[:24].reshape(4, 6, DIM).mean(0)
    expected_a = beta * m[1] + (1 - beta) * (m[0] + m[2]) / 2
    expected_b = beta * m[4] + (1 - beta) * m[3]
    torch.testing.assert_close(plan.features[0], expected_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(plan.features[1], expected_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(plan.features[2], m[5], rtol=0, atol=1e-5)  # a center alone is kept as is
    torch.testing.assert_close(plan.features[3:], video.features[plan.keep[3:]], rtol=0, atol=0)
    # each center stands for its positions over 4 frames; the dropped dynamic tokens are represented nowhere
    assert plan.sizes.tolist() == [12.0, 8.0, 4.0] + [1.0] * 6


def test_dynamic_tokens_follow_attention_not_features():
    gen = torch.Generator().manual_seed(3)
    grid = Grid(3, 2, 4)
    features = torch.randn(grid.numel, DIM, generator=gen)  # every frame new: no static token anywhere
    attention = torch.rand(grid.numel, generator=gen)
    expected = []
    for t in range(3):
        top = attention[t * 8 : (t + 1) * 8].argsort(descending=True)[:3]
        expected += (t * 8 + top).tolist()
    plan = outer().plan(VideoTokens(features, grid, attention=attention), 9)
    assert plan.keep.tolist() == sorted(expected)
    # same attention, other features: same selection
    other = outer().plan(VideoTokens(torch.randn(grid.numel, DIM, generator=gen), grid, attention=attention), 9)
    assert other.keep.tolist() == plan.keep.tolist()


def half_static_video(seed: int = 0):
    """4 frames of 2 x 4 tokens: positions 0-3 frozen (static), positions 4-7 new in every frame (dynamic)."""
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(4, 2, 4)
    x = torch.randn(4, 8, DIM, generator=gen)
    x[:, :4] = torch.randn(4, DIM, generator=gen) + 0.001 * torch.randn(4, 4, DIM, generator=gen)
    return VideoTokens(x.reshape(grid.numel, DIM), grid, attention=torch.rand(grid.numel, generator=gen))


def test_ratio_is_retargeted_over_the_tokens_left_after_temporal_merging():
    # N = 32, R = 4 static positions x 3 = 12, M - R = 20. budget 10 = r N with r = 0.3125 -> r' = 10 / 20 = 0.5:
    # 2 of the 4 static means and 2 of the 4 dynamic tokens of every frame (not r = 0.3125 of each group).
    plan = outer().plan(half_static_video(), 10)
    keep = plan.keep
    frame, pos = keep // 8, keep % 8
    static_kept = pos < 4
    assert int(static_kept.sum()) == 2 and bool((frame[static_kept] == 0).all())
    assert torch.bincount(frame[~static_kept], minlength=4).tolist() == [2, 2, 2, 2]
    assert sorted(plan.sizes[static_kept].tolist()) in ([4.0, 12.0], [8.0, 8.0])  # 4 means x 4 frames in 2 clusters


def test_budget_above_temporal_merge_splits_static_runs_into_even_chunks():
    gen = torch.Generator().manual_seed(4)
    grid = Grid(4, 2, 2)
    x = torch.randn(4, DIM, generator=gen)[None] + 0.001 * torch.randn(4, 4, DIM, generator=gen)
    video = VideoTokens(x.reshape(grid.numel, DIM), grid, attention=torch.rand(grid.numel, generator=gen))
    policy = outer()
    # M - R = 4 (one mean per position); 8 = 4 extra over 4 runs of weight 3 -> each run in 2 chunks: frames 0-1, 2-3
    plan = policy.plan(video, 8)
    assert plan.keep.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    torch.testing.assert_close(plan.features[:4], x[0:2].mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.features[4:], x[2:4].mean(0), rtol=0, atol=1e-6)
    assert plan.sizes.tolist() == [2.0] * 8
    # 6 = 2 extra: remainders tie, so the two earliest runs (positions 0, 1) are split, positions 2, 3 stay whole
    plan = policy.plan(video, 6)
    assert plan.keep.tolist() == [0, 1, 2, 3, 8, 9]
    assert plan.sizes.tolist() == [2.0, 2.0, 4.0, 4.0, 2.0, 2.0]
    torch.testing.assert_close(plan.features[2], x[:, 2].mean(0), rtol=0, atol=1e-6)
    # N: everything, untouched
    plan = policy.plan(video, 16)
    assert plan.keep.tolist() == list(range(16)) and plan.features is None


def test_position_static_over_only_part_of_a_segment_stays_dynamic():
    # 3 frames of 1 x 3: positions 0, 1 frozen; position 2 agrees between frames 0-1 only. One segment [0, 2] saves
    # 2 x 2 = 4 tokens (beats [0, 1] + [2]: 3), and position 2 is not static over the whole segment: 3 dynamic tokens.
    gen = torch.Generator().manual_seed(9)
    grid = Grid(3, 1, 3)
    x = torch.randn(3, DIM, generator=gen)[None].repeat(3, 1, 1)
    x[2, 2] = torch.randn(DIM, generator=gen)
    assert segment_frames(torch.nn.functional.cosine_similarity(x[1:], x[:-1], dim=-1), 0.8) == [(0, 2)]
    plan = outer().plan(VideoTokens(x.reshape(grid.numel, DIM), grid, attention=torch.ones(grid.numel)), 5)
    assert plan.keep.tolist() == [0, 1, 2, 5, 8]
    assert plan.sizes.tolist() == [3.0, 3.0, 1.0, 1.0, 1.0]


def test_apportion_is_exact_largest_remainder():
    # 4 over weights 5, 3, 2: ideal 2, 1.2, 0.8 -> floors 2, 1, 0 and the leftover token to the largest remainder
    assert apportion(4, torch.tensor([5, 3, 2])).tolist() == [2, 1, 1]
    # equal remainders: the earlier groups first
    assert apportion(2, torch.tensor([1, 1, 1, 1])).tolist() == [1, 1, 0, 0]
    assert apportion(3, torch.tensor([0, 4, 0])).tolist() == [0, 3, 0]


def test_groups_share_the_budget_by_largest_remainder():
    # frames 0-1 agree at positions 0, 1 (static), positions 2, 3 change; frame 2 is all new.
    # groups (time order): static means 2, frame 0 dynamic 2, frame 1 dynamic 2, frame 2 dynamic 4; M - R = 10.
    # budget 3: ideal 0.6, 0.6, 0.6, 1.2 -> floors 0, 0, 0, 1; the two leftover tokens go to the largest
    # remainders (0.6), ties to the earlier groups: the static group and frame 0. Frame 1 gets nothing.
    gen = torch.Generator().manual_seed(10)
    grid = Grid(3, 2, 2)
    x = torch.randn(3, 4, DIM, generator=gen)
    x[1, :2] = x[0, :2]
    attention = torch.tensor([0.0, 0.0, 0.2, 0.9, 0.0, 0.0, 0.8, 0.1, 0.3, 0.4, 0.6, 0.5])
    plan = outer().plan(VideoTokens(x.reshape(grid.numel, DIM), grid, attention=attention), 3)
    assert len(plan.keep) == 3 and int(plan.keep[0]) in (0, 1)  # the static center, at frame 0
    assert plan.keep[1:].tolist() == [3, 10]  # top attention of frame 0's dynamic tokens and of frame 2
    assert plan.sizes.tolist() == [4.0, 1.0, 1.0]


def moving_square_video(dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(6, 3, 4)
    x = torch.randn(3, 4, DIM, generator=gen)[None].repeat(6, 1, 1, 1) + 0.01 * torch.randn(
        6, 3, 4, DIM, generator=gen
    )
    square = torch.randn(DIM, generator=gen)
    for t in range(6):
        x[t, 1, t % 3 : t % 3 + 2] = square + torch.randn(DIM, generator=gen)
    return VideoTokens(x.reshape(grid.numel, DIM).to(dtype), grid, attention=torch.rand(grid.numel, generator=gen))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outer_exact_budget_for_every_budget(dtype):
    video = moving_square_video(dtype)
    n = video.grid.numel
    policy = outer()
    for budget in sorted({1, 2, 11, 12, 13, 30, 40, 50, 60, n - 1, n, *range(3, n, 7)}):
        plan = policy.plan(video, budget)
        assert_valid_keep(plan.keep, budget, n)
        if budget == n:
            assert plan.features is None
            continue
        assert plan.features.shape == (budget, DIM) and plan.features.dtype in (torch.float32, dtype)
        assert bool(torch.isfinite(plan.features).all())
        assert plan.sizes.shape == (budget,) and bool((plan.sizes >= 1).all())
        assert float(plan.sizes.sum()) <= n


def test_outer_sizes_cover_every_token_exactly_when_nothing_is_pruned():
    # half_static_video: M - R = 20. Below 20 tokens some dynamic tokens are pruned (represented by nothing);
    # from 20 on every original token is inside exactly one kept token.
    video = half_static_video()
    policy = outer()
    for budget in range(1, 32):
        total = float(policy.plan(video, budget).sizes.sum())
        assert (total == 32) == (budget >= 20), (budget, total)
        assert total <= 32


def test_outer_bf16_equals_fp32_on_the_same_values_and_is_deterministic():
    video = moving_square_video(torch.bfloat16)
    as_fp32 = VideoTokens(video.features.float(), video.grid, attention=video.attention)
    for budget in (1, 7, 20, 50):
        a, b, c = (outer().plan(v, budget) for v in (video, as_fp32, video))
        assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)
        assert torch.equal(a.keep, c.keep) and torch.equal(a.features, c.features)


def test_outer_without_vision_attention_names_the_fix():
    video = moving_square_video()
    with pytest.raises(InputError, match="needs_vision_attention"):
        outer().plan(VideoTokens(video.features, video.grid), 10)


@pytest.mark.parametrize(
    "options, bad",
    [
        ({"tau": 1.5}, "1.5"),
        ({"beta": -0.1}, "-0.1"),
        ({"k": 0}, "0"),
        ({"k": True}, "True"),
        ({"max_window": 0}, "0"),
        ({"tau": "0.8"}, "'0.8'"),
    ],
)
def test_outer_config_rejects_bad_values(options, bad):
    with pytest.raises(ConfigError, match=f"{next(iter(options))} .*{bad}"):
        HoliTomConfig(**options)


def test_registered_with_the_flags_the_engine_reads():
    assert get_policy("outer", "holitom") is HoliTomOuterPolicy
    assert get_policy("inner", "holitom") is HoliTomInnerPolicy
    assert HoliTomOuterPolicy.needs_vision_attention
    assert HoliTomInnerPolicy.needs_attention and HoliTomInnerPolicy.attention_queries == "last"
    assert HoliTomConfig() == HoliTomConfig(tau=0.8, beta=0.6, k=7, max_window=1024)


# ---- inner --------------------------------------------------------------------------------------------------------
def test_inner_keeps_top_attention_and_merges_into_the_most_cosine_similar_kept_token():
    e = torch.eye(4)
    hidden = torch.stack(
        [
            e[1] + 0.6 * e[0],  # 0 -> cos 0.86 with token 4, 0.51 with token 6 (dot product would pick 6)
            e[2],  # 1 kept
            e[2] + 0.2 * e[3],  # 2 -> 1
            e[1] - 0.3 * e[3],  # 3 -> 4
            e[1],  # 4 kept
            10 * e[0] + e[3],  # 5 -> 6
            10 * e[0],  # 6 kept (large norm)
            3 * e[1] + e[2],  # 7 -> 4
        ]
    )
    attention = torch.tensor([0.05, 0.2, 0.1, 0.1, 0.3, 0.05, 0.15, 0.05])
    plan = inner().plan(InnerTokens(hidden, torch.arange(8), attention, layer=18), 3)
    assert plan.keep.tolist() == [1, 4, 6]
    assert plan.sizes.tolist() == [2.0, 4.0, 2.0]
    # a plain mean of each group (not the reference's sequential pairwise halving)
    torch.testing.assert_close(plan.features[0], hidden[[1, 2]].mean(0))
    torch.testing.assert_close(plan.features[1], hidden[[4, 0, 3, 7]].mean(0))
    torch.testing.assert_close(plan.features[2], hidden[[6, 5]].mean(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inner_exact_budget_and_mass_preserved(dtype):
    n, dim = 40, 16
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(n, dim, generator=gen).to(dtype)
    attention = torch.rand(n, generator=gen)
    tokens = InnerTokens(hidden, torch.arange(n) * 3, attention, layer=2)
    for budget in (1, 2, 13, 20, 39, 40):
        plan = inner().plan(tokens, budget)
        assert_valid_keep(plan.keep, budget, n)
        assert plan.keep.tolist() == attention.argsort(descending=True)[:budget].sort().values.tolist()
        if budget == n:
            assert plan.features is None
            continue
        assert plan.features.shape == (budget, dim) and plan.sizes.shape == (budget,)
        assert float(plan.sizes.sum()) == n and bool((plan.sizes >= 1).all())
        # size-weighted mean: sum of size x feature equals the total mass of the tokens given
        torch.testing.assert_close((plan.sizes[:, None] * plan.features).sum(0), hidden.float().sum(0))
        again = inner().plan(tokens, budget)
        assert torch.equal(again.keep, plan.keep) and torch.equal(again.features, plan.features)


def test_inner_bf16_equals_fp32_on_the_same_values():
    gen = torch.Generator().manual_seed(8)
    hidden = torch.randn(30, 16, generator=gen).bfloat16()
    attention = torch.rand(30, generator=gen)
    a = inner().plan(InnerTokens(hidden, torch.arange(30), attention, layer=2), 11)
    b = inner().plan(InnerTokens(hidden.float(), torch.arange(30), attention, layer=2), 11)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)


def test_inner_without_attention_names_the_fix():
    with pytest.raises(InputError, match="needs_attention"):
        inner().plan(InnerTokens(torch.randn(5, 4), torch.arange(5), None, layer=2), 2)


@pytest.mark.parametrize("layers, expected", [(28, 18), (32, 21), (24, 15), (14, 9), (7, 5), (4, 3), (3, 2), (2, 1)])
def test_inner_default_layer_scales_18_of_28(layers, expected):
    # 18 * 7 / 28 = 4.5 rounds half up to 5
    assert HoliTomInnerPolicy.default_layer(layers) == expected
