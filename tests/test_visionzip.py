"""VisionZip (outer): dominant tokens by vision attention, contextual tokens = stride target + mean(members)."""

from __future__ import annotations

import pytest
import torch

from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.visionzip import VisionZipConfig, VisionZipPolicy
from tokpress.registry import get_policy


def make(**options) -> VisionZipPolicy:
    return VisionZipPolicy(VisionZipConfig(**options))


def random_video(grid: Grid, dim: int = 16, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(grid.numel, dim, generator=gen).to(dtype)
    attention = torch.rand(grid.numel, generator=gen)
    return VideoTokens(features, grid, attention=attention)


def assert_valid(plan, budget: int, n: int) -> None:
    keep = plan.keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all())
    assert plan.features.shape[0] == budget and plan.sizes.shape == (budget,)
    assert plan.sizes.sum().item() == pytest.approx(n)


def test_registered_with_vision_attention_flag():
    assert get_policy("outer", "visionzip") is VisionZipPolicy
    assert VisionZipPolicy.needs_vision_attention is True


def test_contextual_token_is_target_plus_mean_of_members():
    # one frame of 12 tokens; dominant_ratio 0.5 and budget 6 -> 3 dominant + 3 contextual
    grid = Grid(1, 3, 4)
    attention = torch.full((12,), 0.1)
    attention[[1, 6, 10]] = torch.tensor([0.9, 0.8, 0.7])  # the dominant tokens
    # the 9 others in raster order: 0 2 3 4 5 7 8 9 11; stride 9 // 3 = 3 -> targets 0, 4, 8 (slots 0, 3, 6)
    eye = torch.eye(6)
    x = torch.zeros(12, 6)
    x[[1, 6, 10]] = eye[[3, 4, 5]] * 5
    x[0], x[4], x[8] = eye[0], eye[1], eye[2]
    # members: each close to one target's direction
    x[2] = eye[0] * 2 + 0.1 * eye[1]
    x[9] = eye[0] * 3 + 0.2 * eye[2]
    x[11] = eye[0] + 0.1 * eye[3]
    x[5] = eye[1] * 4 + 0.3 * eye[0]
    x[7] = eye[1] + 0.2 * eye[5]
    x[3] = eye[2] * 2 - 0.1 * eye[4]
    plan = make(dominant_ratio=0.5).plan(VideoTokens(x, grid, attention=attention), 6)
    assert_valid(plan, 6, 12)
    assert plan.keep.tolist() == [0, 1, 4, 6, 8, 10]
    expected = {
        0: x[0] + x[[2, 9, 11]].mean(0),  # a sum: the target is not averaged in
        4: x[4] + x[[5, 7]].mean(0),
        8: x[8] + x[3],
        1: x[1],
        6: x[6],
        10: x[10],
    }
    sizes = {0: 4, 4: 3, 8: 2, 1: 1, 6: 1, 10: 1}
    for row, index in enumerate(plan.keep.tolist()):
        torch.testing.assert_close(plan.features[row], expected[index])
        assert plan.sizes[row].item() == sizes[index]


def test_target_without_members_stays_unchanged():
    grid = Grid(1, 1, 4)
    attention = torch.tensor([0.0, 1.0, 0.0, 0.0])
    x = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0], [0.9, 0.1]])
    # ratio 0.5, budget 3 -> 1 dominant (token 1) + 2 contextual: rest 0 2 3, stride 1 -> targets 0 and 2;
    # token 3 is closest to target 0, target 2 gets nobody
    plan = make(dominant_ratio=0.5).plan(VideoTokens(x, grid, attention=attention), 3)
    assert plan.keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(plan.features, torch.stack([x[0] + x[3], x[1], x[2]]))
    assert plan.sizes.tolist() == [2.0, 1.0, 1.0]


def test_paper_split_54_dominant_10_contextual_per_frame():
    # two 14x14 frames, 64 tokens each: the 54 most-attended of each frame, plus 10 targets strided by
    # (196 - 54) // 10 = 14 through the frame's other tokens in raster order
    grid = Grid(2, 14, 14)
    video = random_video(grid, seed=3)
    plan = make().plan(video, 128)
    assert_valid(plan, 128, grid.numel)
    expected = []
    for t in range(2):
        att = video.attention[t * 196 : (t + 1) * 196]
        top = torch.sort(att, descending=True, stable=True).indices[:54]
        rest = torch.tensor(sorted(set(range(196)) - set(top.tolist())))
        expected += (top + t * 196).tolist() + (rest[torch.arange(10) * 14] + t * 196).tolist()
    assert plan.keep.tolist() == sorted(expected)
    dominant = torch.isin(plan.keep, torch.tensor(expected[:54] + expected[64:118]))
    assert int(dominant.sum()) == 108
    assert bool((plan.sizes[dominant] == 1).all())
    # the dominant tokens pass through unchanged
    torch.testing.assert_close(plan.features[dominant], video.features[plan.keep[dominant]])


def test_dominant_tokens_are_the_top_attention_per_frame_not_globally():
    # frame 0's attention is higher everywhere; each frame still gets its own 27 dominant tokens (budget 32 each)
    grid = Grid(2, 8, 8)
    video = random_video(grid, seed=4)
    video.attention[:64] += 10
    plan = make().plan(video, 64)
    per_frame = torch.bincount(plan.keep // 64, minlength=2).tolist()
    assert per_frame == [32, 32]
    for t in range(2):
        top = torch.sort(video.attention[t * 64 : (t + 1) * 64], descending=True, stable=True).indices[:27]
        assert bool(torch.isin(top + t * 64, plan.keep).all())


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5, 7, 50, 127, 191, 192])
def test_exact_budget_and_sizes(budget):
    grid = Grid(4, 6, 8)  # N = 192, T = 4
    plan = make().plan(random_video(grid, seed=budget), budget)
    assert_valid(plan, budget, grid.numel)


def test_below_one_token_per_frame_each_chunk_of_frames_becomes_one_contextual_token():
    grid = Grid(4, 2, 3)
    video = random_video(grid, seed=5)
    x = video.features
    plan = make().plan(video, 2)  # chunks: frames {0, 1} and {2, 3}; target = the chunk's first token
    assert plan.keep.tolist() == [0, 12]
    torch.testing.assert_close(plan.features, torch.stack([x[0] + x[1:12].mean(0), x[12] + x[13:24].mean(0)]))
    assert plan.sizes.tolist() == [12.0, 12.0]


def test_full_budget_is_identity():
    grid = Grid(3, 4, 4)
    video = random_video(grid, seed=6)
    plan = make().plan(video, grid.numel)
    assert plan.keep.tolist() == list(range(grid.numel))
    torch.testing.assert_close(plan.features, video.features)
    assert bool((plan.sizes == 1).all())


def test_bf16_is_computed_in_float32_and_matches_the_rounded_fp32_input():
    grid = Grid(3, 6, 6)
    video = random_video(grid, seed=7, dtype=torch.bfloat16)
    plan = make().plan(video, 30)
    assert_valid(plan, 30, grid.numel)
    assert plan.features.dtype in (torch.float32, torch.bfloat16)
    ref = make().plan(VideoTokens(video.features.float(), grid, attention=video.attention), 30)
    assert torch.equal(plan.keep, ref.keep)
    torch.testing.assert_close(plan.features.float(), ref.features)
    assert torch.equal(plan.sizes, ref.sizes)


def test_deterministic():
    grid = Grid(4, 5, 5)
    video = random_video(grid, seed=8)
    video.attention[:] = 0.5  # all tied: stable order decides
    a, b = make().plan(video, 37), make().plan(video, 37)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)


def test_missing_attention_raises_a_clear_error():
    grid = Grid(2, 2, 2)
    with pytest.raises(InputError, match="attention"):
        make().plan(VideoTokens(torch.randn(8, 4), grid), 4)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "half", True])
def test_bad_dominant_ratio(ratio):
    with pytest.raises(ConfigError, match="dominant_ratio"):
        VisionZipConfig(dominant_ratio=ratio)
