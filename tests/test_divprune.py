"""DivPrune (outer): greedy max-min diversity selection under cosine distance, on crafted token sets."""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.divprune import DivPruneConfig, DivPrunePolicy, maxmin_diverse
from tokpress.registry import get_policy


def policy() -> DivPrunePolicy:
    return DivPrunePolicy(DivPruneConfig())


def video_of(x: torch.Tensor) -> VideoTokens:
    return VideoTokens(x, Grid(1, 1, x.shape[0]))


def assert_valid_keep(keep: torch.Tensor, budget: int, n: int) -> None:
    assert keep.dtype == torch.long and keep.dim() == 1 and keep.numel() == budget
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "indices must be sorted and distinct"


def cos_dist(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    x = x / x.norm(dim=-1, keepdim=True)
    return 1 - x @ x.T


def min_pairwise(dist: torch.Tensor, idx: torch.Tensor) -> float:
    sub = dist[idx[:, None], idx[None, :]]
    return float(sub.masked_fill(torch.eye(idx.numel(), dtype=torch.bool), float("inf")).min())


def brute_force_maxmin(dist: torch.Tensor, k: int) -> float:
    """The max-min dispersion optimum over every k-subset."""
    combos = torch.combinations(torch.arange(dist.shape[0]), k)  # [M, k]
    sub = dist[combos[:, :, None], combos[:, None, :]]
    sub = sub.masked_fill(torch.eye(k, dtype=torch.bool), float("inf"))
    return float(sub.amin(dim=(1, 2)).max())


def test_registered():
    assert get_policy("outer", "divprune") is DivPrunePolicy


def test_starts_at_the_most_isolated_token_then_takes_farthest_points():
    # unit vectors at these angles; 1 - cos is increasing in the angle (<= 180 deg), so reason in degrees:
    # nearest-neighbour angles: 0->10, 10->10, 20->10, 100->80 (to 20), 200->100 (to 100): 200 is the most isolated.
    # then the farthest from {200}: 20 (180 deg); then max of min to {200, 20}: 0->20, 10->10, 100->80 => 100;
    # then 0 (min 20) before 10 (min 10).
    angles = torch.tensor([0.0, 10.0, 20.0, 100.0, 200.0]) * math.pi / 180
    x = torch.zeros(5, 8)
    x[:, 0], x[:, 1] = angles.cos(), angles.sin()
    assert maxmin_diverse(x, 5).tolist() == [4, 2, 3, 0, 1]
    expected = {1: [4], 2: [2, 4], 3: [2, 3, 4], 4: [0, 2, 3, 4], 5: [0, 1, 2, 3, 4]}
    for budget, keep in expected.items():
        assert policy().plan(video_of(x), budget).keep.tolist() == keep
    # a start at token 0 would keep {0, 4} for budget 2: the isolation rule is what picks 20 deg
    assert policy().plan(video_of(x), 2).keep.tolist() != [0, 4]


def orthogonal_clusters(sizes: list[int], eps: float = 0.2, dim: int = 64, seed: int = 0):
    """Clusters whose points are ``e_c + eps * u_i`` with all ``e_c`` and ``u_i`` orthonormal: points of different
    clusters are exactly orthogonal (distance 1), points of one cluster at distance ``eps^2 / (1 + eps^2)``.
    Returns the points (rows shuffled) and each row's cluster id."""
    assert len(sizes) + sum(sizes) <= dim
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0].T  # orthonormal rows
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    points = basis[labels] + eps * basis[len(sizes) : len(sizes) + labels.numel()]
    scale = 0.5 + torch.rand(labels.numel(), 1, generator=gen, dtype=torch.float64)  # cosine ignores norms
    perm = torch.randperm(labels.numel(), generator=gen)
    return (points * scale)[perm].float(), labels[perm]


def test_one_token_per_cluster_reaches_the_brute_force_optimum():
    sizes = [3, 5, 1, 4]
    x, labels = orthogonal_clusters(sizes)
    dist = cos_dist(x)
    # budget 1: the singleton cluster's point is the only one whose nearest neighbour is at distance 1
    singleton = int((labels == 2).nonzero())
    assert policy().plan(video_of(x), 1).keep.tolist() == [singleton]
    for k in range(2, len(sizes) + 1):
        keep = policy().plan(video_of(x), k).keep
        assert_valid_keep(keep, k, x.shape[0])
        assert labels[keep].unique().numel() == k, "two picks in one cluster"
        optimum = brute_force_maxmin(dist, k)
        assert optimum == pytest.approx(1.0, abs=1e-6)  # the construction's optimum: any one-per-cluster subset
        assert min_pairwise(dist, keep) == pytest.approx(optimum, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_is_within_half_of_the_optimum_in_chord_distance(seed):
    # 1 - cos = |a^ - b^|^2 / 2 is a squared metric, so the triangle inequality (and the farthest-point greedy's
    # 2-approximation) holds for the chord distance sqrt(2 (1 - cos)). The greedy's choices are invariant under that
    # monotone map, so: chord(greedy) >= chord(optimum) / 2, i.e. (1 - cos)(greedy) >= (1 - cos)(optimum) / 4.
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 4, generator=gen) + 0.8  # a shifted cloud: some pairs are close, some far
    chord = (2 * cos_dist(x)).clamp_min(0).sqrt()
    for k in range(2, 6):
        keep = policy().plan(video_of(x), k).keep
        assert min_pairwise(chord, keep) >= brute_force_maxmin(chord, k) / 2 - 1e-6


@pytest.mark.parametrize("budget", [1, 2, 17, 59, 60])
def test_exact_budget(budget):
    gen = torch.Generator().manual_seed(1)
    video = VideoTokens(torch.randn(60, 16, generator=gen), Grid(3, 4, 5))
    keep = policy().plan(video, budget).keep
    assert_valid_keep(keep, budget, 60)
    if budget == 60:
        assert keep.tolist() == list(range(60))


def test_duplicates_still_give_distinct_indices():
    # three distinct directions, each present twice: after one of each, every remaining token duplicates a pick
    base = torch.eye(3, 8)
    x = base[[0, 1, 2, 0, 1, 2]]
    keep = policy().plan(video_of(x), 5).keep
    assert_valid_keep(keep, 5, 6)
    assert {i % 3 for i in keep.tolist()} == {0, 1, 2}
    picks = maxmin_diverse(x, 3)
    assert sorted(i % 3 for i in picks.tolist()) == [0, 1, 2]  # the first three picks cover the three directions


def test_bf16_input_matches_fp32_of_the_same_values():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 32, generator=gen).to(torch.bfloat16)
    for budget in (1, 7, 40):
        keep = policy().plan(video_of(x), budget).keep
        assert_valid_keep(keep, budget, 40)
        assert torch.equal(keep, policy().plan(video_of(x.float()), budget).keep)


def test_deterministic():
    gen = torch.Generator().manual_seed(3)
    video = video_of(torch.randn(50, 16, generator=gen))
    assert torch.equal(policy().plan(video, 13).keep, policy().plan(video, 13).keep)
