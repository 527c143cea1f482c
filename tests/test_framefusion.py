"""FrameFusion: same-position merging across consecutive frames, then attention pruning, on crafted tokens."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, InnerTokens, VideoSlot
from tokpress.policies.inner.framefusion import FrameFusionConfig, FrameFusionPolicy, predecessors
from tokpress.registry import get_policy

DIM = 16
E = torch.eye(DIM)  # orthonormal: distinct basis vectors have cosine 0


def at_cos(c: float, base: int, other: int) -> torch.Tensor:
    """A unit vector whose cosine with ``E[base]`` is exactly ``c``."""
    return c * E[base] + math.sqrt(1 - c * c) * E[other]


def make(hidden, attention, videos, ordinals=None) -> InnerTokens:
    hidden = torch.stack(list(hidden)) if isinstance(hidden, (list, tuple)) else hidden
    n = hidden.shape[0]
    ordinals = torch.arange(n) if ordinals is None else torch.tensor(ordinals)
    return InnerTokens(hidden, ordinals, torch.tensor(attention, dtype=torch.float32), 2, videos=tuple(videos))


def policy(**options) -> FrameFusionPolicy:
    return FrameFusionPolicy(FrameFusionConfig(**options))


def one_video(frames, height, width) -> list[VideoSlot]:
    return [VideoSlot(0, Grid(frames, height, width))]


def test_registered_with_paper_default():
    assert get_policy("inner", "framefusion") is FrameFusionPolicy
    assert FrameFusionPolicy.needs_attention and FrameFusionPolicy.attention_queries == "last"
    assert FrameFusionConfig().similarity_threshold == 0.6


@pytest.mark.parametrize(("num_layers", "expected"), [(28, 2), (32, 2), (64, 5), (80, 6), (4, 1), (2, 1)])
def test_default_layer_is_shallow_and_scaled(num_layers, expected):
    assert FrameFusionPolicy.default_layer(num_layers) == expected


@pytest.mark.parametrize("partner", ["identical", "scaled"])
def test_similar_token_is_merged_into_previous_frame_not_pruned(partner):
    # grid 2 frames x 1 x 3. Token 3 (frame 1, position 0) repeats token 0; everything else is orthogonal.
    x0 = E[0]
    x3 = x0.clone() if partner == "identical" else 2 * E[0] + 0.5 * E[7]  # cosine 0.97
    hidden = [x0, E[1], E[2], x3, E[4], E[5]]
    # token 3 has the MOST attention and token 4 the least: attention pruning alone would keep 3 and drop 4
    attention = [0.15, 0.15, 0.15, 0.30, 0.05, 0.20]
    plan = policy().plan(make(hidden, attention, one_video(2, 1, 3)), 5)
    assert plan.keep.tolist() == [0, 1, 2, 4, 5]
    assert plan.sizes.tolist() == [2, 1, 1, 1, 1]
    assert plan.features.dtype == torch.float32
    torch.testing.assert_close(plan.features[0], (x0 + x3) / 2, rtol=0, atol=1e-6)
    expected_rest = torch.stack([E[1], E[2], E[4], E[5]])
    assert torch.equal(plan.features[1:], expected_rest)  # unmerged tokens pass through unchanged


def test_threshold_separates_merge_from_no_merge():
    # frame 1's position 0 at cosine 0.65 to frame 0 (>= 0.6), position 1 at 0.55 (< 0.6), position 2 at 0
    hidden = [E[0], E[1], E[2], at_cos(0.65, 0, 8), at_cos(0.55, 1, 9), E[10]]
    attention = [0.1, 0.1, 0.1, 0.3, 0.3, 0.1]
    plan = policy().plan(make(hidden, attention, one_video(2, 1, 3)), 4)
    # one merge (3 -> 0) is all that is similar; then the lowest-attention group is pruned. Groups and their mean
    # attention: {0,3} 0.2, {1} 0.1, {2} 0.1, {4} 0.3, {5} 0.1 -> keep {0,3}, {4} and the two earliest 0.1's.
    assert plan.keep.tolist() == [0, 1, 2, 4]
    assert plan.sizes.tolist() == [2, 1, 1, 1]
    # a stricter threshold turns the merge off: pure attention pruning, no replacement features
    strict = policy(similarity_threshold=0.7).plan(make(hidden, attention, one_video(2, 1, 3)), 4)
    assert strict.keep.tolist() == [0, 1, 3, 4]  # ties at 0.1 keep the lower indices
    assert strict.features is None and strict.sizes is None


def test_dissimilar_tokens_are_never_merged():
    hidden = [E[i] for i in range(6)]  # all cosines 0
    attention = [0.3, 0.05, 0.2, 0.1, 0.25, 0.1]
    plan = policy().plan(make(hidden, attention, one_video(2, 1, 3)), 3)
    assert plan.keep.tolist() == [0, 2, 4]
    assert plan.features is None and plan.sizes is None


def test_chain_of_equal_frames_merges_into_the_earliest():
    # 3 frames x 1 x 2. Position 0: x, 2x, 3x (all cosine 1); position 1: orthogonal in every frame.
    hidden = [E[0], E[1], 2 * E[0], E[3], 3 * E[0], E[5]]
    attention = [0.1, 0.1, 0.3, 0.1, 0.3, 0.1]
    plan = policy().plan(make(hidden, attention, one_video(3, 1, 2)), 4)
    assert plan.keep.tolist() == [0, 1, 3, 5]
    assert plan.sizes.tolist() == [3, 1, 1, 1]
    torch.testing.assert_close(plan.features[0], 2 * E[0], rtol=0, atol=1e-6)  # (1 + 2 + 3) / 3


def test_run_starts_after_a_dissimilar_frame():
    # position 0: x, y, 2y -> frame 2 merges into frame 1 (the token before its run), frame 1 stays apart from 0
    hidden = [E[0], E[1], E[6], E[3], 2 * E[6], E[5]]
    attention = [0.2] * 6
    plan = policy().plan(make(hidden, attention, one_video(3, 1, 2)), 5)
    assert plan.keep.tolist() == [0, 1, 2, 3, 5]
    assert plan.sizes.tolist() == [1, 1, 2, 1, 1]
    torch.testing.assert_close(plan.features[2], 1.5 * E[6], rtol=0, atol=1e-6)


def test_merges_most_similar_first_and_never_more_than_needed():
    # frame 1 vs frame 0: position 0 at cosine 0.7, position 1 at 0.99, position 2 at 0 (index order != similarity)
    hidden = [E[0], E[1], E[2], at_cos(0.7, 0, 8), at_cos(0.99, 1, 9), E[10]]
    attention = [0.1, 0.1, 0.1, 0.5, 0.1, 0.1]
    n = len(hidden)
    one = policy().plan(make(hidden, attention, one_video(2, 1, 3)), 5)
    assert one.keep.tolist() == [0, 1, 2, 3, 5]  # only the 0.99 pair; the 0.7 token survives on its own
    assert one.sizes.tolist() == [1, 2, 1, 1, 1] and float(one.sizes.sum()) == n
    assert torch.equal(one.features[3], hidden[3])
    two = policy().plan(make(hidden, attention, one_video(2, 1, 3)), 4)
    assert two.keep.tolist() == [0, 1, 2, 5]
    assert two.sizes.tolist() == [2, 2, 1, 1] and float(two.sizes.sum()) == n  # merging alone met the budget
    torch.testing.assert_close(two.features[0], (hidden[0] + hidden[3]) / 2, rtol=0, atol=1e-6)


def test_pruning_after_merging_ranks_groups_by_mean_attention():
    # 2 frames x 1 x 3; token 3 repeats token 0. Group {0, 3} has mean attention (0.14 + 0.30) / 2 = 0.22.
    hidden = [E[0], E[1], E[2], E[0], E[4], E[5]]
    attention = [0.14, 0.20, 0.12, 0.30, 0.25, 0.21]
    tokens = make(hidden, attention, one_video(2, 1, 3))
    two = policy().plan(tokens, 2)  # groups: {0,3} 0.22, {1} 0.20, {2} 0.12, {4} 0.25, {5} 0.21
    assert two.keep.tolist() == [0, 4]
    assert two.sizes.tolist() == [2, 1]
    assert float(two.sizes.sum()) == 6 - 3  # the pruned groups {1}, {2}, {5} are dropped, not merged
    assert policy().plan(tokens, 1).keep.tolist() == [4]  # 0.25 beats the group's mean 0.22 (not its sum 0.44)


def test_static_video_folds_into_the_first_frame():
    grid = Grid(4, 2, 2)
    frame = torch.randn(grid.per_frame, DIM, generator=torch.Generator().manual_seed(0))
    hidden = frame.repeat(grid.frames, 1)
    attention = torch.linspace(0.1, 1.0, grid.numel).tolist()  # the last frame draws the most attention
    plan = policy().plan(make(hidden, attention, [VideoSlot(0, grid)]), grid.per_frame)
    assert plan.keep.tolist() == [0, 1, 2, 3]
    assert plan.sizes.tolist() == [4, 4, 4, 4]
    torch.testing.assert_close(plan.features, frame, rtol=0, atol=1e-5)


def test_predecessor_skips_frames_an_outer_stage_dropped():
    # grid 3 x 1 x 2 with ordinals 2 (frame 1, pos 0) and 5 (frame 2, pos 1) already gone
    videos = one_video(3, 1, 2)
    assert predecessors(torch.tensor([0, 1, 3, 4]), tuple(videos)).tolist() == [-1, -1, 1, 0]
    hidden = [E[0], E[1], E[9], 2 * E[0]]  # ordinal 4 (frame 2, pos 0) repeats ordinal 0 two frames back
    plan = policy().plan(make(hidden, [0.25] * 4, videos, ordinals=[0, 1, 3, 4]), 3)
    assert plan.keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(plan.features[0], 1.5 * E[0], rtol=0, atol=1e-6)


def test_videos_never_merge_into_each_other_and_extras_never_merge():
    # video 0: 2 x 1 x 2 at ordinals 0..3 plus one protected extra (ordinal 4); video 1: 2 x 1 x 2 at 5..8
    videos = (VideoSlot(0, Grid(2, 1, 2), extra=1), VideoSlot(5, Grid(2, 1, 2)))
    assert predecessors(torch.arange(9), videos).tolist() == [-1, -1, 0, 1, -1, -1, -1, 5, 6]
    # every token identical: only same-video, same-position pairs may merge (ordinals 2, 3, 7, 8)
    hidden = E[0].repeat(9, 1)
    plan = policy().plan(make(hidden, [0.1] * 9, videos), 1)
    assert plan.sizes is not None
    # 4 merges leave 5 groups: {0,2}, {1,3}, {4}, {5,7}, {6,8}; equal mean attention -> the lowest index survives
    assert plan.keep.tolist() == [0] and plan.sizes.tolist() == [2]
    plan5 = policy().plan(make(hidden, [0.1] * 9, videos), 5)
    assert plan5.keep.tolist() == [0, 1, 4, 5, 6]
    assert plan5.sizes.tolist() == [2, 2, 1, 2, 2]


def test_chains_stop_at_the_video_boundary():
    # two one-position videos back to back: video 1's first frame must not continue video 0's chain
    videos = (VideoSlot(0, Grid(2, 1, 1)), VideoSlot(2, Grid(2, 1, 1)))
    assert predecessors(torch.arange(4), videos).tolist() == [-1, 0, -1, 2]
    plan = policy().plan(make(E[0].repeat(4, 1), [0.1, 0.1, 0.1, 0.4], videos), 2)
    assert plan.keep.tolist() == [0, 2] and plan.sizes.tolist() == [2, 2]


def test_without_video_grids_it_only_prunes(caplog):
    hidden = E[0].repeat(6, 1)  # all identical, but no grid says which tokens share a position
    attention = [0.1, 0.3, 0.2, 0.05, 0.25, 0.1]
    p = policy()
    with caplog.at_level(logging.WARNING, logger="tokpress"):
        plan = p.plan(make(hidden, attention, []), 3)
        p.plan(make(hidden, attention, []), 3)
    assert plan.keep.tolist() == [1, 2, 4] and plan.features is None
    assert sum("framefusion" in r.message for r in caplog.records) == 1


def test_needs_attention():
    with pytest.raises(InputError, match="attention"):
        policy().plan(InnerTokens(E[:4], torch.arange(4), None, 2, videos=tuple(one_video(2, 1, 2))), 2)


@pytest.mark.parametrize("bad", [1.5, -1.01, "0.6", True, None])
def test_config_rejects_bad_threshold(bad):
    with pytest.raises(ConfigError, match="similarity_threshold"):
        FrameFusionConfig(similarity_threshold=bad)


def test_bf16_merge_is_a_float32_mean():
    a = torch.randn(DIM, generator=torch.Generator().manual_seed(1)).bfloat16()
    b = (a.float() * 1.37 + 0.01).bfloat16()  # cosine ~1, different values
    hidden = torch.stack([a, E[1].bfloat16(), b, E[3].bfloat16()])
    plan = policy().plan(make(hidden, [0.25] * 4, one_video(2, 1, 2)), 3)
    assert plan.keep.tolist() == [0, 1, 3]
    assert plan.features.dtype == torch.float32
    assert torch.equal(plan.features[0], (a.float() + b.float()) / 2)
    assert torch.equal(plan.features[1], E[1])


def near_static_video(grid: Grid, dtype, seed: int) -> torch.Tensor:
    """Frames that drift slowly (most same-position cosines above 0.6) with a few cuts to new content."""
    gen = torch.Generator().manual_seed(seed)
    frames = [torch.randn(grid.per_frame, DIM, generator=gen)]
    for t in range(1, grid.frames):
        jump = 3.0 if t == grid.frames // 2 else 0.4
        frames.append(frames[-1] + jump * torch.randn(grid.per_frame, DIM, generator=gen))
    return torch.cat(frames).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_budget_across_both_regimes(dtype):
    grid = Grid(6, 2, 3)
    n = grid.numel
    hidden = near_static_video(grid, dtype, seed=0)
    attention = torch.rand(n, generator=torch.Generator().manual_seed(1)).softmax(0).tolist()
    frames = hidden.float().view(grid.frames, grid.per_frame, DIM)
    similar = int((F.cosine_similarity(frames[1:], frames[:-1], dim=-1) >= 0.6).sum())
    assert 0 < similar < n - 1  # both regimes below: merging alone suffices, and merging then pruning
    p = policy()
    switch = n - similar  # below this budget merging alone is not enough and pruning follows
    for b in sorted({1, 2, n // 2, switch - 1, switch, switch + 1, n - 2, n - 1, n}):
        tokens = make(hidden, attention, [VideoSlot(0, grid)])
        plan = p.plan(tokens, b)
        keep = plan.keep
        assert keep.dtype == torch.long and keep.shape == (b,), b
        assert bool((keep[1:] > keep[:-1]).all()) and 0 <= int(keep[0]) and int(keep[-1]) < n
        if b == n:
            assert keep.tolist() == list(range(n)) and plan.features is None
            continue
        assert plan.features.shape == (b, DIM) and plan.sizes.shape == (b,)
        assert bool((plan.sizes >= 1).all())
        merged = min(similar, n - b)
        if merged == n - b:  # merging alone met the budget: every token is accounted for
            assert float(plan.sizes.sum()) == n
        else:  # every similar token merged, then whole groups pruned
            assert b <= float(plan.sizes.sum()) < n
        again = p.plan(make(hidden, attention, [VideoSlot(0, grid)]), b)
        assert torch.equal(keep, again.keep) and torch.equal(plan.features, again.features)
        assert torch.equal(plan.sizes, again.sizes)
