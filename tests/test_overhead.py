"""Selection-overhead benchmark (eval/bench/overhead.py) and the exactness of the speed-ups it motivated: each
faster code path is compared bit for bit with the straightforward form it replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokpress.errors import ConfigError
from tokpress.eval.bench.overhead import overhead_table, parse_shape, run_overhead, synthetic_video
from tokpress.ops import cosine_adjacent, cosine_matrix, cosine_pairs, group_mean
from tokpress.policies.inner.sttm import _PAIR_CHUNK, _cos, _pair_cos, _unit, quadtree_links
from tokpress.policies.outer.fastvid import dtm_merge, dtm_merge_excluding, unit_rows


def _rows(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random rows with very different norms (and one all-zero row, the eps clamp's case)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen) * torch.rand(*shape[:-1], 1, generator=gen) * 10
    x.view(-1, shape[-1])[0] = 0
    return x


@pytest.mark.parametrize("shape", [(5, 7, 33), (3, 1, 8), (4, 9, 256)])
def test_cosine_adjacent_is_bit_identical_to_cosine_similarity(shape):
    x = _rows(0, shape)
    assert torch.equal(cosine_adjacent(x), F.cosine_similarity(x[1:], x[:-1], dim=-1))


def test_group_mean_without_weights_is_bit_identical_to_unit_weights():
    x = _rows(1, (40, 17))
    groups = torch.randint(0, 6, (40,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(group_mean(x, groups, 7), group_mean(x, groups, 7, torch.ones(40)))
    assert bool((group_mean(x, groups, 7)[6] == 0).all())  # group 6 is empty: zeros


def test_dtm_merges_with_a_shared_unit_pool_match_their_cosine_matrix_form():
    pool = _rows(3, (30, 24))
    anchors = torch.tensor([2, 11, 29])
    # the straightforward form: every row joins the anchor of largest cosine_matrix entry
    expected = cosine_matrix(pool, pool[anchors]).argmax(-1)
    expected[anchors] = torch.arange(3)
    merged, n = dtm_merge(pool, anchors, 0.6)
    assert torch.equal(n, torch.bincount(expected, minlength=3).float())
    shared = dtm_merge(pool, anchors, 0.6, unit_rows(pool))
    assert torch.equal(shared[0], merged) and torch.equal(shared[1], n)
    other = torch.zeros(30, dtype=torch.bool)
    other[[5, 7]] = True
    plain = dtm_merge_excluding(pool, anchors, 0.6, other, 2)
    fast = dtm_merge_excluding(pool, anchors, 0.6, other, 2, unit_rows(pool))
    assert torch.equal(plain[0], fast[0]) and torch.equal(plain[1], fast[1])
    assert torch.equal(unit_rows(pool)[anchors], unit_rows(pool[anchors]))  # row-wise: gathering commutes


def test_quadtree_links_with_precomputed_weighted_rows_are_unchanged():
    video = synthetic_video(3, 4, 4, 16, seed=4)
    n, grid = video.grid.numel, video.grid
    weights = torch.rand(n, generator=torch.Generator().manual_seed(5)) + 0.5
    t = torch.arange(n)
    frame, y, x = t // 16, (t % 16) // 4, t % 4
    plain = quadtree_links(video.features, weights, frame, y, x, grid, 1, 0)
    fast = quadtree_links(video.features, weights, frame, y, x, grid, 1, 0, video.features * weights[:, None])
    for name in ("src", "dst", "key", "blocks", "next_key"):
        assert torch.equal(getattr(plain, name), getattr(fast, name)), name


def test_synthetic_video_has_repeating_frames_and_per_frame_attention():
    video = synthetic_video(12, 5, 6, 32, seed=0)
    assert video.features.shape == (12 * 30, 32) and video.attention.shape == (12 * 30,)
    frames = video.features.reshape(12, 30, 32)
    sim = cosine_adjacent(frames)
    # inside a scene most positions barely change (5 % noise); a cut changes every position
    assert float((sim > 0.95).float().mean()) > 0.5
    assert torch.allclose(video.attention.reshape(12, 30).sum(1), torch.ones(12))


def test_run_overhead_times_outer_inner_and_gather_and_tabulates():
    records = run_overhead(["gather", "uniform", "holitom"], shapes=["4x3x3x8"], ratio=0.5, repeats=2)
    got = {(r["method"], r["stage"]) for r in records}
    assert got == {("gather", "gather"), ("uniform", "outer"), ("holitom", "outer"), ("holitom", "inner")}
    for r in records:
        assert r["tokens"] == 36 and r["budget"] == 18 and r["repeats"] == 2 and len(r["times_ms"]) == 2
        assert 0 <= r["min_ms"] <= r["median_ms"]
        assert r["dtype"] == "float32" and r["device"] == "cpu"
    table = overhead_table(records)
    assert "| holitom | inner |" in table and "4x3x3x8" in table


def test_overhead_rejects_bad_shapes_ratios_and_methods():
    assert parse_shape("32x14x14x3584") == (32, 14, 14, 3584)
    with pytest.raises(ConfigError, match="frames x height x width x dim"):
        parse_shape("32x14x14")
    with pytest.raises(ConfigError, match="ratio"):
        run_overhead(["uniform"], shapes=["2x2x2x4"], ratio=0)
    with pytest.raises(ConfigError, match="unknown policy"):
        run_overhead(["nope"], shapes=["2x2x2x4"], repeats=1)


@pytest.mark.parametrize("head_dim", [0, 8])
def test_sttm_chunked_pair_cosines_are_bit_identical_to_one_gather(head_dim):
    units = _unit(_rows(6, (300, 64)), head_dim)
    gen = torch.Generator().manual_seed(7)
    for e in (1, 5, _PAIR_CHUNK, _PAIR_CHUNK + 1, 3 * _PAIR_CHUNK + 7):
        a, b = torch.randint(0, 300, (e,), generator=gen), torch.randint(0, 300, (e,), generator=gen)
        assert torch.equal(_pair_cos(units, a, b), _cos(units[a], units[b])), e


def test_cosine_pairs_is_bit_identical_to_cosine_similarity_of_gathered_rows():
    x = _rows(8, (50, 3, 40))
    gen = torch.Generator().manual_seed(9)
    first, second = torch.randint(0, 50, (70,), generator=gen), torch.randint(0, 50, (70,), generator=gen)
    got = cosine_pairs(x, first, second)
    assert got.shape == (70, 3)
    assert torch.equal(got, F.cosine_similarity(x[first], x[second], dim=-1))
    # a row with itself: 1 up to rounding, 0 for the all-zero row (index 0: the eps clamp)
    self_cos = cosine_pairs(x[:, 0], first, first)
    torch.testing.assert_close(self_cos, torch.where(first == 0, 0.0, 1.0), rtol=0, atol=1e-6)


def test_command_line_overhead_writes_every_policy(tmp_path):
    import json

    from typer.testing import CliRunner

    from tokpress.cli import app

    out = tmp_path / "ovh"
    args = ["bench", "--overhead", "--shapes", "4x6x6x32", "--ratios", "0.5", "--repeats", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = json.loads((out / "overhead.json").read_text())
    names = {r["method"] for r in records}
    assert {"gather", "evs", "holitom", "fastv"} <= names and "fixed" not in names
    assert all(r["tokens"] == 4 * 6 * 6 and r["ratio"] == 0.5 for r in records)
    bad = CliRunner().invoke(app, ["bench", "--overhead", "--shapes", "4x6", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--shapes" in bad.output
