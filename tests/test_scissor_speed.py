"""LLaVA-Scissor's sparse temporal graph (tokpress/policies/outer/scissor.py) against the dense form it replaced.

:func:`dense_scissor` restates the module as it was before (every evaluated config's ``[M, M]`` temporal similarity
matrix built whole, counted by :func:`count_components`, the final spanning forest by :func:`spanning_forest`); the
helpers it calls are unchanged. The fast form must give the same kept indices, bit-identical features and sizes and
the same thresholds on random and crafted (tied, repeated, zero, constant) inputs, also when every graph is forced
onto the dense fallback or onto the non-symmetric-Gram path.
"""

from __future__ import annotations

import bisect
import math

import pytest
import torch

from tokpress.ops import connected_components, cosine_matrix, group_mean, group_size
from tokpress.policies.outer import scissor as sc
from tokpress.policies.outer import scissor_graph as sg
from tokpress.policies.outer.scissor import (
    cosine_from_dots,
    count_components,
    edge_order,
    forest_in_order,
    group_by_representative,
    scissor,
    spanning_forest,
    true_indices,
)

INF = math.inf


# ---- the dense form, as the module computed it before ------------------------------------------------------------
def dense_scissor(frames: torch.Tensor, budget: int, remerge: bool = True) -> sc.ScissorResult:
    t, p, dim = frames.shape
    n = t * p
    x = frames.reshape(n, dim).float()
    gram = x @ x.T
    sim1 = cosine_from_dots(gram).view(t, p, t, p).diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()
    a1, b1, w1 = spanning_forest(sim1)
    weights, counts = torch.unique(w1, return_counts=True)
    cuts = [-INF, *weights.tolist()]
    above = torch.cat([counts.flip(0).cumsum(0).flip(0), counts.new_zeros(1)])
    sizes_m = [n - int(c) for c in above.tolist()]

    def temporal(groups, m):
        dots = torch.zeros(m, n).index_add_(0, groups, gram)
        return cosine_from_dots(torch.zeros(m, m).index_add_(1, groups, dots))

    def spatial(i, tau, previous=None):
        link = (w1 > cuts[i]).nonzero().squeeze(1)
        labels = connected_components(n, a1[link], b1[link])
        groups, reps = group_by_representative(labels, (sim1 > tau).sum(-1).flatten())
        if previous is not None and torch.equal(groups, previous[0]):
            return groups, reps, previous[2]
        return groups, reps, temporal(groups, reps.numel())

    def upper(i):
        return cuts[i + 1] if i + 1 < len(cuts) else INF

    last = len(cuts) - 1
    lo, hi = bisect.bisect_left(sizes_m, budget) - 1, last
    f_lo, f_hi = (sizes_m[lo] if lo >= 0 else 0) - budget + 0.5, n - budget + 0.5
    st_hi, kept_side, bisect_next = None, 0, False
    while hi - lo > 1:
        width = hi - lo
        if lo < 0:
            mid = 0
        elif bisect_next:
            mid = (lo + hi) // 2
        else:
            target = sizes_m[lo] + (-f_lo) * (sizes_m[hi] - sizes_m[lo]) / (f_hi - f_lo)
            mid = min(max(bisect.bisect_left(sizes_m, target), lo + 1), hi - 1)
        st = spatial(mid, cuts[mid])
        excess = count_components(st[2], upper(mid)) - budget + 0.5
        if excess > 0:
            hi, f_hi, st_hi = mid, excess, st
            f_lo, kept_side = (f_lo / 2 if kept_side == -1 else f_lo), -1
        else:
            lo, f_lo = mid, excess
            f_hi, kept_side = (f_hi / 2 if kept_side == 1 else f_hi), 1
        bisect_next = not bisect_next and lo >= 0 and 2 * (hi - lo) > width
    chosen = hi
    st = st_hi if st_hi is not None else spatial(chosen, cuts[chosen])
    a2, b2, w2 = spanning_forest(st[2][None])
    m = st[1].numel()
    order = edge_order(w2, a2, b2)
    drop = m - budget
    weakest_kept = float(w2[order[drop - 1]]) if drop > 0 else INF
    strongest_dropped = float(w2[order[drop]]) if drop < m - 1 else -INF
    shared = max(cuts[chosen], strongest_dropped)
    if shared < min(upper(chosen), weakest_kept):
        tau1 = tau2 = shared
        if tau1 != cuts[chosen]:
            moved = spatial(chosen, tau1, previous=st)
            if moved[2] is not st[2]:
                a2, b2, w2 = spanning_forest(moved[2][None])
                order = edge_order(w2, a2, b2)
            st = moved
    else:
        tau1, tau2 = cuts[chosen], strongest_dropped
    kept = order[:drop]
    labels2 = connected_components(m, a2[kept], b2[kept])
    groups2, reps2 = group_by_representative(labels2, (st[2] > tau2).sum(-1))
    final = group_mean(group_mean(x, st[0], m), groups2, budget)
    keep = st[1][reps2]
    if remerge:
        assign = cosine_matrix(x, final).argmax(-1)
        count = group_size(assign, budget)
        final = (final + torch.zeros_like(final).index_add_(0, assign, x)) / (count + 1)[:, None]
        sizes = (count + 1) * (n / (n + budget))
    else:
        sizes = group_size(groups2[st[0]], budget)
    return sc.ScissorResult(keep, final, sizes, tau1, tau2)


def assert_same(frames: torch.Tensor, budget: int, remerge: bool = True) -> None:
    want, got = dense_scissor(frames, budget, remerge), scissor(frames, budget, remerge)
    assert torch.equal(got.keep, want.keep), budget
    assert torch.equal(got.features, want.features), budget
    assert torch.equal(got.sizes, want.sizes), budget
    assert (got.tau_spatial, got.tau_temporal) == (want.tau_spatial, want.tau_temporal), budget


def random_frames(seed: int, t: int, p: int, d: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(t, p, d, generator=gen) + 0.8 * torch.randn(1, 1, d, generator=gen)


def crafted(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    if kind == "rounded":  # integer entries: many exactly tied cosines
        return torch.randint(-2, 3, (4, 6, 3), generator=gen).float()
    if kind == "repeated_frames":
        return torch.randn(1, 5, 4, generator=gen).expand(4, -1, -1).contiguous()
    if kind == "zeros":
        x = torch.randn(3, 6, 4, generator=gen)
        x[:, ::2] = 0
        return x
    if kind == "constant":
        return torch.ones(3, 4, 5)
    if kind == "one_frame":
        return torch.randn(1, 9, 4, generator=gen)
    if kind == "one_token_per_frame":
        return torch.randn(7, 1, 3, generator=gen)
    if kind == "scenes":  # near-repeating frames: temporal links far above the spatial ones
        base = torch.randn(2, 1, 8, 6, generator=gen).repeat_interleave(3, 0).reshape(6, 8, 6)
        return base + 0.02 * torch.randn(6, 8, 6, generator=gen)
    raise ValueError(kind)


KINDS = ["rounded", "repeated_frames", "zeros", "constant", "one_frame", "one_token_per_frame", "scenes"]


# ---- the whole policy: bit for bit ------------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "shape"), [(0, (3, 6, 6)), (1, (4, 5, 3)), (2, (2, 9, 8)), (3, (6, 4, 2))])
def test_matches_the_dense_form_for_every_budget(seed, shape):
    x = random_frames(seed, *shape)
    for budget in range(1, x.shape[0] * x.shape[1] + 1):
        assert_same(x, budget, remerge=budget % 3 != 0)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_dense_form_on_crafted_inputs(kind):
    x = crafted(kind)
    for budget in range(1, x.shape[0] * x.shape[1] + 1):
        assert_same(x, budget)


def test_matches_the_dense_form_on_a_larger_video_with_scenes():
    """8 frames x 49 tokens in scenes (the search evaluates many configs, the cached pair list is rebuilt)."""
    gen = torch.Generator().manual_seed(5)
    scene = torch.randn(3, 1, 49, 24, generator=gen).repeat_interleave(3, 0)[:8].reshape(8, 49, 24)
    x = scene + 0.1 * torch.randn(8, 49, 24, generator=gen) + 0.5 * torch.randn(1, 1, 24, generator=gen)
    for budget in (1, 5, 39, 98, 196, 300, 391, 392):
        assert_same(x, budget)


@pytest.mark.parametrize("kind", ["random", "rounded", "scenes"])
def test_dense_fallbacks_and_the_non_symmetric_gram_path_match_too(kind, monkeypatch):
    """Every sparse edge list over a tiny cap takes the dense form; the column sums come from gram^T."""
    x = random_frames(7, 4, 6, 5) if kind == "random" else crafted(kind)
    n = x.shape[0] * x.shape[1]
    monkeypatch.setattr(sg, "_EDGE_CAP", 3)
    for budget in range(1, n + 1, 2):
        assert_same(x, budget)
    monkeypatch.setattr(sg, "_EDGE_CAP", 1 << 22)
    monkeypatch.setattr(sg, "_symmetric", lambda gram: False)
    for budget in range(1, n + 1, 2):
        assert_same(x, budget)


def test_bfloat16_input_matches_the_dense_form():
    x = random_frames(9, 3, 5, 8).to(torch.bfloat16)
    for budget in range(1, 16):
        assert_same(x, budget)


# ---- the pieces ---------------------------------------------------------------------------------------------------
def test_temporal_graph_rows_edges_and_counts_equal_the_dense_matrix_even_for_a_non_symmetric_gram():
    gen = torch.Generator().manual_seed(3)
    n = 40
    x = torch.randn(n, 6, generator=gen) + 0.5
    gram = x @ x.T
    gram = gram + 1e-3 * torch.randn(n, n, generator=gen)  # not symmetric: the gram^T path
    tokens = sg._Tokens(gram)
    assert tokens.gram_t is not None
    labels = torch.arange(n)
    labels[[3, 4, 9]] = 3  # three components of several tokens, the rest alone
    labels[[20, 21]] = 20
    labels[[30, 31, 32, 33]] = 30
    degree = torch.randint(0, 5, (n,), generator=gen)
    groups, reps = group_by_representative(labels, degree)
    graph = sg._Temporal(tokens, groups, reps)
    dense = graph.dense()
    assert torch.equal(graph.sim_rows, dense[graph.gnodes]) and torch.equal(graph.self_sim, dense.diagonal())
    for theta in (0.99, 0.9, 0.5, 0.0, -0.5, -INF):
        graph.cached = None
        a, b, w = graph.edges(theta)
        want = (dense >= theta).triu(1).nonzero()
        assert sorted(zip(a.tolist(), b.tolist())) == sorted(map(tuple, want.tolist())), theta
        assert torch.equal(w, dense[a, b])
        assert graph.count(theta) == count_components(dense, theta)
        assert torch.equal(graph.degrees(theta), (dense > theta).sum(-1))


def test_token_pair_scan_finds_exactly_the_pairs_at_or_above_the_threshold(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(30, 5, generator=gen) + 0.3
    x[7] = 0  # a zero token: cosine 0 with everything
    tokens = sg._Tokens(x @ x.T)
    dense = cosine_from_dots(x @ x.T)
    for subset in (None, torch.tensor([0, 2, 3, 7, 11, 12, 29])):
        idx = torch.arange(30) if subset is None else subset
        for theta in (0.95, 0.6, 0.0, -0.2):
            a, b, w = tokens.scan(subset, theta)
            sub = dense[idx][:, idx]
            want = [(int(idx[i]), int(idx[j])) for i, j in (sub >= theta).triu(1).nonzero().tolist()]
            assert sorted(zip(a.tolist(), b.tolist())) == sorted(want)
            assert torch.equal(w, dense[a, b])
    monkeypatch.setattr(sg, "_EDGE_CAP", 2)
    assert tokens.scan(None, -1.0) is None  # too many: the caller takes the dense form
    everyone = torch.ones(30, dtype=torch.bool)
    assert tokens.among(torch.arange(30), everyone, -1.0) is None and tokens.too_dense == -1.0
    monkeypatch.setattr(sg, "_EDGE_CAP", 1 << 22)
    assert tokens.among(torch.arange(30), everyone, -2.0) is None  # lower than a threshold found too dense
    a, b, w = tokens.among(torch.arange(30), everyone, 0.9)  # higher: listed
    assert torch.equal(w, dense[a, b]) and int((dense >= 0.9).triu(1).sum()) == a.numel()


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 63, 64, 100])
def test_true_indices_is_nonzero(size):
    gen = torch.Generator().manual_seed(size)
    for density in (0.0, 0.05, 0.5, 1.0):
        mask = torch.rand(size, generator=gen) < density
        assert torch.equal(true_indices(mask), mask.nonzero().squeeze(1))
    mask = torch.rand(6, 13, generator=gen) < 0.2
    assert torch.equal(true_indices(mask), mask.flatten().nonzero().squeeze(1))


def kruskal_in_order(m: int, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> list[int]:
    """Edge indices Kruskal accepts, scanning the edges in edge_order (a plain loop with union-find)."""
    parent = list(range(m))

    def root(u: int) -> int:
        while parent[u] != u:
            u = parent[u]
        return u

    accepted = []
    for e in edge_order(w, a, b).tolist():
        ra, rb = root(int(a[e])), root(int(b[e]))
        if ra != rb:
            parent[ra] = rb
            accepted.append(e)
    return accepted


@pytest.mark.parametrize("seed", range(5))
def test_forest_in_order_is_kruskal(seed):
    gen = torch.Generator().manual_seed(seed)
    m, e = 25, 60
    a, b = torch.randint(0, m, (e,), generator=gen), torch.randint(0, m, (e,), generator=gen)
    keep = a != b
    a, b = a[keep], b[keep]
    w = torch.randint(0, 6, (a.numel(),), generator=gen).float() / 5  # many tied weights
    assert forest_in_order(m, a, b, w).tolist() == kruskal_in_order(m, a, b, w)
