"""Issue 15 item 3: DivPrune's and FastVID's cheaper selections select exactly what their straightforward forms do.

Each straightforward form below is the policy as it was written before the speed-up (whole matrices, one gather per
use, a mask per pick, concatenate-then-reorder), restated as plainly as possible. The fast code must give the same
picks, the same kept indices and bit-identical merged features and sizes on random inputs and on crafted ones full
of exact ties (duplicate tokens, duplicate frames, attention ties, vectors whose cosines are exact in float32).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from tokpress.eval.bench.overhead import synthetic_video
from tokpress.ops import cosine_adjacent, cosine_matrix, dpc_knn, group_mean, group_size
from tokpress.policies.base import Grid, Plan, VideoTokens
from tokpress.policies.outer import divprune
from tokpress.policies.outer.fastvid import (
    FastVIDConfig,
    FastVIDPolicy,
    dyseg,
    gathered_unit_rows,
    qwen_counts,
    stprune_counts,
    unit_rows,
)


# ---- DivPrune ----------------------------------------------------------------------------------------------------
def plain_maxmin(x: torch.Tensor, k: int) -> list[int]:
    """The greedy as first written: the whole ``1 - cos`` matrix, the diagonal masked, a mask per pick."""
    dist = 1.0 - cosine_matrix(x)
    n = x.shape[0]
    isolation = dist.masked_fill(torch.eye(n, dtype=torch.bool), float("inf")).amin(dim=1)
    picks = [int(isolation.argmax())]
    to_set = dist[picks[0]].clone()
    to_set[picks[0]] = float("-inf")
    for _ in range(1, k):
        pick = int(to_set.argmax())
        picks.append(pick)
        to_set = torch.minimum(to_set, dist[pick])
        to_set[pick] = float("-inf")
    return picks


def exact_cosine_rows(n: int, seed: int) -> torch.Tensor:
    """Rows of 4 entries +-0.5 (norm exactly 1) in 8 of 16 columns: every cosine is a multiple of 1/4, exact in
    float32 whatever the summation order, so ties are exact ties; with 16 sign patterns x 2 placements many rows
    are duplicates."""
    gen = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(n, 4, generator=gen) < 0.5, -0.5, 0.5)
    x = torch.zeros(n, 16)
    shift = 4 * torch.randint(0, 2, (n,), generator=gen)
    x[torch.arange(n)[:, None], shift[:, None] + torch.arange(4)] = signs
    return x


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(divprune, "BLOCK", 64)  # several blocks (and mirrored parts) at test sizes


@pytest.mark.parametrize("n,dim,seed", [(50, 8, 0), (300, 32, 1), (257, 3, 2), (1, 4, 3)])
def test_divprune_picks_equal_the_plain_greedy_on_random_inputs(small_blocks, n, dim, seed):
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    for k in sorted({1, max(1, n // 10), n // 2 or 1, n}):
        assert divprune.maxmin_diverse(x, k).tolist() == plain_maxmin(x, k)


@pytest.mark.parametrize("seed", range(3))
def test_divprune_picks_equal_the_plain_greedy_on_exact_ties_and_duplicates(small_blocks, seed):
    x = exact_cosine_rows(200, seed)
    assert len({tuple(r) for r in x.tolist()}) < 200  # duplicates present
    for k in (1, 2, 5, 32, 33, 100, 200):  # 32 distinct rows: from pick 33 on every distance to the picks is 0
        assert divprune.maxmin_diverse(x, k).tolist() == plain_maxmin(x, k)


def test_divprune_picks_equal_at_the_default_block_on_video_like_tokens():
    video = synthetic_video(6, 14, 14, 24, seed=5)  # 1176 tokens: two blocks of the default 1024
    for k in (118, 294, 588):
        assert divprune.maxmin_diverse(video.features, k).tolist() == plain_maxmin(video.features, k)


def test_divprune_bf16_picks_equal_the_plain_greedy_of_the_same_values(small_blocks):
    x = torch.randn(150, 24, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    assert divprune.maxmin_diverse(x, 40).tolist() == plain_maxmin(x.float(), 40)


@pytest.mark.parametrize("n,block", [(10, 64), (200, 64), (200, 7), (129, 64)])
def test_cosine_gram_is_symmetric_and_the_one_call_product(n, block):
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(n))
    gram = divprune.cosine_gram(x, block)
    assert torch.equal(gram, gram.T)  # mirrored: exactly symmetric by construction
    unit = torch.nn.functional.normalize(x, dim=-1)
    torch.testing.assert_close(gram, unit @ unit.T, rtol=0, atol=1e-6)
    exact = exact_cosine_rows(n, 0)
    assert torch.equal(divprune.cosine_gram(exact, block), exact @ exact.T)  # exact cosines: no rounding at all


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="bit-identity of the blocks is MKL's behaviour")
def test_cosine_gram_blocks_are_bit_identical_to_one_product_with_mkl():
    x = torch.randn(2500, 448, generator=torch.Generator().manual_seed(0))
    unit = torch.nn.functional.normalize(x, dim=-1)
    assert torch.equal(divprune.cosine_gram(x), unit @ unit.T)


# ---- FastVID -----------------------------------------------------------------------------------------------------
def plain_fastvid(video: VideoTokens, budget: int, cfg: FastVIDConfig) -> Plan:
    """FastVID's plan as first written: one gathered pool per segment, ``cosine_matrix`` per anchor frame, group
    means of gathered rows, every piece concatenated then reordered."""
    g, x = video.grid, video.features
    t, p = g.frames, g.per_frame
    form = cfg.form_for(video.family)
    glob = x.reshape(t, p, -1).float().mean(1)
    lengths = dyseg(glob, cfg.c, cfg.tau_for(form))
    if form == "qwen":
        sim = cosine_adjacent(glob[:, None, :]).squeeze(1)
        salient, anchors = qwen_counts(lengths, sim, p, budget, cfg.d, cfg.p, cfg.ignore)
    else:
        salient, anchors = stprune_counts(lengths, p, budget, cfg.d, cfg.p)
    order = torch.sort(video.attention.reshape(t, p).float(), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(p).expand(t, p))
    is_salient = rank < salient[:, None]
    keep = [is_salient.flatten().nonzero().squeeze(1)]
    feats, sizes = [x[keep[0]].float()], [torch.ones(keep[0].numel())]
    n_free = (p - salient).tolist()
    first = [0, *itertools.accumulate(n_free)]
    start = 0
    for length in lengths.tolist():
        stop = start + length
        frames = [f for f in range(start, stop) if anchors[f] > 0]
        if frames:
            pool = (~is_salient[start:stop]).flatten().nonzero().squeeze(1) + start * p
            xp = x[pool].float()
            centers = []
            for f in frames:
                off = first[f] - first[start]
                centers.append(dpc_knn(xp[off : off + n_free[f]], int(anchors[f]), k=cfg.k)[0] + off)
            every = torch.cat(centers)
            for own in centers:
                m = own.numel()
                if form == "qwen":
                    joins = torch.ones(pool.numel(), dtype=torch.bool)
                    joins[own] = False
                    assign = cosine_matrix(xp[joins], xp[own]).argmax(-1)
                    n = group_size(assign, m)
                    w = (1 / (n + 1)).clamp_min(cfg.beta)[:, None]
                    merged = w * xp[own] + (1 - w) * group_mean(xp[joins], assign, m)
                    other = torch.zeros(pool.numel(), dtype=torch.bool)
                    other[every] = True
                    other[own] = False
                    size = 1 + group_size(assign, m, (~other[joins]).float() / len(frames))
                else:
                    assign = cosine_matrix(xp, xp[own]).argmax(-1)
                    assign[own] = torch.arange(m)
                    n = group_size(assign, m)
                    w = (1 / (n + 1)).clamp_min(cfg.beta)[:, None]
                    merged = w * xp[own] + (1 - w) * group_mean(xp, assign, m)
                    size = n / len(frames)
                keep.append(pool[own])
                feats.append(merged)
                sizes.append(size)
        start = stop
    keep = torch.cat(keep)
    order = keep.argsort()
    return Plan(keep[order], torch.cat(feats)[order].to(x.dtype), torch.cat(sizes)[order])


def assert_same_plan(fast: Plan, plain: Plan) -> None:
    assert torch.equal(fast.keep, plain.keep)
    assert fast.features.dtype == plain.features.dtype
    assert torch.equal(fast.features, plain.features)  # bit-identical merged features
    assert torch.equal(fast.sizes, plain.sizes)


FORMS = ["llava_onevision", "qwen2_5_vl"]


@pytest.mark.parametrize("family", FORMS)
@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.1, 0.03])
def test_fastvid_equals_the_plain_form_on_video_like_tokens(family, ratio):
    video = dataclasses.replace(synthetic_video(12, 6, 7, 20, seed=3), family=family)
    budget = round(ratio * video.grid.numel)
    cfg = FastVIDConfig(c=3)
    assert_same_plan(FastVIDPolicy(cfg).plan(video, budget), plain_fastvid(video, budget, cfg))


@pytest.mark.parametrize("family", FORMS)
@pytest.mark.parametrize("seed", range(3))
def test_fastvid_equals_the_plain_form_on_random_tokens_and_options(family, seed):
    gen = torch.Generator().manual_seed(seed)
    grid = Grid(9, 3, 4)
    video = VideoTokens(
        torch.randn(grid.numel, 8, generator=gen), grid, attention=torch.rand(grid.numel, generator=gen), family=family
    )
    for cfg in (FastVIDConfig(), FastVIDConfig(c=2, p=1, d=0.7), FastVIDConfig(c=4, p=2, d=0.2, tau=-1.0)):
        for budget in (1, 5, 40, 107):
            assert_same_plan(FastVIDPolicy(cfg).plan(video, budget), plain_fastvid(video, budget, cfg))


@pytest.mark.parametrize("family", FORMS)
def test_fastvid_equals_the_plain_form_on_exact_ties(family):
    # duplicate frames, duplicate tokens inside a frame, tied attention and cosines exact in float32
    grid = Grid(8, 4, 5)
    frame = exact_cosine_rows(grid.per_frame, 1)
    frame[5:10] = frame[0]  # repeated tokens
    other = exact_cosine_rows(grid.per_frame, 2)
    x = torch.cat([frame, frame, frame, other, other, frame, other, other])
    attention = torch.tensor([1.0, 0.5, 0.5, 0.25] * 5).repeat(grid.frames)  # ties everywhere
    video = VideoTokens(x, grid, attention=attention, family=family)
    for cfg in (FastVIDConfig(), FastVIDConfig(c=2, p=2, d=0.5)):
        for budget in (3, 16, 64, 120):
            assert_same_plan(FastVIDPolicy(cfg).plan(video, budget), plain_fastvid(video, budget, cfg))


@pytest.mark.parametrize("family", FORMS)
def test_fastvid_bf16_equals_the_plain_form(family):
    video = synthetic_video(6, 4, 4, 16, seed=2, dtype=torch.bfloat16)
    video = dataclasses.replace(video, family=family)
    for budget in (10, 40):
        assert_same_plan(
            FastVIDPolicy(FastVIDConfig()).plan(video, budget), plain_fastvid(video, budget, FastVIDConfig())
        )


def test_fastvid_full_share_anchor_frames_skip_dpc_knn_with_the_same_anchors(monkeypatch):
    # r = 0.5 on long segments: anchor frames' shares exceed their non-salient tokens, so every one is an anchor
    video = dataclasses.replace(synthetic_video(8, 4, 4, 12, seed=1), family="llava_onevision")
    cfg = FastVIDConfig(c=1, tau=-1.0)  # one segment of 8 frames, 2 anchor frames
    plain = plain_fastvid(video, 64, cfg)
    calls = []
    import tokpress.policies.outer.fastvid as module

    monkeypatch.setattr(module, "dpc_knn", lambda *a, **k: calls.append(a) or dpc_knn(*a, **k))
    assert_same_plan(FastVIDPolicy(cfg).plan(video, 64), plain)
    assert calls == []


def test_gathered_unit_rows_are_unit_rows_of_the_gathered_rows():
    x = torch.randn(30, 9, generator=torch.Generator().manual_seed(4))
    rows = torch.tensor([0, 3, 4, 17, 29])
    assert torch.equal(gathered_unit_rows(x, rows), unit_rows(x[rows]))
    xb = x.to(torch.bfloat16)
    assert torch.equal(gathered_unit_rows(xb, rows), unit_rows(xb[rows]))
