"""FastVID's two forms against plain re-statements of the authors' code, and the Qwen form's rules by hand.

The re-statements below follow LunarShen/FastVID's LLaVA-OneVision "parallel" code and its Qwen2.5-VL code step by
step (loops, no vectorisation, written from reading them; the random tie-breaking noise left out). On inputs where
tokpress's exact-budget reconciliation has nothing to reconcile (the budget is ``T * int(P r)``, no per-frame cap
binds, every anchor share divides evenly) tokpress must keep the same tokens with the same merged features.
"""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.fastvid import FastVIDConfig, FastVIDPolicy, dtm_merge_excluding, qwen_counts


# ---- re-statements of the reference ------------------------------------------------------------------------------
def _segments(x: torch.Tensor, c: int, tau: float) -> tuple[list[int], torch.Tensor]:
    g = x.double().mean(1)
    g = g / g.norm(dim=1, keepdim=True)
    sim = (g[:-1] * g[1:]).sum(1)
    cuts = set(torch.topk(sim, c - 1, largest=False).indices.tolist()) | set((sim < tau).nonzero().flatten().tolist())
    ends = sorted(cuts) + [x.shape[0] - 1]
    sizes = [ends[0] + 1] + [b - a for a, b in zip(ends, ends[1:])]
    return sizes, sim


def _density_score(tokens: torch.Tensor, k: int = 4) -> torch.Tensor:
    dist = torch.cdist(tokens.double(), tokens.double()) / tokens.shape[-1] ** 0.5
    density = (-(dist.topk(min(k, len(tokens)), dim=-1, largest=False).values ** 2).mean(-1)).exp()
    denser = (density[None, :] > density[:, None]).double()
    delta = (dist * denser + dist.max() * (1 - denser)).min(-1).values
    return delta * density


def _merge(targets: torch.Tensor, pool: torch.Tensor, beta: float) -> torch.Tensor:
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    assign = (unit(pool) @ unit(targets).T).argmax(1)
    out = []
    for a in range(len(targets)):
        members = pool[assign == a]
        w = max(1 / (len(members) + 1), beta)
        agg = members.sum(0) / max(len(members), 1)
        out.append(w * targets[a] + (1 - w) * agg)
    return torch.stack(out)


def reference_llava(x, att, frame_retain, d=0.4, p=4, beta=0.6, c=8, tau=0.9):
    """The LLaVA-OneVision parallel form: ``{kept index: feature}`` over the ``[T, P, D]`` grid."""
    t, per_frame, _ = x.shape
    sizes, _ = _segments(x, c, tau)
    salient_n = frame_retain - int(frame_retain * d)
    context_n = frame_retain - salient_n
    share = [0] * t
    start = 0
    for s in sizes:
        for i in range(start, start + s):
            if (start + s - 1 - i) % p == 0:
                share[i] = context_n * s // math.ceil(s / p)
        start += s
    out, filtered, scores = {}, [], []
    for f in range(t):
        top = torch.topk(att[f], salient_n).indices.tolist()
        for i in top:
            out[f * per_frame + i] = x[f, i].double()
        rest = [i for i in range(per_frame) if i not in top]
        filtered.append(rest)
        scores.append(_density_score(x[f, rest]))
    start = 0
    for s in sizes:
        frames = range(start, start + s)
        targets = [f for f in frames if share[f] > 0]
        single = s == 1 or (targets and share[targets[0]] == context_n)
        for f in targets:
            local = torch.topk(scores[f], share[f]).indices.tolist()
            anchors = [f * per_frame + filtered[f][i] for i in local]
            pool = [g * per_frame + i for g in ([f] if single else frames) for i in filtered[g]]
            flat = x.reshape(-1, x.shape[-1]).double()
            for a, feat in zip(anchors, _merge(flat[anchors], flat[pool], beta)):
                out[a] = feat
        start += s
    return out


def reference_qwen(x, att, frame_retain, d=0.4, p=4, beta=0.6, c=8, tau=0.84, ignore=0.95):
    """The Qwen2.5-VL form: ``{kept index: feature}``."""
    t, per_frame, dim = x.shape
    sizes, sim = _segments(x, c, tau)
    flat = x.reshape(-1, dim).double()
    out, start = {}, 0
    for s in sizes:
        seg_retain = frame_retain * s
        context = max(int(seg_retain * d), 1)
        spread = seg_retain - context
        if s == 1:
            sal, ctx = [spread], [context]
        else:
            inner = [j for j in range(s - 1) if sim[start + j] < ignore]
            subs = [inner[0] + 1] + [b - a for a, b in zip(inner, inner[1:])] + [s - inner[-1] - 1] if inner else [s]
            v, a_n = len(subs), math.ceil(len(subs) / p)
            fs = [spread // v + (i < spread % v) for i in range(v)]
            tc = [context // a_n + (i < context % a_n) for i in range(a_n)]
            fc, j = [], 0
            for i in range(v):
                if i % p == 0:
                    fc.append(min(tc[j], per_frame // 2))
                    j += 1
                else:
                    fc.append(0)
            fc.reverse()
            sal, ctx = [], []
            for i, size in enumerate(subs):
                sal += [0] * (size - 1)
                ctx += [0] * (size - 1)
                ctx.append(min(fc[i], per_frame // 2))
                sal.append(min(fs[i], per_frame - ctx[-1]))
        salient, anchor_sets = [], []
        for i in range(s):
            f = start + i
            top = torch.topk(att[f], sal[i]).indices.tolist() if sal[i] else []
            salient += [f * per_frame + j for j in top]
            if ctx[i]:
                rest = [j for j in range(per_frame) if j not in top]
                local = sorted(torch.topk(_density_score(x[f, rest]), ctx[i]).indices.tolist())
                anchor_sets.append([f * per_frame + rest[j] for j in local])
        for idx in salient:
            out[idx] = flat[idx]
        seg = range(start * per_frame, (start + s) * per_frame)
        for anchors in anchor_sets:
            pool = [i for i in seg if i not in salient and i not in anchors]
            for a, feat in zip(anchors, _merge(flat[anchors], flat[pool], beta)):
                out[a] = feat
        start += s
    return out


# ---- crafted videos ----------------------------------------------------------------------------------------------
def video_with_segments(plan: list[list[float]], per_frame: int = 12, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """``[T, P, D]`` tokens: one orthogonal plane per segment; inside a segment, frame ``i + 1``'s offset is frame
    ``i``'s rotated by ``acos(plan[s][i])`` in that plane, so adjacent frames' global features have about that
    cosine; tokens are the offset (norm 4) plus noise (0.3)."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for s, cosines in enumerate(plan):
        angles = torch.tensor([0.0] + [math.acos(v) for v in cosines]).cumsum(0) + 0.3 * s
        for phi in angles:
            offset = torch.zeros(dim)
            offset[2 * s], offset[2 * s + 1] = 4 * phi.cos(), 4 * phi.sin()
            frames.append(offset + 0.3 * torch.randn(per_frame, dim, generator=gen))
    return torch.stack(frames)


def tokpress_plan(x: torch.Tensor, att: torch.Tensor, budget: int, form: str, **options) -> dict[int, torch.Tensor]:
    t, per_frame, dim = x.shape
    grid = Grid(t, 1, per_frame)
    plan = FastVIDPolicy(FastVIDConfig(form=form, **options)).plan(
        VideoTokens(x.reshape(-1, dim), grid, attention=att.flatten()), budget
    )
    return {int(i): f for i, f in zip(plan.keep, plan.features)}


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for i in want:
        torch.testing.assert_close(got[i].double(), want[i], atol=1e-5, rtol=1e-5)


# segment lengths 2, 3, 1, 2 (8 frames); inside the 3-frame segment one transition (0.92) is below ``ignore``
SEGMENTS = [[0.99], [0.92, 0.99], [], [0.99]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("frame_retain", [2, 3, 5])  # 2: int(2 * 0.4) = 0 context tokens, salient only
def test_llava_form_matches_the_reference(seed, frame_retain):
    x = video_with_segments(SEGMENTS, seed=seed)
    att = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(seed))
    sizes, _ = _segments(x, 4, 0.9)
    assert sizes == [2, 3, 1, 2]  # the crafted structure holds
    want = reference_llava(x, att, frame_retain, c=4)
    got = tokpress_plan(x, att, frame_retain * x.shape[0], "llava", c=4)
    assert_same(got, want)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("frame_retain", [2, 3, 4])
def test_qwen_form_matches_the_reference(seed, frame_retain):
    x = video_with_segments(SEGMENTS, seed=seed)
    att = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(seed))
    sizes, sim = _segments(x, 4, 0.84)
    assert sizes == [2, 3, 1, 2] and 0.84 < float(sim[2]) < 0.95  # one sub-segment cut inside the 3-frame segment
    want = reference_qwen(x, att, frame_retain, c=4)
    got = tokpress_plan(x, att, frame_retain * x.shape[0], "qwen", c=4)
    assert_same(got, want)


def test_the_two_forms_differ_and_auto_follows_the_family():
    x = video_with_segments(SEGMENTS, seed=5)
    att = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(5))
    grid = Grid(8, 1, 12)
    video = lambda family: VideoTokens(x.reshape(-1, 16), grid, attention=att.flatten(), family=family)  # noqa: E731
    auto = FastVIDPolicy(FastVIDConfig(c=4))
    qwen, llava = auto.plan(video("qwen2_vl"), 24), auto.plan(video("llava_onevision"), 24)
    assert not torch.equal(qwen.keep, llava.keep)
    forced = FastVIDPolicy(FastVIDConfig(c=4, form="qwen")).plan(video("llava_onevision"), 24)
    assert torch.equal(forced.keep, qwen.keep) and torch.equal(forced.features, qwen.features)
    assert torch.equal(FastVIDPolicy(FastVIDConfig(c=4)).plan(video(""), 24).keep, llava.keep)


# ---- the Qwen form's rules, by hand ------------------------------------------------------------------------------
def test_qwen_counts_spread_salient_over_sub_segments_and_anchor_from_the_end():
    """6 frames, P = 8, budget 12 (2 per frame), one segment cut into sub-segments [0, 1], [2, 3], [4, 5]
    (similarities below ``ignore`` after frames 1 and 3), d = 0.4, p = 2.

    R = 12, C = max(int(4.8), 1) = 4, salient 8. Only the sub-segments' last frames (1, 3, 5) get tokens: salient 8
    over 3 -> 3, 3, 2 (remainder to the earliest); anchor sub-segments every p = 2 from the end -> the 3rd and the
    1st (frames 5 and 1), ceil(3 / 2) = 2 of them, 4 / 2 = 2 anchors each (cap P // 2 = 4 does not bind)."""
    lengths = torch.tensor([6])
    sim = torch.tensor([0.99, 0.9, 0.99, 0.9, 0.99])
    salient, anchors = qwen_counts(lengths, sim, 8, 12, 0.4, 2, 0.95)
    assert salient.tolist() == [0, 3, 0, 3, 0, 2]
    assert anchors.tolist() == [0, 2, 0, 0, 0, 2]


def test_qwen_counts_give_what_the_caps_cut_back_as_salient_tokens():
    """3 frames, P = 4, budget 9 (3 per frame), one segment, no sub-segment cut. R = 9, C = int(3.6) = 3, salient 6,
    all on the last frame: anchors min(3, P // 2 = 2) = 2, salient min(6, 4 - 2) = 2. The reference keeps those 4
    tokens; tokpress pours the 5 lost ones into the latest frames with room: frame 2 is full, frame 1 takes 4,
    frame 0 takes 1."""
    salient, anchors = qwen_counts(torch.tensor([3]), torch.tensor([0.99, 0.99]), 4, 9, 0.4, 4, 0.95)
    assert salient.tolist() == [1, 4, 2]
    assert anchors.tolist() == [0, 0, 2]


def test_qwen_counts_keep_one_merged_token_per_segment():
    """Two one-frame segments with budget 1 each: int(1 * 0.4) = 0, but every segment keeps max(., 1) = 1 context
    token (the LLaVA form would keep 1 salient token instead)."""
    salient, anchors = qwen_counts(torch.tensor([1, 1]), torch.tensor([0.1]), 5, 2, 0.4, 4, 0.95)
    assert salient.tolist() == [0, 0] and anchors.tolist() == [1, 1]


def test_qwen_plan_by_hand_the_merge_excludes_the_kept_tokens():
    """2 frames x 4 tokens, one segment (c = 1, tau = -1), no sub-segment cut (ignore = -1), budget 3.

    Shares: frame 0 gets 1, frame 1 gets 2 (bounds floor(i * 3 / 2) = 0, 1, 3); R = 3, C = max(int(1.2), 1) = 1,
    salient 2, all on the last frame: its two most attended tokens (4 and 6) and one anchor among its other two
    (5 and 7: equal densities, the lower index wins the tie, and its delta is the largest distance) -> anchor 5.
    The merge pool is every other token of the segment that is not kept: 0, 1, 2, 3 and 7, mean
    ((1,0) + (0,1) + (1,1) + (2,0) + (1,3)) / 5 = (1, 1); n = 5, w = max(1/6, 0.6) = 0.6:
    0.6 (0, 2) + 0.4 (1, 1) = (0.4, 1.6). Sizes: 1 for the salient tokens, 1 + 5 for the anchor.
    """
    x = torch.tensor([[1, 0], [0, 1], [1, 1], [2, 0], [5, 5], [0, 2], [3, 0], [1, 3]], dtype=torch.float32)
    att = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.9, 0.1, 0.8, 0.2])
    cfg = FastVIDConfig(c=1, tau=-1.0, ignore=-1.0, form="qwen")
    plan = FastVIDPolicy(cfg).plan(VideoTokens(x, Grid(2, 2, 2), attention=att), 3)
    assert plan.keep.tolist() == [4, 5, 6]
    torch.testing.assert_close(plan.features, torch.tensor([[5.0, 5.0], [0.4, 1.6], [3.0, 0.0]]))
    assert plan.sizes.tolist() == [1.0, 6.0, 1.0]


def test_dtm_merge_excluding_leaves_an_unjoined_anchor_as_it_is():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    merged, sizes = dtm_merge_excluding(pool, torch.tensor([0, 1]), 0.6, torch.zeros(3, dtype=torch.bool), 2)
    # row 2 joins anchor 0 (cosine .99 vs .11): w = max(1/2, .6) = .6 -> .6 (1, 0) + .4 (.9, .1); anchor 1 unjoined
    torch.testing.assert_close(merged, torch.tensor([[0.96, 0.04], [0.0, 1.0]]))
    assert sizes.tolist() == [1.5, 1.0]  # the joining row counts 1 / A' = 1/2


@pytest.mark.parametrize("options", [{}, {"p": 1}, {"d": 1.0}, {"d": 0.0}, {"c": 1, "tau": -1.0, "ignore": 0.99}])
def test_qwen_form_keeps_the_exact_budget_and_accounts_for_every_token(options):
    grid = Grid(8, 3, 4)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(8, 1, 16, generator=gen) + 0.5 * torch.randn(8, 12, 16, generator=gen)
    video = VideoTokens(x.reshape(-1, 16), grid, attention=torch.rand(grid.numel, generator=gen))
    policy = FastVIDPolicy(FastVIDConfig(form="qwen", **options))
    for budget in (1, 5, 8, 13, 30, 50, 80, 95):
        plan = policy.plan(video, budget)
        assert plan.keep.numel() == budget and bool((plan.keep[1:] > plan.keep[:-1]).all())
        assert plan.features.shape == (budget, 16) and bool((plan.sizes > 0).all())
        if budget >= grid.frames:  # every segment has a budget, hence an anchor: all tokens accounted for
            assert plan.sizes.sum().item() == pytest.approx(grid.numel)
    assert policy.plan(video, grid.numel).keep.tolist() == list(range(grid.numel))
