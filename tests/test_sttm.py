"""STTM (inner): quadtree spatial merging + temporal merging of nested cells, at an exact budget, on crafted tokens."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from tokpress.errors import ConfigError, InputError
from tokpress.ops import connected_components
from tokpress.policies.base import Grid, InnerTokens, VideoSlot
from tokpress.policies.inner.sttm import (
    STTMConfig,
    STTMPolicy,
    _halve,
    level_sizes,
    root_index,
    spanning_forest,
    split_budget,
)
from tokpress.registry import get_policy

DIM = 40
E = torch.eye(DIM)  # orthonormal: distinct basis vectors have cosine 0


def make(hidden, videos, ordinals=None, sizes=None) -> InnerTokens:
    hidden = torch.stack(list(hidden)) if isinstance(hidden, (list, tuple)) else hidden
    n = hidden.shape[0]
    ordinals = torch.arange(n) if ordinals is None else torch.as_tensor(ordinals)
    return InnerTokens(hidden, ordinals, None, 2, videos=tuple(videos), sizes=sizes)


def policy(**options) -> STTMPolicy:
    return STTMPolicy(STTMConfig(**options))


def one_video(frames, height, width) -> list[VideoSlot]:
    return [VideoSlot(0, Grid(frames, height, width))]


def check(plan, n: int, budget: int, total: float | None = None) -> None:
    """The contract: exactly ``budget`` sorted distinct long indices; features and sizes for every kept token."""
    assert plan.keep.dtype == torch.long and plan.keep.numel() == budget
    assert bool((plan.keep[1:] > plan.keep[:-1]).all()) and 0 <= int(plan.keep[0]) and int(plan.keep[-1]) < n
    assert plan.features is not None and plan.features.shape[0] == budget
    assert plan.sizes is not None and plan.sizes.shape == (budget,)
    if total is not None:
        assert float(plan.sizes.sum()) == pytest.approx(total)


# ---- registration, config, geometry ------------------------------------------------------------------------------


def test_registered_query_agnostic_with_paper_defaults():
    assert get_policy("inner", "sttm") is STTMPolicy
    assert not STTMPolicy.needs_attention
    c = STTMConfig()
    assert (c.threshold_gap, c.root_level, c.best_match_only, c.head_dim) == (0.30, 1, False, 0)


@pytest.mark.parametrize(("num_layers", "expected"), [(28, 2), (32, 2), (80, 2), (3, 2), (2, 1)])
def test_default_layer_is_the_papers_layer_2(num_layers, expected):
    assert STTMPolicy.default_layer(num_layers) == expected


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(threshold_gap=2.5), "threshold_gap"),
        (dict(threshold_gap="0.3"), "threshold_gap"),
        (dict(root_level=-1), "root_level"),
        (dict(root_level=1.0), "root_level"),
        (dict(best_match_only=1), "best_match_only"),
        (dict(head_dim=-4), "head_dim"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ConfigError, match=match):
        STTMConfig(**options)


def test_pyramid_geometry_follows_the_reference_pooling():
    # a side halves to ceil(s / 2); odd sides keep row 0 alone and pair the rest
    assert level_sizes(14, 14) == [(14, 14), (7, 7), (4, 4), (2, 2), (1, 1)]
    assert level_sizes(12, 21) == [(12, 21), (6, 11), (3, 6), (2, 3), (1, 2), (1, 1)]
    assert _halve(torch.arange(7), 7).tolist() == [0, 1, 1, 2, 2, 3, 3]
    assert _halve(torch.arange(6), 6).tolist() == [0, 0, 1, 1, 2, 2]
    # the reference's top is where a side reaches 2; its scripts root one level below: 4 x 4 on 14 x 14 and
    # 13 x 13 frames (level 2), 3 x 6 on Qwen2-VL's 12 x 21 (level 2); tiny grids root at the tokens
    assert root_index(14, 14, 1) == 2 and root_index(13, 13, 1) == 2 and root_index(12, 21, 1) == 2
    assert root_index(14, 14, 0) == 3 and root_index(16, 16, 1) == 2
    assert root_index(4, 4, 1) == 0 and root_index(2, 2, 1) == 0 and root_index(1, 1, 0) == 0


def test_graph_helpers():
    # components: smallest vertex of each component
    a, b = torch.tensor([1, 4, 3]), torch.tensor([2, 2, 0])
    assert connected_components(6, a, b).tolist() == [0, 1, 1, 0, 1, 5]
    # spanning forest of edges given best first: the cycle's worst edge (index 2) is left out
    a, b = torch.tensor([0, 1, 0, 2]), torch.tensor([1, 2, 2, 3])
    assert spanning_forest(4, a, b).tolist() == [True, True, False, True]
    # budget split: one each, the rest in proportion to tokens - 1; below the number of videos, plain proportion
    assert split_budget(10, torch.tensor([4, 28])).tolist() == [2, 8]
    assert split_budget(1, torch.tensor([4, 28])).tolist() == [0, 1]


# ---- hand-derived behaviour ----------------------------------------------------------------------------------------


def two_frame_quadrant_video() -> torch.Tensor:
    """2 frames of 4 x 4. Frame 0: the top-left 2 x 2 quadrant (tokens 0, 1, 4, 5) all equal ``E[0]``; the other
    12 tokens are distinct basis vectors ``E[1..12]``. Frame 1 (tokens 16..31) repeats frame 0 exactly."""
    frame = torch.stack([E[0], E[0], E[1], E[2], E[0], E[0], E[3], E[4], *E[5:13]])
    return torch.cat([frame, frame])


@pytest.mark.parametrize(
    ("budget", "keep", "sizes"),
    [
        # tau_s in (0.5, 1], tau_t = tau_s - 0.3 <= 0.7: both quadrants collapse, all 13 cell pairs merge
        (13, [0, 2, 3, 6, 7, *range(8, 16)], [8] + [2] * 12),
        # same cells; one pair fewer: the 13 pairs (all cosine 1) in pair order, the last (15, 31) stays apart
        (14, [0, 2, 3, 6, 7, *range(8, 16), 31], [8] + [2] * 11 + [1, 1]),
        # tau_s > 1: no spatial merge; every token merges with its copy in frame 1
        (16, list(range(16)), [2] * 16),
        # fewer temporal merges: the first 12 pairs (pair order), positions 12..15 of both frames stay
        (20, [*range(16), 28, 29, 30, 31], [2] * 12 + [1] * 8),
    ],
)
def test_hand_derived_quadrant_and_temporal_merges(budget, keep, sizes):
    """Derivation (root_level=0: on 4 x 4 the reference's top is the 2 x 2 quadrant grid; roots = quadrants).

    Spatial stop scores: the uniform quadrant's children all equal its mean, cos = 1; any other quadrant holds 4
    orthonormal tokens, cos(e_i, mean) = (1/4) / (1 * 1/2) = 0.5. The whole frame (above the roots) comes last.
    Temporal pairs: same cells of frames 0 and 1, cosine 1 (exact copies).
    Threshold family tau_t = tau_s - 0.3: tau_s > 1 -> 32 - 16 = 16 tokens; tau_s in (0.5, 1] -> 26 leaves minus 13
    pairs = 13 tokens; tau_s <= 0.5 -> 8 leaves minus 4 pairs = 4. A budget is met on the least merged spatial
    configuration that reaches it, then the most similar pairs are merged (ties: lower pair first). Each group is
    represented by its first token (frame 0, top-left) and carries the mean of its tokens.
    """
    hidden = two_frame_quadrant_video()
    plan = policy(root_level=0).plan(make(hidden, one_video(2, 4, 4)), budget)
    check(plan, 32, budget, total=32)
    assert plan.keep.tolist() == keep
    assert plan.sizes.tolist() == sizes
    torch.testing.assert_close(plan.features, hidden[plan.keep], rtol=0, atol=1e-6)  # groups of equal vectors


def test_budget_in_a_spatial_jump_keeps_temporal_merges_and_collapses_one_cell():
    """Budget 12 on the quadrant video. The (0.5, 1] configuration bottoms out at 13 (its 13 chains); the next one
    (tau_s <= 0.5: every quadrant collapses) has only 8 leaves, and the first one's cells cannot reach 12 by
    temporal merges either. So the 0.5 block collapses link by link (finer first, then raster: 3 -> 2 first) with
    its temporal threshold 0.5 - 0.3 = 0.2: after one link frame 0's cell {2, 3} pairs with both 18 and 19
    (cos 0.71 >= 0.2), and 25 leaves - 13 pairs = 12. The two quadrants and the other copies merge as before."""
    plan = policy(root_level=0).plan(make(two_frame_quadrant_video(), one_video(2, 4, 4)), 12)
    check(plan, 32, 12, total=32)
    assert plan.keep.tolist() == [0, 2, 6, 7, *range(8, 16)]
    assert plan.sizes.tolist() == [8, 4] + [2] * 10


def test_chains_fold_into_the_earliest_frame():
    # 3 identical frames of 2 x 2 orthogonal tokens: each position's chain t0 -> t1 -> t2 becomes one token at t0
    frame = E[:4]
    plan = policy().plan(make(torch.cat([frame, frame, frame]), one_video(3, 2, 2)), 4)
    check(plan, 12, 4, total=12)
    assert plan.keep.tolist() == [0, 1, 2, 3] and plan.sizes.tolist() == [3, 3, 3, 3]


def test_reference_corner_block_always_stops():
    """6 x 6, one frame, root_level 0: 6 -> 3 -> 2. Pooling 3 -> 2 keeps row / column 0 alone, so the root (0, 0)
    has one child, the 3-level cell of tokens {0, 1, 6, 7}; the reference compares that child with itself
    (cos 1) and stops: with orthonormal tokens (every other score < 1) those four are the first to merge."""
    plan = policy(root_level=0).plan(make(E[:36], one_video(1, 6, 6)), 33)
    check(plan, 36, 33, total=36)
    assert plan.keep.tolist() == [0, *range(2, 6), *range(8, 36)]
    assert plan.sizes[0] == 4
    torch.testing.assert_close(plan.features[0], E[[0, 1, 6, 7]].mean(0))
    # one token fewer only: that cell collapses link by link, finer first then raster: 1 -> 0 only
    plan = policy(root_level=0).plan(make(E[:36], one_video(1, 6, 6)), 35)
    assert plan.keep.tolist() == [0, *range(2, 36)] and plan.sizes[0] == 2


def best_match_video() -> torch.Tensor:
    """2 frames of 4 x 4. Frame 0's top-left quadrant holds ``u + e_i`` (i = 1..4; cos to their mean 0.79), frame
    1's is uniform ``u`` (a 4-token leaf at any tau_s <= 1, containing the four small cells, cos 0.71 to each);
    the other 12 tokens are orthonormal and repeat in frame 1."""
    u = E[0]
    x = [u + E[i] for i in range(1, 5)]
    rest = list(E[5:17])
    f0 = torch.stack([x[0], x[1], *rest[0:2], x[2], x[3], *rest[2:12]])
    f1 = torch.stack([u, u, *rest[0:2], u, u, *rest[2:12]])
    return torch.cat([f0, f1])


def test_large_cell_bridges_small_ones_unless_best_match_only():
    """Budget 14. Blocks: frame 1's quadrant (key 1), frame 0's (0.79), the others (0.5). Least merged block that
    reaches 14: frame 1's quadrant collapsed (29 leaves; pairs: 12 copies at cos 1, then the big cell with tokens
    0, 1, 4, 5 at 0.71). Default (the reference's fast path pairs every nested cell): 29 - 15 merges -> the copies
    and 0, 1, 4 join the big cell, 5 stays alone.
    best_match_only (the reference's slow path): the big cell keeps one partner, so that block bottoms out at 16;
    the next block collapses frame 0's quadrant too (26 leaves, 13 pairs): 26 - 12 -> the copies merge, the two
    quadrants (cos 0.89, the lowest pair) stay apart."""
    tokens = make(best_match_video(), one_video(2, 4, 4))
    plan = policy(root_level=0).plan(tokens, 14)
    check(plan, 32, 14, total=32)
    assert plan.keep.tolist() == [0, 2, 3, 5, *range(6, 16)]
    assert plan.sizes.tolist() == [7, 2, 2, 1] + [2] * 10
    plan = policy(root_level=0, best_match_only=True).plan(tokens, 14)
    check(plan, 32, 14, total=32)
    assert plan.keep.tolist() == [0, 2, 3, *range(6, 16), 16]
    assert plan.sizes.tolist() == [4] + [2] * 12 + [4]


# ---- against a plain re-statement of the reference ------------------------------------------------------------


def _rows(s: int) -> list[list[int]]:
    """Children rows of each parent row when a side of length ``s`` is pooled (odd: row 0 alone)."""
    if s % 2 == 0:
        return [[2 * i, 2 * i + 1] for i in range(s // 2)]
    return [[0]] + [[2 * i - 1, 2 * i] for i in range(1, (s + 1) // 2)]


def reference_sttm(video: torch.Tensor, tau_s: float, tau_t: float, root_level: int) -> list[set[int]]:
    """The reference's quadtree + fast temporal merge, written plainly (true-mean cell features, real children).

    ``video`` ``[T, H, W, D]``; returns the groups of flat token indices.
    """
    T, H, W, _ = video.shape
    sizes = [(H, W)]
    while sizes[0][0] != 2 and sizes[0][1] != 2:
        sizes.insert(0, (math.ceil(sizes[0][0] / 2), math.ceil(sizes[0][1] / 2)))
    cells = [dict() for _ in sizes]  # level (top first) -> (i, j) -> covered (y, x)
    cells[-1] = {(y, x): [(y, x)] for y in range(H) for x in range(W)}
    for lvl in range(len(sizes) - 2, -1, -1):
        for (i, rs), (j, cs) in itertools.product(
            enumerate(_rows(sizes[lvl + 1][0])), enumerate(_rows(sizes[lvl + 1][1]))
        ):
            cells[lvl][i, j] = [p for r in rs for c in cs for p in cells[lvl + 1][r, c]]
    leaves = []  # (frame, covered cells)

    def mean(t, cover):
        return torch.stack([video[t, y, x] for y, x in cover]).mean(0)

    def visit(t, lvl, i, j):
        cover = cells[lvl][i, j]
        if lvl == len(sizes) - 1:
            leaves.append((t, cover))
            return
        rs, cs = _rows(sizes[lvl + 1][0])[i], _rows(sizes[lvl + 1][1])[j]
        kids = [(lvl + 1, r, c) for r in rs for c in cs]
        parent = mean(t, cover)
        if all(F.cosine_similarity(mean(t, cells[k[0]][k[1:]]), parent, dim=0) >= tau_s for k in kids):
            leaves.append((t, cover))
            return
        for k in kids:
            visit(t, *k)

    root = min(root_level, len(sizes) - 1)
    for t in range(T):
        for i, j in cells[root]:
            visit(t, root, i, j)
    up = list(range(len(leaves)))

    def find(a):
        while up[a] != a:
            a = up[a]
        return a

    for a, b in itertools.product(range(len(leaves)), repeat=2):
        (ta, ca), (tb, cb) = leaves[a], leaves[b]
        if tb == ta + 1 and (set(ca) <= set(cb) or set(cb) <= set(ca)):
            if F.cosine_similarity(mean(ta, ca), mean(tb, cb), dim=0) >= tau_t:
                ra, rb = find(a), find(b)
                up[max(ra, rb)] = min(ra, rb)
    groups: dict[int, set[int]] = {}
    for k, (t, cover) in enumerate(leaves):
        groups.setdefault(find(k), set()).update(t * H * W + y * W + x for y, x in cover)
    return sorted(groups.values(), key=min)


def structured_video(seed: int, T: int, H: int, W: int, dim: int = 12) -> torch.Tensor:
    """Piecewise-constant background (4 x 4 blocks, some 2 x 2 detail), static up to noise; the top-right quarter
    changes every frame. ``[T, H, W, dim]``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, dim, (H + 3) // 4, (W + 3) // 4, generator=g)
    fine = torch.randn(1, dim, (H + 1) // 2, (W + 1) // 2, generator=g)
    fine = fine * (torch.rand(1, 1, (H + 1) // 2, (W + 1) // 2, generator=g) < 0.4)
    background = F.interpolate(coarse, size=(H, W)) + F.interpolate(fine, size=(H, W))
    moving = torch.zeros(1, 1, H, W)
    moving[..., : H // 2, W // 2 :] = 1
    frames = [background * (1 - moving) + torch.randn(1, dim, H, W, generator=g) * moving for _ in range(T)]
    video = torch.cat(frames) + 0.05 * torch.randn(T, dim, H, W, generator=g)
    return video.permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 7, 7), (2, 6, 10), (2, 13, 13), (3, 12, 9)])
@pytest.mark.parametrize("thresholds", [(0.9, 0.6, 1), (0.95, 0.75, 0)])
def test_reproduces_the_reference_at_its_own_count(seed, shape, thresholds):
    """At the budget the reference's thresholds produce, tokpress's exact-budget rule (gap = tau_s - tau_t) returns
    the reference's groups: same representatives, sizes and means. (On inputs where several thresholds give that
    count with different groups, either may come out; these inputs avoid such ties.)"""
    tau_s, tau_t, root_level = thresholds
    video = structured_video(seed, *shape)
    groups = reference_sttm(video, tau_s, tau_t, root_level)
    n = video[..., 0].numel()
    flat = video.reshape(n, -1)
    plan = policy(threshold_gap=round(tau_s - tau_t, 6), root_level=root_level).plan(
        make(flat, one_video(*shape)), len(groups)
    )
    assert len(groups) < n
    assert plan.keep.tolist() == [min(s) for s in groups]
    assert plan.sizes.tolist() == [len(s) for s in groups]
    expected = torch.stack([flat[sorted(s)].mean(0) for s in groups])
    torch.testing.assert_close(plan.features, expected, rtol=1e-5, atol=1e-5)


# ---- properties ------------------------------------------------------------------------------------------------


GRIDS = [(2, 14, 14), (2, 13, 13), (2, 12, 21), (1, 7, 7), (5, 2, 2), (3, 1, 5), (2, 1, 1)]


@pytest.mark.parametrize("grid", GRIDS, ids=[f"{t}x{h}x{w}" for t, h, w in GRIDS])
def test_exact_budget_identity_and_sizes(grid):
    t, h, w = grid
    n = t * h * w
    g = torch.Generator().manual_seed(n)
    hidden = torch.randn(n, 24, generator=g) + 2 * torch.randn(1, 24, generator=g)
    tokens = make(hidden, one_video(t, h, w))
    pol = policy()
    identity = pol.plan(tokens, n)
    assert torch.equal(identity.keep, torch.arange(n)) and identity.features is None and identity.sizes is None
    budgets = sorted({1, max(1, n // 10), n // 3 or 1, (3 * n) // 4 or 1, n - 1} - {0, n})
    for budget in budgets:
        plan = pol.plan(tokens, budget)
        check(plan, n, budget, total=n)
        assert plan.features.dtype == hidden.dtype


def test_deterministic_and_dtype_preserving():
    g = torch.Generator().manual_seed(5)
    hidden = (torch.randn(3 * 14 * 14, 32, generator=g) + torch.randn(1, 32, generator=g)).to(torch.bfloat16)
    tokens = make(hidden, one_video(3, 14, 14))
    a, b = policy().plan(tokens, 150), policy().plan(tokens, 150)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)
    assert a.features.dtype == torch.bfloat16


def test_sizes_weight_the_means():
    # two identical frames of 1 x 2; the second frame's tokens stand for 3 originals each
    hidden = torch.stack([E[0], E[1], E[0] + E[2], E[1]])
    sizes = torch.tensor([1.0, 1.0, 3.0, 3.0])
    plan = policy().plan(make(hidden, one_video(2, 1, 2), sizes=sizes), 2)
    check(plan, 4, 2, total=8)
    assert plan.keep.tolist() == [0, 1] and plan.sizes.tolist() == [4, 4]
    torch.testing.assert_close(plan.features[0], (E[0] + 3 * (E[0] + E[2])) / 4)


def test_several_videos_never_merge_into_each_other():
    # three videos of identical content (a cross-video merge would be the most similar), plus 2 outside tokens
    slots = [VideoSlot(0, Grid(2, 4, 4)), VideoSlot(32, Grid(3, 2, 3)), VideoSlot(50, Grid(1, 5, 5), extra=1)]
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 16, generator=g)
    ordinals = list(range(75)) + [75, 76]  # 75 is video 2's extra token, 76 outside every video
    n = len(ordinals)
    hidden = base + 0.1 * torch.randn(n, 16, generator=g)
    tokens = make(hidden, slots, ordinals=ordinals)
    owner = torch.tensor([0] * 32 + [1] * 18 + [2] * 25 + [3, 3])
    for budget in [1, 3, 4, 10, 38, 60, n - 1]:
        plan = policy().plan(tokens, budget)
        if budget >= 4:
            check(plan, n, budget, total=n)
            # each kept token stands for exactly as many tokens as its own video holds in total
            for v, count in enumerate([32, 18, 25, 2]):
                assert float(plan.sizes[owner[plan.keep] == v].sum()) == count
            shares = split_budget(budget, torch.tensor([32, 18, 25, 2]))
            assert torch.bincount(owner[plan.keep], minlength=4).tolist() == shares.tolist()
        else:  # fewer tokens than videos: some videos get no token and are dropped
            assert plan.keep.numel() == budget


@pytest.mark.parametrize("seed", range(4))
def test_incomplete_grids_from_an_outer_stage(seed):
    # 4 frames of 13 x 13; a random 60 % of the tokens survive, and frame 2 is gone entirely
    t, h, w = 4, 13, 13
    g = torch.Generator().manual_seed(seed)
    alive = torch.rand(t * h * w, generator=g) < 0.6
    alive[2 * h * w : 3 * h * w] = False
    ordinals = alive.nonzero().squeeze(1)
    n = ordinals.numel()
    hidden = torch.randn(n, 16, generator=g) + 3 * torch.randn(1, 16, generator=g)
    sizes = 1 + torch.randint(0, 3, (n,), generator=g).float()
    tokens = make(hidden, one_video(t, h, w), ordinals=ordinals, sizes=sizes)
    for budget in [1, 2, 3, 17, n // 3, n // 2, n - 1]:
        check(policy().plan(tokens, budget), n, budget, total=float(sizes.sum()))


def test_sparse_frames_that_share_no_position_still_meet_tiny_budgets():
    # frame 0 holds only (0, 0), frame 1 only (1, 1): no temporal pair; budget 1 needs the last-resort rule
    tokens = make(torch.stack([E[0], E[1]]), one_video(2, 2, 2), ordinals=[0, 7])
    plan = policy().plan(tokens, 1)
    check(plan, 2, 1, total=2)
    assert plan.keep.tolist() == [0]


def test_without_video_grids_it_merges_sequence_neighbours(caplog):
    hidden = torch.stack([E[0], E[0], E[1], E[2], E[2] + 0.1 * E[3]])
    with caplog.at_level(logging.WARNING, logger="tokpress"):
        plan = policy().plan(make(hidden, []), 3)
    assert "no video grids" in caplog.text
    check(plan, 5, 3, total=5)
    assert plan.keep.tolist() == [0, 2, 3] and plan.sizes.tolist() == [2, 1, 2]


def test_head_dim_option():
    hidden = torch.randn(2 * 4 * 4, 24, generator=torch.Generator().manual_seed(0))
    tokens = make(hidden, one_video(2, 4, 4))
    whole, one_head = policy().plan(tokens, 9), policy(head_dim=24).plan(tokens, 9)
    assert torch.equal(whole.keep, one_head.keep)  # one head of the full width is the whole-vector cosine
    check(policy(head_dim=8).plan(tokens, 9), 32, 9, total=32)
    with pytest.raises(InputError, match="head_dim"):
        policy(head_dim=7).plan(tokens, 9)


def test_bad_budget_and_ordinals_are_input_errors():
    tokens = make(E[:4], one_video(1, 2, 2))
    with pytest.raises(InputError, match="budget"):
        policy().plan(tokens, 0)
    with pytest.raises(InputError, match="budget"):
        policy().plan(tokens, 5)
    with pytest.raises(InputError, match="ordinals"):
        policy().plan(make(E[:4], one_video(1, 2, 2), ordinals=[0, 1, 2]), 2)
