"""Index-selection and similarity helpers of ``tokpress.ops``, checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from tokpress.ops.select import evenly_spaced, topk_sorted
from tokpress.ops.similarity import cosine_adjacent, cosine_matrix


def _topk_reference(values: list[float], k: int) -> list[int]:
    """The k largest values, ties to the lower index, returned in ascending index order (pure Python)."""
    ranked = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return sorted(ranked[:k])


# ---- topk_sorted ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_topk_sorted_keeps_largest_in_ascending_order(k):
    gen = torch.Generator().manual_seed(k)
    scores = torch.randn(20, generator=gen)
    got = topk_sorted(scores, k)
    assert got.dtype == torch.long and got.dim() == 1 and got.numel() == k
    assert got.tolist() == _topk_reference(scores.tolist(), k)
    # ascending index order, and every kept score >= every dropped score
    assert bool((got[1:] > got[:-1]).all())
    dropped = torch.ones(20, dtype=torch.bool)
    dropped[got] = False
    if dropped.any():
        assert scores[got].min() >= scores[dropped].max()


def test_topk_sorted_ties_go_to_lower_index():
    assert topk_sorted(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2).tolist() == [1, 3]
    assert topk_sorted(torch.zeros(6), 3).tolist() == [0, 1, 2]
    # a tie straddling the cut: of the three 0.5's only the earliest two fit after the 0.9
    assert topk_sorted(torch.tensor([0.5, 0.2, 0.5, 0.9, 0.5]), 3).tolist() == [0, 2, 3]
    # the ordering must not be index-descending among ties
    assert topk_sorted(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0]), 1).tolist() == [0]


def test_topk_sorted_bf16_input():
    gen = torch.Generator().manual_seed(0)
    # coarse values so bf16 rounding creates many exact ties
    scores = (torch.randn(64, generator=gen) * 3).round().to(torch.bfloat16)
    got = topk_sorted(scores, 10)
    assert got.dtype == torch.long and got.numel() == 10
    assert got.tolist() == _topk_reference(scores.float().tolist(), 10)


def test_topk_sorted_with_infinities():
    scores = torch.tensor([0.3, float("inf"), 0.7, float("inf"), -1.0])
    assert topk_sorted(scores, 2).tolist() == [1, 3]
    assert topk_sorted(scores, 3).tolist() == [1, 2, 3]


# ---- evenly_spaced ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_evenly_spaced_full_is_arange(n):
    assert evenly_spaced(n, n).tolist() == list(range(n))


def test_evenly_spaced_distinct_sorted_and_spread():
    for n in range(1, 41):
        for k in range(1, n + 1):
            idx = evenly_spaced(n, k)
            assert idx.dtype == torch.long and idx.numel() == k, (n, k)
            vals = idx.tolist()
            assert vals == sorted(set(vals)), (n, k, vals)
            assert 0 <= vals[0] and vals[-1] < n, (n, k, vals)
            if k > 1:
                gaps = [b - a for a, b in zip(vals, vals[1:])]
                assert max(gaps) - min(gaps) <= 1, (n, k, vals)
                # gaps are floor/ceil of the bin width n / k
                assert n // k <= min(gaps) and max(gaps) <= -(-n // k), (n, k, vals)
            # centred: the margins before the first and after the last index are at most one bin wide
            assert vals[0] <= n / k and (n - 1 - vals[-1]) <= n / k, (n, k, vals)
            # one index per bin: the i-th token's cell [v, v + 1) overlaps the i-th bin [i n / k, (i + 1) n / k)
            for i, v in enumerate(vals):
                assert i * n < (v + 1) * k and v * k < (i + 1) * n, (n, k, i, v)


def test_evenly_spaced_centres_of_bins():
    # bins [0, 4) and [4, 8) -> centres 2 and 6; bins of 10 / 5 = 2 -> 1, 3, 5, 7, 9
    assert evenly_spaced(8, 2).tolist() == [2, 6]
    assert evenly_spaced(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert evenly_spaced(9, 1).tolist() == [4]


@pytest.mark.parametrize("n,k", [(5, 0), (5, 6), (5, -1), (0, 0), (0, 1)])
def test_evenly_spaced_rejects_bad_k(n, k):
    with pytest.raises(ValueError):
        evenly_spaced(n, k)


# ---- cosine -----------------------------------------------------------------------------------------------------
def _cos64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the last axes in float64 from the definition ``a . b / (|a| |b|)``."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.pow(2).sum(-1).sqrt() * b.pow(2).sum(-1).sqrt())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cosine_adjacent_matches_reference(dtype):
    gen = torch.Generator().manual_seed(1)
    frames = (torch.randn(5, 7, 16, generator=gen) * 4 + 1).to(dtype)
    got = cosine_adjacent(frames)
    assert got.shape == (4, 7)
    assert got.dtype == torch.float32
    want = torch.stack([_cos64(frames[t + 1], frames[t]) for t in range(4)])
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_cosine_adjacent_identical_and_opposite_frames():
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(6, 8, generator=gen)
    frames = torch.stack([base, base * 2.5, -base])
    got = cosine_adjacent(frames)
    torch.testing.assert_close(got[0], torch.ones(6), atol=1e-6, rtol=0)  # scale does not matter
    torch.testing.assert_close(got[1], -torch.ones(6), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cosine_matrix_matches_reference(dtype):
    gen = torch.Generator().manual_seed(3)
    a = (torch.randn(2, 6, 16, generator=gen) * 3).to(dtype)
    b = (torch.randn(2, 9, 16, generator=gen) - 0.5).to(dtype)
    got = cosine_matrix(a, b)
    assert got.shape == (2, 6, 9) and got.dtype == torch.float32
    want = _cos64(a[:, :, None, :], b[:, None, :, :])
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)

    self_sim = cosine_matrix(a)
    assert self_sim.shape == (2, 6, 6) and self_sim.dtype == torch.float32
    torch.testing.assert_close(self_sim.double(), _cos64(a[:, :, None, :], a[:, None, :, :]), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.diagonal(self_sim, dim1=-2, dim2=-1), torch.ones(2, 6), atol=1e-5, rtol=0)


def test_dpc_knn_finds_the_blobs_and_assigns_every_point_to_its_blob():
    from tokpress.ops import dpc_knn

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(6)
    x = centres[labels] + 0.3 * torch.randn(18, 2, generator=gen)
    centers, assign, density = dpc_knn(x, 3, k=3)
    assert centers.tolist() == sorted(centers.tolist()) and centers.numel() == 3
    assert sorted(labels[centers].tolist()) == [0, 1, 2]  # one peak per blob
    assert torch.equal(labels[centers][assign], labels)  # every point joins its own blob's peak
    assert torch.equal(assign[centers], torch.arange(3))
    assert density.shape == (18,)


def test_dpc_knn_is_deterministic_on_ties():
    from tokpress.ops import dpc_knn

    x = torch.zeros(5, 4)  # all identical: every score ties
    centers, assign, _ = dpc_knn(x, 2)
    assert centers.tolist() == [0, 1] and dpc_knn(x, 2)[0].tolist() == [0, 1]
    assert dpc_knn(torch.ones(1, 3), 4)[0].tolist() == [0]


def test_dpc_knn_density_counts_the_point_itself_like_the_reference():
    """Hand-derived on four 1-D points 0, 1, 1.5, 4 with k = 3 (D = 1, so distances are plain |x_i - x_j|).

    Reference rule (TCFormer's ``cluster_dpc_knn`` as used by HoliTom / FastVID / PruneVid): ``topk(k)`` of a distance
    row includes the point itself (0), so the density averages the point and its 2 nearest others:
    a: (0 + 1 + 2.25) / 3 = 1.0833, b: (0 + .25 + 1) / 3 = .4167, c: (0 + .25 + 2.25) / 3 = .8333,
    d: (0 + 6.25 + 9) / 3 = 5.0833 (density = exp(-that)), so b > c > a > d.
    delta: b (densest) -> the largest distance overall, 4; c -> b at .5; a -> min(b 1, c 1.5) = 1; d -> c at 2.5.
    score = density * delta: b 2.637, a .3385, c .2173, d .0155 -> centers {a, b}; c and d join b (nearer than a).
    (Averaging over the k nearest *others* would make c the densest and pick {b, c}.)
    """
    from tokpress.ops import dpc_knn

    x = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
    centers, assign, density = dpc_knn(x, 2, k=3)
    assert centers.tolist() == [0, 1]
    assert assign.tolist() == [0, 1, 1, 1]
    want = torch.exp(-torch.tensor([3.25, 1.25, 2.5, 15.25]) / 3)
    torch.testing.assert_close(density, want)


def _reference_dpc_knn(x: torch.Tensor, c: int, k: int) -> tuple[list[int], list[int]]:
    """A plain re-statement of the reference routine (one batch, no tie noise): self-inclusive top-k density, strict
    'denser' mask, the densest point's delta = the largest distance of the matrix, top-c scores."""
    dist = torch.cdist(x.double(), x.double()) / x.shape[-1] ** 0.5
    density = (-(dist.topk(k, dim=-1, largest=False).values ** 2).mean(-1)).exp()
    mask = (density[None, :] > density[:, None]).double()
    delta = (dist * mask + dist.max() * (1 - mask)).min(-1).values
    centers = (delta * density).topk(c).indices
    assign = dist[:, centers].argmin(-1)
    assign[centers] = torch.arange(c)
    order = centers.argsort()  # report centers ascending, assignments renumbered to match
    rank = torch.empty_like(order)
    rank[order] = torch.arange(c)
    return centers[order].tolist(), rank[assign].tolist()


@pytest.mark.parametrize("n,c,k,dim", [(40, 5, 4, 8), (196, 20, 7, 16), (64, 63, 3, 4), (30, 1, 7, 2)])
def test_dpc_knn_matches_a_restatement_of_the_reference(n, c, k, dim):
    from tokpress.ops import dpc_knn

    gen = torch.Generator().manual_seed(n + c)
    for _ in range(3):
        x = torch.randn(n, dim, generator=gen) * torch.rand(n, 1, generator=gen)  # uneven densities, no ties
        centers, assign, _ = dpc_knn(x, c, k=k)
        want_centers, want_assign = _reference_dpc_knn(x, c, k)
        assert centers.tolist() == want_centers
        assert assign.tolist() == want_assign


def test_group_mean_weighted():
    from tokpress.ops import group_mean, group_size

    x = torch.tensor([[1.0], [3.0], [10.0], [7.0]], dtype=torch.bfloat16)
    groups = torch.tensor([0, 0, 2, 0])
    w = torch.tensor([1.0, 3.0, 2.0, 0.0])
    out = group_mean(x, groups, 3, w)
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, 0], torch.tensor([(1 + 9) / 4, 0.0, 10.0]))
    assert group_size(groups, 3).tolist() == [3.0, 0.0, 1.0]
