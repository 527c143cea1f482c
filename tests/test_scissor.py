"""LLaVA-Scissor (outer): semantic connected components per frame, then across frames, the re-merge, and the
threshold search that meets the budget exactly.

The crafted cases are derived by hand from the paper and the authors' code (HumanMLLM/LLaVA-Scissor,
``llava/model/llava_arch_zip.py``); :func:`reference_scissor` restates the authors' computation at a fixed threshold
with plain loops, independently of tokpress's vectorised code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokpress.errors import ConfigError, InputError
from tokpress.ops import connected_components
from tokpress.policies.base import Grid, Plan, VideoTokens
from tokpress.policies.outer.scissor import (
    ScissorConfig,
    ScissorPolicy,
    edge_order,
    scissor,
    spanning_forest,
)
from tokpress.registry import get_policy


def make(**options) -> ScissorPolicy:
    return ScissorPolicy(ScissorConfig(**options))


def unit(deg: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def angle_frames(angles: list[list[float]]) -> torch.Tensor:
    """``[T, P, 2]`` unit vectors at the given angles (degrees)."""
    return torch.stack([torch.stack([unit(a) for a in frame]) for frame in angles])


def symmetric_cosine(x: torch.Tensor) -> torch.Tensor:
    s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).mT
    return (s + s.mT) / 2 + 0.0


def cos_deg(deg: float) -> float:
    return math.cos(math.radians(deg))


# ---- an independent, loop-based restatement of the authors' pipeline at a fixed tau ----------------------------
def reference_scc(x: torch.Tensor, tau: float) -> list[tuple[int, list[int]]]:
    """Connected components of ``cos > tau`` (float64), each as ``(highest-degree node, members)``, sorted by that
    node — the reference's ``approximate_components`` when every node is sampled."""
    xn = F.normalize(x.double(), dim=-1)
    adj = (xn @ xn.T) > tau
    n = x.shape[0]
    degree = adj.sum(1).tolist()
    seen, comps = [False] * n, []
    for start in range(n):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            u = stack.pop()
            members.append(u)
            for v in range(n):
                if adj[u, v] and not seen[v]:
                    seen[v] = True
                    stack.append(v)
        rep = min(members, key=lambda u: (-degree[u], u))
        comps.append((rep, sorted(members)))
    return sorted(comps)


def reference_scissor(frames: torch.Tensor, tau: float) -> tuple[list[int], torch.Tensor]:
    """Spatial SCC per frame, temporal SCC over the spatial means, re-merge; returns each output token's position
    (its representative's representative) and the features (float64)."""
    t, p, _ = frames.shape
    x = frames.double()
    positions, means = [], []
    for f in range(t):
        for rep, members in reference_scc(x[f], tau):
            positions.append(f * p + rep)
            means.append(x[f, members].mean(0))
    nodes = torch.stack(means)
    final_pos, final = [], []
    for rep, members in reference_scc(nodes, tau):
        final_pos.append(positions[rep])
        final.append(nodes[members].mean(0))
    final = torch.stack(final)
    flat = x.reshape(t * p, -1)
    closest = (F.normalize(flat, dim=-1) @ F.normalize(final, dim=-1).T).argmax(1)
    merged = final.clone()
    count = torch.ones(len(final_pos), dtype=torch.float64)
    for i, k in enumerate(closest.tolist()):
        merged[k] += flat[i]
        count[k] += 1
    return final_pos, merged / count[:, None]


# ---- hand-derived cases -----------------------------------------------------------------------------------------
# Two frames of four 2-D unit vectors (angles in degrees):
#   frame 0: 0, 10, 90, 105   -> in-frame cosines: (0,1) cos10 .9848, (2,3) cos15 .9659, (1,2) cos80 .1736, rest lower
#   frame 1: 2, 14, 92, 110   -> (4,5) cos12 .9781, (6,7) cos18 .9511, (5,6) cos78 .2079, rest lower
# Per-frame maximum spanning trees: {cos10, cos15, cos80} and {cos12, cos18, cos78}, so stage 1 can only change at
# u = cos80 < cos78 < cos18 < cos15 < cos12 < cos10. With a shared tau the reference keeps (stage-2 nodes are the
# spatial means; a mean of unit vectors points along their bisector):
#   tau in [cos80, cos78): frame 0 {0,1}{2,3}, frame 1 one blob (~54 deg) -> temporal links 97.5-54 (cos43) and
#                          5-54 (cos49) -> 1 token;
#   tau in [cos78, cos18): {0,1}{2,3} | {4,5}{6,7} -> means 5, 97.5 | 8, 101: links 5-8 (cos3), 97.5-101 (cos3.5)
#                          -> 2 tokens;
#   tau in [cos18, cos15): {0,1}{2,3} | {4,5}{6}{7} -> 5, 97.5 | 8, 92, 110: 5-8, 97.5-92 (cos5.5), 97.5-110
#                          (cos12.5) -> 2 tokens;
#   tau in [cos15, cos12): {0,1}{2}{3} | {4,5}{6}{7} -> 5, 90, 105 | 8, 92, 110: 5-8 (cos3), 90-92 (cos2),
#                          105-110 (cos5), and 92-105 (cos13) while tau < cos13 -> 2 tokens below cos13, 3 from it.
CRAFTED = [[0, 10, 90, 105], [2, 14, 92, 110]]


def test_hand_derived_budget_three_finds_the_lowest_shared_threshold():
    """budget 3: the lowest shared tau giving 3 tokens is cos13 (92 vs 105 deg stops linking), in config
    [cos15, cos12): stage 1 = {0,1}{2}{3} | {4,5}{6}{7}; stage 2 = {5,8 deg}{90,92}{105,110} = tokens
    {0,1,4,5}, {2,6}, {3,7}.

    Representatives (degree at tau = cos13, itself included): {0,1}: both 2 -> 0; {4,5} -> 4; in stage 2 every node
    has degree 2 (92-105 sits exactly at tau: not linked) -> the earlier node of each pair: positions 0, 2, 3.
    Re-merge: every token's nearest final mean is its own component's (6.5, 91 and 107.5 deg), so each final token
    is (mean + sum(members)) / (count + 1) = its mean; counts 4, 2, 2 -> sizes (count + 1) * 8 / 11.
    """
    x = angle_frames(CRAFTED)
    out = scissor(x, 3)
    flat = x.reshape(8, 2)
    assert out.keep.tolist() == [0, 2, 3]
    assert out.tau_spatial == out.tau_temporal == pytest.approx(cos_deg(13), abs=1e-6)
    expected = torch.stack([flat[[0, 1, 4, 5]].mean(0), flat[[2, 6]].mean(0), flat[[3, 7]].mean(0)])
    torch.testing.assert_close(out.features, expected)
    torch.testing.assert_close(out.sizes, torch.tensor([40 / 11, 24 / 11, 24 / 11]))
    # the independent restatement agrees inside the region and gives 2 just below it
    pos, feats = reference_scissor(x, cos_deg(12.5))
    assert pos == [0, 2, 3]
    torch.testing.assert_close(feats.float(), out.features)
    assert len(reference_scissor(x, cos_deg(13.5))[0]) == 2


def test_hand_derived_budget_two_threshold_region():
    """budget 2: 2 tokens for every shared tau in [cos78, cos13) (table above), 1 below: the search returns
    tau = cos78 (the in-frame link 14-92 deg of frame 1), both stages. Stage 1 {0,1}{2,3} | {4,5}{6,7}
    (representatives 0, 2, 4, 6: every node has degree 2); stage 2 pairs the frames' matching regions -> positions
    0 and 2, the plain means of the four tokens of each region (the re-merge gives each mean its own 4 tokens
    back), sizes 5 * 8 / 10 = 4."""
    x = angle_frames(CRAFTED)
    out = scissor(x, 2)
    flat = x.reshape(8, 2)
    assert out.keep.tolist() == [0, 2]
    assert out.tau_spatial == out.tau_temporal == pytest.approx(cos_deg(78), abs=1e-6)
    expected = torch.stack(
        [
            (flat[[0, 1]].mean(0) + flat[[4, 5]].mean(0)) / 2,
            (flat[[2, 3]].mean(0) + flat[[6, 7]].mean(0)) / 2,
        ]
    )
    torch.testing.assert_close(out.features, expected)
    torch.testing.assert_close(out.sizes, torch.tensor([4.0, 4.0]))
    for tau in (cos_deg(77), cos_deg(40), cos_deg(17), cos_deg(13.5)):
        assert len(reference_scissor(x, tau)[0]) == 2
    assert len(reference_scissor(x, cos_deg(79))[0]) == 1


def test_budget_one_merges_everything_into_the_first_token():
    """budget 1: tau = -inf, each frame is one component whose representative is its first token (all degrees
    equal), one temporal component at position 0; the re-merge adds all 8 tokens: (mean + sum) / 9."""
    x = angle_frames(CRAFTED)
    out = scissor(x, 1)
    flat = x.reshape(8, 2)
    assert out.keep.tolist() == [0] and out.tau_spatial == -math.inf
    mean = (flat[:4].mean(0) + flat[4:].mean(0)) / 2
    torch.testing.assert_close(out.features, ((mean + flat.sum(0)) / 9)[None])
    torch.testing.assert_close(out.sizes, torch.tensor([8.0]))


def test_count_jumping_past_the_budget_merges_below_the_spatial_threshold():
    """Unit vectors A, A' (frame 0) and B, C (frame 1) with cosines A.A' .9, A.B .89, A.C .885, A'.B .88,
    A'.C .875, B.C .7. Stage 1 changes at u = .7 (B-C) and .9 (A-A').

    * tau < .9: A and A' merge; their mean m has m.B = (.89 + .88) / sqrt(3.8) = .908 and m.C = 1.76 / sqrt(3.8)
      = .903, both above every tau < .9 -> 1 token (B-C at .7 only matters below .7: also 1).
    * tau >= .9: A, A', B, C stay apart -> 4 tokens (nothing but A.A' reaches .9).
    No shared tau gives 2: the search takes the singletons (tau1 = .9) and keeps the 4 - 2 strongest temporal tree
    edges, A-A' (.9) and A-B (.89), dropping A-C (.885) -> tau2 = .885 < tau1. Tokens {A, A', B} at A (degree 3
    at tau2: A', B; C sits at tau2) and {C}; every token's nearest is its own group (e.g. C: .852 vs 1) -> the
    re-merge returns the means; sizes (3 + 1) * 4 / 6 and (1 + 1) * 4 / 6."""
    gram = torch.tensor(
        [[1, 0.9, 0.89, 0.885], [0.9, 1, 0.88, 0.875], [0.89, 0.88, 1, 0.7], [0.885, 0.875, 0.7, 1]],
        dtype=torch.float64,
    )
    v = torch.linalg.cholesky(gram).float()  # rows are unit vectors with exactly these cosines (float64)
    out = scissor(v.view(2, 2, 4), 2)
    assert out.keep.tolist() == [0, 3]
    assert out.tau_spatial == pytest.approx(0.9, abs=1e-6)
    assert out.tau_temporal == pytest.approx(0.885, abs=1e-6)
    torch.testing.assert_close(out.features, torch.stack([v[:3].mean(0), v[3]]))
    torch.testing.assert_close(out.sizes, torch.tensor([8 / 3, 4 / 3]))


def test_tied_weights_are_split_by_index_and_an_unjoined_token_keeps_a_positive_size():
    """Frames [e1, e2] and [e1, e2]: in-frame cosine 0 (u = 0), copies 1. No shared tau gives 3 tokens (2 for
    tau in [0, 1), 4 from 1), so the singletons are cut: the temporal tree is (0,2) 1, (1,3) 1, (0,1) 0 (ties to the
    lower pair) and the strongest edge (0,2) is kept -> {0,2}, {1}, {3}; tau2 = 1 (the dropped tie).
    Re-merge: e1 tokens join token 0, e2 tokens join token 1 (tie with token 3: the earlier one), token 3 gets no
    one: features e1, e2, e2, sizes (2+1, 2+1, 0+1) * 4 / 7."""
    e1, e2 = torch.eye(2)
    x = torch.stack([torch.stack([e1, e2]), torch.stack([e1, e2])])
    out = scissor(x, 3)
    assert out.keep.tolist() == [0, 1, 3]
    assert (out.tau_spatial, out.tau_temporal) == (0.0, 1.0)
    torch.testing.assert_close(out.features, torch.stack([e1, e2, e2]))
    torch.testing.assert_close(out.sizes, torch.tensor([12 / 7, 12 / 7, 4 / 7]))


def test_without_remerge_sizes_are_component_sizes():
    x = angle_frames(CRAFTED)
    out = scissor(x, 3, remerge=False)
    flat = x.reshape(8, 2)
    assert out.keep.tolist() == [0, 2, 3]
    assert out.sizes.tolist() == [4.0, 2.0, 2.0]
    torch.testing.assert_close(out.features[1], flat[[2, 6]].mean(0))


# ---- the building blocks ----------------------------------------------------------------------------------------
def kruskal(sim: torch.Tensor) -> list[tuple[int, int]]:
    """Maximum spanning tree by Kruskal with the edge order weight desc, then (i, j) ascending."""
    n = sim.shape[0]
    edges = sorted((-float(sim[i, j]), i, j) for i in range(n) for j in range(i + 1, n))
    parent = list(range(n))

    def find(u):
        while parent[u] != u:
            u = parent[u]
        return u

    tree = []
    for _, i, j in edges:
        if find(i) != find(j):
            parent[find(i)] = find(j)
            tree.append((i, j))
    return sorted(tree)


@pytest.mark.parametrize("bsz,n,ties", [(1, 1, False), (1, 2, False), (3, 17, False), (1, 60, False), (4, 30, True)])
def test_spanning_forest_matches_kruskal(bsz, n, ties):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(bsz, n, 5, generator=gen)
    sim = symmetric_cosine(x)
    if ties:
        sim = (sim * 4).round() / 4 + 0.0  # many equal weights: the order falls back to the node pair
    a, b, w = spanning_forest(sim.clone())
    assert a.numel() == bsz * (n - 1)
    got = sorted(zip(a.tolist(), b.tolist()))
    assert got == sorted((g * n + i, g * n + j) for g in range(bsz) for i, j in kruskal(sim[g]))
    torch.testing.assert_close(w, sim.reshape(-1)[(a // n) * n * n + (a % n) * n + b % n])


def test_forest_components_label_is_the_smallest_member():
    a = torch.tensor([5, 3, 9, 1, 7])
    b = torch.tensor([3, 8, 2, 0, 4])
    labels = connected_components(10, a, b)
    assert labels.tolist() == [0, 0, 2, 3, 4, 3, 6, 4, 3, 2]


def test_edge_order_breaks_ties_by_pair():
    w = torch.tensor([0.5, 0.9, 0.5, 0.5])
    a = torch.tensor([4, 0, 1, 0])
    b = torch.tensor([1, 2, 3, 5])
    assert edge_order(w, a, b).tolist() == [1, 3, 2, 0]  # 0.9; then (0,5), (1,3), (1,4)


# ---- against the loop-based restatement on random videos --------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_at_the_found_shared_threshold(seed):
    """Wherever one shared tau reproduces the budget, the reference at that tau gives tokpress's positions and
    features, and just below it fewer tokens (it is the lowest such tau of the crossing found)."""
    gen = torch.Generator().manual_seed(seed)
    t, p, dim = 3, 6, 6
    x = torch.randn(t, p, dim, generator=gen) + 0.8 * torch.randn(1, 1, dim, generator=gen)
    shared = 0
    for budget in range(1, t * p):
        out = scissor(x, budget)
        assert out.keep.numel() == budget
        if out.tau_spatial != out.tau_temporal or out.tau_spatial == -math.inf:
            continue
        shared += 1
        pos, feats = reference_scissor(x, out.tau_spatial + 1e-6)
        assert pos == out.keep.tolist(), budget
        torch.testing.assert_close(feats.float(), out.features, atol=1e-5, rtol=1e-5)
        assert len(reference_scissor(x, out.tau_spatial - 1e-6)[0]) < budget
    assert shared >= (t * p) // 2  # the shared case is the usual one


# ---- policy properties ------------------------------------------------------------------------------------------
def random_video(grid: Grid, dim: int = 8, seed: int = 0, dtype=torch.float32) -> VideoTokens:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(grid.numel, dim, generator=gen) + torch.randn(1, dim, generator=gen)
    return VideoTokens(x.to(dtype), grid)


def check_plan(plan: Plan, budget: int, n: int, dim: int, dtype) -> None:
    keep = plan.keep
    assert keep.dtype == torch.long and keep.shape == (budget,)
    assert int(keep[0]) >= 0 and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "kept indices must be sorted and distinct"
    assert plan.features.shape == (budget, dim) and plan.features.dtype == dtype
    assert bool(torch.isfinite(plan.features.float()).all())
    assert plan.sizes.shape == (budget,) and plan.sizes.dtype == torch.float32
    assert bool((plan.sizes > 0).all())
    assert float(plan.sizes.sum()) == pytest.approx(n, rel=1e-5)


@pytest.mark.parametrize("grid", [Grid(1, 2, 3), Grid(2, 2, 2), Grid(4, 3, 5), Grid(7, 2, 3), Grid(3, 1, 1)])
def test_exact_budget_for_every_budget(grid):
    n = grid.numel
    policy = make()
    for seed in range(2):
        video = random_video(grid, seed=seed)
        for budget in range(1, n):
            check_plan(policy.plan(video, budget), budget, n, 8, torch.float32)


@pytest.mark.parametrize("budget", [1, 5, 17, 59])
def test_exact_budget_bfloat16_keeps_dtype(budget):
    grid = Grid(4, 3, 5)
    check_plan(make().plan(random_video(grid, dtype=torch.bfloat16), budget), budget, 60, 8, torch.bfloat16)


@pytest.mark.parametrize("kind", ["constant", "repeated_frames", "zeros"])
def test_exact_budget_under_massive_ties(kind):
    grid = Grid(4, 2, 3)
    gen = torch.Generator().manual_seed(1)
    if kind == "constant":
        x = torch.ones(grid.numel, 4)
    elif kind == "repeated_frames":
        x = torch.randn(1, grid.per_frame, 4, generator=gen).expand(grid.frames, -1, -1).reshape(grid.numel, 4)
    else:
        x = torch.randn(grid.numel, 4, generator=gen)
        x[::3] = 0  # zero tokens: cosine 0 to everything
    video = VideoTokens(x.clone(), grid)
    for budget in range(1, grid.numel):
        check_plan(make().plan(video, budget), budget, grid.numel, 4, torch.float32)


def test_budget_n_is_the_identity_plan():
    grid = Grid(3, 2, 2)
    plan = make().plan(random_video(grid), grid.numel)
    assert plan.keep.tolist() == list(range(grid.numel))
    assert plan.features is None and plan.sizes is None


def test_deterministic_and_input_untouched():
    grid = Grid(5, 3, 4)
    video = random_video(grid, seed=3)
    before = video.features.clone()
    a = make().plan(video, 13)
    b = make().plan(video, 13)
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features) and torch.equal(a.sizes, b.sizes)
    assert torch.equal(video.features, before)


def test_large_video_stays_exact():
    """96 tokens in 8 frames with D = 64 (the sparse temporal graph against the dense form: test_scissor_speed.py)."""
    grid = Grid(8, 3, 4)
    video = random_video(grid, dim=64, seed=5)
    for budget in (3, 30, 70, 95):
        check_plan(make().plan(video, budget), budget, grid.numel, 64, torch.float32)


def test_registered_and_validated():
    assert get_policy("outer", "scissor") is ScissorPolicy
    with pytest.raises(ConfigError, match="remerge"):
        ScissorConfig(remerge="yes")
    grid = Grid(2, 2, 2)
    x = torch.randn(grid.numel, 4)
    x[3, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        make().plan(VideoTokens(x, grid), 3)
