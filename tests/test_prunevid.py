"""PruneVid: outer merging (segments, static/dynamic split, DPC-kNN) and inner per-frame question-attention pruning."""

from __future__ import annotations

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, InnerTokens, VideoSlot, VideoTokens
from tokpress.policies.inner.prunevid import PruneVidInnerConfig, PruneVidInnerPolicy
from tokpress.policies.outer.prunevid import PruneVidConfig, PruneVidPolicy, contiguous_segments, static_scores
from tokpress.registry import get_policy

REGION = [5, 6, 9, 10]  # the changing 2x2 block of a 4x4 frame
STATIC = [p for p in range(16) if p not in REGION]


def outer(**options) -> PruneVidPolicy:
    return PruneVidPolicy(PruneVidConfig(**options))


def inner() -> PruneVidInnerPolicy:
    return PruneVidInnerPolicy(PruneVidInnerConfig())


def frozen_background_video(frames=4, dim=32, seed=0, jitter=0.01, shaky=None):
    """A 4x4 video: a frozen textured background (tiny per-frame jitter) and the 2x2 ``REGION`` redrawn every
    frame. ``shaky``: a background position with a larger jitter (less static, still above tau)."""
    gen = torch.Generator().manual_seed(seed)
    background = torch.randn(16, dim, generator=gen)
    x = background[None] + jitter * torch.randn(frames, 16, dim, generator=gen)
    if shaky is not None:
        x[:, shaky] = background[shaky] + 0.35 * torch.randn(frames, dim, generator=gen)
    x[:, REGION] = torch.randn(frames, len(REGION), dim, generator=gen)
    return VideoTokens(x.reshape(frames * 16, dim), Grid(frames, 4, 4))


def mean_pairwise_cos(tokens: torch.Tensor) -> float:
    """Mean cosine over the ordered pairs of distinct rows (the paper's static test), by brute force."""
    w = tokens.shape[0]
    sims = [torch.cosine_similarity(tokens[i], tokens[j], dim=0) for i in range(w) for j in range(w) if i != j]
    return float(torch.stack(sims).mean())


def assert_valid(plan, budget: int, n: int) -> None:
    keep = plan.keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all())
    assert plan.features.shape[0] == budget and plan.sizes.shape == (budget,)
    assert plan.sizes.sum().item() == pytest.approx(n)


# ---- outer: temporal segments -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("labels", "lengths"),
    [
        ([0, 0, 0, 1, 1, 1], [3, 3]),
        # cluster 0's lone frame 5 loses to its longest run; left (1, length 2) and right (2, length 2) tie -> left
        ([0, 0, 0, 1, 1, 0, 2, 2], [3, 3, 2]),
        # frame 0 has no left neighbour -> joins the right run
        ([0, 1, 1, 0, 0, 0], [3, 3]),
        # only single-frame runs: no cluster survives, everything becomes one segment
        ([0, 1, 2, 3], [4]),
        # sequential relabelling: frames 0-1 join the 2s first, so frame 4 then sees a left run of 4 (> 3 on the right)
        ([0, 1, 2, 2, 3, 4, 4, 4], [5, 3]),
        # a cluster's two longest runs (equal length) both survive as separate segments
        ([0, 0, 1, 1, 0, 0], [2, 2, 2]),
    ],
)
def test_contiguous_segments_follow_the_refinement_rules(labels, lengths):
    assert contiguous_segments(torch.tensor(labels)).tolist() == lengths


def test_static_scores_are_mean_pairwise_cosines_and_one_frame_segments_are_never_static():
    gen = torch.Generator().manual_seed(1)
    frames = torch.randn(4, 3, 8, generator=gen)
    score = static_scores(frames, torch.tensor([3, 1]))
    for p in range(3):
        assert score[0, p].item() == pytest.approx(mean_pairwise_cos(frames[:3, p]), abs=1e-5)
    assert bool((score[1] == float("-inf")).all())


def test_two_scenes_give_two_segments_with_static_tokens_at_each_segments_first_frame():
    gen = torch.Generator().manual_seed(2)
    scenes = torch.randn(2, 16, 32, generator=gen)
    x = scenes.repeat_interleave(4, 0) + 0.01 * torch.randn(8, 16, 32, generator=gen)  # frames 0-3 | 4-7
    video = VideoTokens(x.reshape(128, 32), Grid(8, 4, 4))  # int(8 * 0.25) = 2 frame clusters
    plan = outer().plan(video, 32)  # everything is static: 16 averaged tokens per segment, nothing to cluster
    assert plan.keep.tolist() == list(range(16)) + list(range(64, 80))
    torch.testing.assert_close(plan.features, torch.cat([x[:4].mean(0), x[4:].mean(0)]))
    assert bool((plan.sizes == 4).all())


# ---- outer: static / dynamic split and merging ----------------------------------------------------------------
def test_frozen_background_is_averaged_once_and_the_changing_region_kept_per_frame():
    video = frozen_background_video()
    x = video.features.view(4, 16, -1)
    # after the split: 12 static tokens (averaged over the 4 frames) + 4 dynamic tokens in each frame = 28
    plan = outer().plan(video, 28)
    assert_valid(plan, 28, 64)
    expected = STATIC + [t * 16 + r for t in range(4) for r in REGION]
    assert plan.keep.tolist() == sorted(expected)
    for row, index in enumerate(plan.keep.tolist()):
        t, p = divmod(index, 16)
        if p in STATIC:  # at the segment's first frame, the mean over the segment, standing for 4 tokens
            assert t == 0
            torch.testing.assert_close(plan.features[row], x[:, p].mean(0))
            assert plan.sizes[row].item() == 4
        else:
            torch.testing.assert_close(plan.features[row], x[t, p])
            assert plan.sizes[row].item() == 1


def test_budget_above_the_merged_count_demotes_the_least_static_position():
    video = frozen_background_video(shaky=0)
    x = video.features.view(4, 16, -1)
    sims = {p: mean_pairwise_cos(x[:, p]) for p in STATIC}
    assert 0.8 < sims[0] < min(s for p, s in sims.items() if p != 0)  # the construction: position 0 is least static
    plan = outer().plan(video, 31)  # 28 + 3: one static position of a 4-frame segment becomes 4 dynamic tokens
    expected = STATIC[1:] + [t * 16 + r for t in range(4) for r in [0, *REGION]]
    assert plan.keep.tolist() == sorted(expected)
    assert_valid(plan, 31, 64)


def test_merged_counts_and_cluster_means():
    # background: 6 tight pairs of positions; region: 2 tight pairs per frame, redrawn every frame
    gen = torch.Generator().manual_seed(3)
    dim = 32
    static_pairs = [(0, 1), (2, 3), (4, 7), (8, 11), (12, 13), (14, 15)]
    region_pairs = [(5, 6), (9, 10)]
    x = torch.zeros(4, 16, dim)
    for a, b in static_pairs:
        base = torch.randn(dim, generator=gen)
        x[:, a] = base
        x[:, b] = base + 1e-3 * torch.randn(dim, generator=gen)
    for t in range(4):
        for a, b in region_pairs:
            base = torch.randn(dim, generator=gen)
            x[t, a] = base
            x[t, b] = base + 1e-3 * torch.randn(dim, generator=gen)
    video = VideoTokens(x.reshape(64, dim), Grid(4, 4, 4))
    # groups: 12 static tokens, 4 x 4 dynamic; budget 14 = 5 groups x 1 + 9 shared by (n - 1) = 11:3:3:3:3
    # -> 9 * 11 / 23 = 4.3, 9 * 3 / 23 = 1.2 -> 4 + 1 + 1 + 1 + 1 = 8, the last one to the static group (larger
    # remainder) -> 6 static clusters and 2 per frame
    plan = outer().plan(video, 14)
    assert_valid(plan, 14, 64)
    kept = [divmod(i, 16) for i in plan.keep.tolist()]
    static_rows = [row for row, (t, p) in enumerate(kept) if p in STATIC]
    assert len(static_rows) == 6 and all(kept[row][0] == 0 for row in static_rows)
    for t in range(4):
        assert sum(1 for (tt, p) in kept if tt == t and p in REGION) == 2
    # each cluster is one pair: placed at one of its members, the uniform mean of both, standing for all they cover
    for row, (t, p) in enumerate(kept):
        pairs = static_pairs if p in STATIC else region_pairs
        a, b = next(pair for pair in pairs if p in pair)
        torch.testing.assert_close(plan.features[row], (x[t, a] + x[t, b]) / 2)
        assert plan.sizes[row].item() == (8 if p in STATIC else 2)


def test_full_budget_is_identity_even_with_static_tokens():
    video = frozen_background_video()
    plan = outer().plan(video, 64)
    assert plan.keep.tolist() == list(range(64))
    torch.testing.assert_close(plan.features, video.features)
    assert bool((plan.sizes == 1).all())


@pytest.mark.parametrize("budget", [1, 2, 4, 5, 6, 14, 27, 28, 29, 40, 63, 64])
def test_exact_budget_and_sizes(budget):
    # 5 groups (one static, four dynamic), 28 tokens after the static averaging, N = 64
    plan = outer().plan(frozen_background_video(seed=budget), budget)
    assert_valid(plan, budget, 64)


@pytest.mark.parametrize("budget", [1, 9, 100, 299, 300])
def test_exact_budget_random_video(budget):
    gen = torch.Generator().manual_seed(budget)
    video = VideoTokens(torch.randn(300, 16, generator=gen), Grid(12, 5, 5))
    assert_valid(outer().plan(video, budget), budget, 300)


def test_bf16_is_computed_in_float32_and_matches_the_rounded_fp32_input():
    video = frozen_background_video(seed=4)
    low = VideoTokens(video.features.bfloat16(), video.grid)
    plan = outer().plan(low, 14)
    ref = outer().plan(VideoTokens(low.features.float(), video.grid), 14)
    assert_valid(plan, 14, 64)
    assert plan.features.dtype in (torch.float32, torch.bfloat16)
    assert torch.equal(plan.keep, ref.keep) and torch.equal(plan.sizes, ref.sizes)
    torch.testing.assert_close(plan.features.float(), ref.features)


def test_outer_deterministic():
    video = frozen_background_video(seed=5)
    a, b = outer().plan(video, 17), outer().plan(video, 17)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"tau": 1.5}, "tau"),
        ({"tau": "high"}, "tau"),
        ({"temporal_segment_ratio": 0}, "temporal_segment_ratio"),
        ({"temporal_segment_ratio": 2}, "temporal_segment_ratio"),
        ({"knn_k": 0}, "knn_k"),
        ({"knn_k": 2.5}, "knn_k"),
    ],
)
def test_bad_outer_options(options, name):
    with pytest.raises(ConfigError, match=name):
        PruneVidConfig(**options)


# ---- inner: per-frame pruning by question attention ----------------------------------------------------------
def inner_tokens(attention, ordinals, videos):
    attention = torch.as_tensor(attention, dtype=torch.float32)
    return InnerTokens(
        torch.zeros(attention.numel(), 4), torch.as_tensor(ordinals), attention, layer=11, videos=tuple(videos)
    )


def test_inner_flags_and_default_layer():
    assert get_policy("inner", "prunevid") is PruneVidInnerPolicy
    assert get_policy("outer", "prunevid") is PruneVidPolicy
    assert PruneVidInnerPolicy.needs_attention is True
    assert PruneVidInnerPolicy.attention_queries == "question"
    assert PruneVidInnerPolicy.prune_earlier_kv is True
    # scored at layer 10 of 32 (cut before layer 11), scaled with depth, within [1, L - 1]
    assert PruneVidInnerPolicy.default_layer(32) == 11
    assert PruneVidInnerPolicy.default_layer(28) == 10  # round(8.75) + 1
    assert PruneVidInnerPolicy.default_layer(4) == 2
    assert PruneVidInnerPolicy.default_layer(2) == 1


def test_inner_keeps_the_top_tokens_of_each_frame_not_the_global_top():
    # frame 0 is attended more everywhere: a global top-4 would be all of frame 0
    att = [0.9, 0.8, 0.7, 0.6, 0.1, 0.4, 0.2, 0.3]
    tokens = inner_tokens(att, range(8), [VideoSlot(0, Grid(2, 2, 2))])
    assert inner().plan(tokens, 4).keep.tolist() == [0, 1, 5, 7]


def test_inner_shares_follow_the_tokens_left_in_each_frame():
    # after an outer stage frame 0 still has 6 tokens, frame 1 only 2 -> 3 and 1 of a budget of 4
    ordinals = [0, 1, 2, 3, 4, 5, 9, 12]
    att = [0.1, 0.6, 0.3, 0.9, 0.2, 0.8, 0.05, 0.01]
    tokens = inner_tokens(att, ordinals, [VideoSlot(0, Grid(2, 2, 4))])
    assert inner().plan(tokens, 4).keep.tolist() == [1, 3, 5, 6]


def test_inner_largest_remainder_and_videos_map_to_their_own_frames():
    # two videos: 3 frames of 2 tokens at ordinal 0, then a 1-frame video of 3 tokens at ordinal 6
    videos = [VideoSlot(0, Grid(3, 1, 2)), VideoSlot(6, Grid(1, 1, 3))]
    att = [0.5, 0.6, 0.9, 0.95, 0.99, 0.7, 0.1, 0.3, 0.2]
    tokens = inner_tokens(att, range(9), videos)
    # budget 4: shares 8/9 (x3) and 12/9 -> floors 0 0 0 1, the 3 left over go to the 3 remainders of 8/9
    assert inner().plan(tokens, 4).keep.tolist() == [1, 3, 4, 7]
    # budget 3: shares 6/9 (x3) and 9/9 -> floors 0 0 0 1, 2 left over, tied remainders -> the earlier frames
    assert inner().plan(tokens, 3).keep.tolist() == [1, 3, 7]


@pytest.mark.parametrize("budget", [1, 2, 5, 17, 49, 50])
def test_inner_exact_budget(budget):
    gen = torch.Generator().manual_seed(budget)
    ordinals = torch.randperm(100, generator=gen)[:50].sort().values
    tokens = inner_tokens(torch.rand(50, generator=gen), ordinals, [VideoSlot(0, Grid(4, 5, 5))])
    keep = inner().plan(tokens, budget).keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert bool((keep[1:] > keep[:-1]).all()) and 0 <= int(keep[0]) and int(keep[-1]) < 50


def test_inner_bf16_attention_and_determinism():
    gen = torch.Generator().manual_seed(9)
    att = torch.rand(48, generator=gen)
    videos = [VideoSlot(0, Grid(3, 4, 4))]
    a = inner().plan(inner_tokens(att.bfloat16().float(), range(48), videos), 20).keep
    tokens = inner_tokens(att, range(48), videos)
    tokens.attention = att.bfloat16()
    b = inner().plan(tokens, 20).keep
    assert torch.equal(a, b)
    assert torch.equal(b, inner().plan(tokens, 20).keep)
    assert torch.bincount(b // 16, minlength=3).tolist() == [7, 7, 6]


def test_inner_without_attention_raises():
    tokens = InnerTokens(torch.zeros(4, 2), torch.arange(4), None, layer=3)
    with pytest.raises(InputError, match="attention"):
        inner().plan(tokens, 2)
