"""DyCoke: temporal token merging (outer) and decode-time KV selection (inner), on crafted tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokpress.config import budget as budget_of
from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import Grid, InnerTokens, VideoTokens
from tokpress.policies.inner.dycoke import DyCokeKVConfig, DyCokeKVPolicy
from tokpress.policies.outer.dycoke import DyCokeTTMConfig, DyCokeTTMPolicy, frame_references, ttm_retain_ratio
from tokpress.registry import get_policy


def assert_valid_keep(keep: torch.Tensor, budget: int, n: int) -> None:
    assert keep.dtype == torch.long and keep.dim() == 1 and keep.numel() == budget
    assert 0 <= int(keep[0]) and int(keep[-1]) < n
    assert bool((keep[1:] > keep[:-1]).all()), "indices must be sorted and distinct"


def test_registered_under_both_stages():
    assert get_policy("outer", "dycoke") is DyCokeTTMPolicy
    assert get_policy("inner", "dycoke") is DyCokeKVPolicy


# ---- TTM (outer) ---------------------------------------------------------------------------------------------------
def ttm(**options) -> DyCokeTTMPolicy:
    return DyCokeTTMPolicy(DyCokeTTMConfig(**options))


def test_frame_references_follow_the_four_frame_windows():
    # -1 = kept whole. a+1, a+2 -> a; a+3 -> a+2; the last window's a+2 is whole (the reference's second pass stops
    # one window early), and an unpaired last frame follows the same rule.
    assert frame_references(8).tolist() == [-1, 0, 0, 2, -1, 4, -1, 6]
    assert frame_references(8, last_window_third_whole=False).tolist() == [-1, 0, 0, 2, -1, 4, 4, 6]
    assert frame_references(10).tolist() == [-1, 0, 0, 2, -1, 4, 4, 6, -1, 8]
    assert frame_references(7).tolist() == [-1, 0, 0, 2, -1, 4, -1]
    assert frame_references(5).tolist() == [-1, 0, 0, 2, -1]
    assert frame_references(4).tolist() == [-1, 0, -1, 2]
    assert frame_references(1).tolist() == [-1]


P, DIM = 12, 32
ANCHORS = [0, 4, 6]  # T = 8 with the reference's last-window rule
REFS = {1: 0, 2: 0, 3: 2, 5: 4, 6: 4, 7: 6}  # frame 6 is compared with 4 only when last_window_third_whole=False


def with_cosine(ref: torch.Tensor, cos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Tokens whose cosine with ``ref`` (same row) is exactly ``cos``, with random norms and directions."""
    r = F.normalize(ref.double(), dim=-1)
    v = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    v = F.normalize(v - (v * r).sum(-1, keepdim=True) * r, dim=-1)
    c = cos.double()[:, None]
    scale = 0.5 + torch.rand(ref.shape[0], 1, generator=gen, dtype=torch.float64)
    return (scale * (c * r + (1 - c**2).sqrt() * v)).float()


def crafted_video(seed: int = 0):
    """T=8 frames of P tokens; each compared frame has a known cosine per position with its reference frame.
    Frame f's cosines are a permutation of ``linspace(lo_f, 0.95, P)``, ``lo_f`` lower for later frames."""
    gen = torch.Generator().manual_seed(seed)
    frames = [None] * 8
    for f in ANCHORS[:2]:
        frames[f] = torch.randn(P, DIM, generator=gen)
    sims = {}
    for i, f in enumerate([1, 2, 3, 5, 6, 7]):  # in an order where every reference exists already
        sims[f] = torch.linspace(-0.1 * i, 0.95, P)[torch.randperm(P, generator=gen)]
        frames[f] = with_cosine(frames[REFS[f]], sims[f], gen)
    return VideoTokens(torch.stack(frames).reshape(8 * P, DIM), Grid(8, 3, 4)), sims


def least_similar(sims: torch.Tensor, count: int) -> list[int]:
    return sims.argsort()[:count].tolist()


def expected_keep(whole: list[int], partial: dict[int, list[int]]) -> list[int]:
    idx = [f * P + p for f in whole for p in range(P)]
    idx += [f * P + p for f, positions in partial.items() for p in positions]
    return sorted(idx)


def test_ttm_at_the_reference_ratio_keeps_anchors_and_drops_the_most_similar_tokens():
    video, sims = crafted_video()
    # k = 0.7: each compared frame keeps int(0.3 * 12) = 3 tokens; anchors 0, 4, 6 whole
    budget = 3 * P + 5 * 3
    ratio = ttm_retain_ratio(0.7, 8, P)
    assert ratio == pytest.approx(budget / (8 * P)) and budget_of(ratio, 8 * P) == budget
    keep = ttm().plan(video, budget).keep
    assert_valid_keep(keep, budget, 8 * P)
    assert keep.tolist() == expected_keep(ANCHORS, {f: least_similar(sims[f], 3) for f in (1, 2, 3, 5, 7)})


def test_ttm_without_the_last_window_rule_compares_frame_six_with_frame_four():
    video, sims = crafted_video()
    budget = 2 * P + 6 * 3
    keep = ttm(last_window_third_whole=False).plan(video, budget).keep
    assert keep.tolist() == expected_keep([0, 4], {f: least_similar(sims[f], 3) for f in (1, 2, 3, 5, 6, 7)})


def test_ttm_leftover_tokens_go_to_frames_whose_next_candidate_is_least_similar():
    video, sims = crafted_video(seed=1)
    compared = [1, 2, 3, 5, 7]
    budget = 3 * P + 5 * 3 + 2  # three per compared frame and two left over
    fourth = {f: float(sims[f].sort().values[3]) for f in compared}
    lucky = sorted(compared, key=lambda f: fourth[f])[:2]
    partial = {f: least_similar(sims[f], 4 if f in lucky else 3) for f in compared}
    assert ttm().plan(video, budget).keep.tolist() == expected_keep(ANCHORS, partial)


def test_ttm_at_the_anchor_floor_keeps_exactly_the_anchors():
    video, _ = crafted_video()
    assert ttm().plan(video, 3 * P).keep.tolist() == expected_keep(ANCHORS, {})  # the paper's k = 1


def test_ttm_below_the_anchor_floor_spreads_over_every_frame_by_similarity():
    """35 tokens, one short of the anchors' 36: 35 = 8 x 4 + 3, so every frame keeps 4 and the 3 extra go to the
    anchors 0, 4, 6 (time order). Frame 0 has no reference: evenly spaced positions floor((2i + 1) 12 / 10) =
    1, 3, 6, 8, 10. Anchor 4 is scored against the previous anchor (frame 0), anchor 6 against anchor 4, each
    compared frame against its TTM reference; each keeps its least similar tokens."""
    video, sims = crafted_video()
    x = video.features.reshape(8, P, DIM)
    keep = ttm().plan(video, 3 * P - 1).keep
    partial = {0: [1, 3, 6, 8, 10], 4: least_similar(F.cosine_similarity(x[4], x[0], dim=-1), 5)}
    partial[6] = least_similar(sims[6], 5)  # crafted against frame 4
    partial.update({f: least_similar(sims[f], 4) for f in (1, 2, 3, 5, 7)})
    assert keep.tolist() == expected_keep([], partial)


def test_ttm_below_the_floor_keeps_every_time_step_and_gives_extras_to_anchors_first():
    video, _ = crafted_video()
    for budget in (8, 10, 20, 3 * P - 1):
        counts = torch.bincount(ttm().plan(video, budget).keep // P, minlength=8)
        assert bool((counts >= 1).all()) and int(counts.sum()) == budget
        assert int(counts.max() - counts.min()) <= 1
        if int(counts[[1, 2, 3, 5, 7]].max()) > int(counts.min()):  # a compared frame got an extra token:
            assert int(counts[ANCHORS].min()) == int(counts.max())  # every anchor got one before it
    assert torch.bincount(ttm().plan(video, 10).keep // P, minlength=8).tolist() == [2, 1, 1, 1, 2, 1, 1, 1]
    # 5 < T: one each to the anchors 0, 4, 6, then evenly spaced compared frames: floor((2i + 1) 5 / 4) -> 2nd, 4th
    counts = torch.bincount(ttm().plan(video, 5).keep // P, minlength=8)
    assert counts.tolist() == [1, 0, 1, 0, 1, 1, 1, 0]


def test_ttm_below_the_floor_can_refuse_with_the_lowest_ratio():
    video, _ = crafted_video()
    with pytest.raises(InputError, match=r"retain_ratio >= 0\.3750"):
        ttm(below_floor="error").plan(video, 3 * P - 1)
    assert ttm(below_floor="error").plan(video, 3 * P).keep.numel() == 3 * P


def test_ttm_exact_budget_for_every_budget():
    video, _ = crafted_video()
    n = 8 * P
    for budget in range(1, n + 1):
        keep = ttm().plan(video, budget).keep
        assert_valid_keep(keep, budget, n)
        if budget >= 3 * P:
            assert set(expected_keep(ANCHORS, {})) <= set(keep.tolist()), budget
        elif budget >= 8:
            assert bool((torch.bincount(keep // P, minlength=8) > 0).all()), budget
    assert ttm().plan(video, n).keep.tolist() == list(range(n))


def test_ttm_single_frame_video():
    video = VideoTokens(torch.randn(P, DIM), Grid(1, 3, 4))
    assert ttm().plan(video, 4).keep.tolist() == [1, 4, 7, 10]  # evenly spaced: centres of 4 bins of 3
    assert ttm().plan(video, P).keep.tolist() == list(range(P))


def test_ttm_bf16_matches_fp32_of_the_same_values_and_is_deterministic():
    video, _ = crafted_video(seed=2)
    low = VideoTokens(video.features.to(torch.bfloat16), video.grid)
    high = VideoTokens(low.features.float(), video.grid)
    for budget in (1, 40, 53, 8 * P):
        keep = ttm().plan(low, budget).keep
        assert_valid_keep(keep, budget, 8 * P)
        assert torch.equal(keep, ttm().plan(high, budget).keep)
        assert torch.equal(keep, ttm().plan(low, budget).keep)


def test_ttm_config_validation():
    with pytest.raises(ConfigError, match="last_window_third_whole"):
        DyCokeTTMConfig(last_window_third_whole="yes")
    with pytest.raises(ConfigError, match="below_floor"):
        DyCokeTTMConfig(below_floor="thin")


# ---- KV selection (inner, decode time) -----------------------------------------------------------------------------
def kv(**options) -> DyCokeKVPolicy:
    return DyCokeKVPolicy(DyCokeKVConfig(**options))


def step(policy: DyCokeKVPolicy, attention, memory: dict, budget: int) -> list[int]:
    attention = torch.as_tensor(attention)
    tokens = InnerTokens(
        hidden=torch.zeros(attention.numel(), 4),
        ordinals=torch.arange(attention.numel()),
        attention=attention,
        layer=3,
        memory=memory,
    )
    keep = policy.plan(tokens, budget).keep
    assert_valid_keep(keep, budget, attention.numel())
    return keep.tolist()


def cos(a, b) -> float:
    return float(F.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b), dim=0))


FIRST = [0.30, 0.28, 0.20, 0.10, 0.05, 0.07]
NUDGED = [0.30, 0.28, 0.29, 0.10, 0.05, 0.07]  # token 2 overtakes token 1, the map barely changes
MOVED = [0.02, 0.03, 0.05, 0.30, 0.35, 0.25]


def test_kv_flags_and_default_layer():
    assert DyCokeKVPolicy.decode and DyCokeKVPolicy.needs_attention and DyCokeKVPolicy.attention_queries == "last"
    assert DyCokeKVPolicy.default_layer(28) == 3 and DyCokeKVPolicy.default_layer(80) == 3
    assert DyCokeKVPolicy.default_layer(3) == 2 and DyCokeKVPolicy.default_layer(2) == 1


def test_kv_first_step_selects_the_top_attention_tokens():
    assert step(kv(), FIRST, {}, 2) == [0, 1]
    assert step(kv(), FIRST, {}, 3) == [0, 1, 2]


def test_kv_near_identical_map_reuses_the_selection_even_if_its_top_k_differs():
    assert cos(FIRST, NUDGED) >= 0.9  # preconditions of the construction
    assert step(kv(), NUDGED, {}, 2) == [0, 2]
    memory = {}
    assert step(kv(), FIRST, memory, 2) == [0, 1]
    assert step(kv(), NUDGED, memory, 2) == [0, 1]
    assert int(memory["reselections"]) == 1


def test_kv_changed_map_reselects():
    assert cos(FIRST, MOVED) < 0.9
    memory = {}
    step(kv(), FIRST, memory, 2)
    assert step(kv(), MOVED, memory, 2) == [3, 4]
    assert int(memory["reselections"]) == 2
    # a threshold of -1 never re-selects after the first step
    memory = {}
    step(kv(threshold=-1.0), FIRST, memory, 2)
    assert step(kv(threshold=-1.0), MOVED, memory, 2) == [0, 1]


def test_kv_memories_are_isolated():
    a, b = {}, {}
    assert step(kv(), FIRST, a, 2) == [0, 1]
    assert step(kv(), MOVED, b, 2) == [3, 4]
    assert step(kv(), NUDGED, a, 2) == [0, 1]  # compared with a's map, not b's
    assert step(kv(), MOVED, b, 2) == [3, 4]
    assert int(a["reselections"]) == 1 and int(b["reselections"]) == 1


def rotating(degrees: float) -> list[float]:
    t = math.radians(degrees)
    return [math.cos(t), math.sin(t), 0.0, 0.0]


def test_kv_compare_to_previous_step_or_to_last_selection():
    # 10 degrees per step: cos 10 deg = 0.985 >= 0.9 between steps; 30 degrees apart is cos = 0.866 < 0.9
    angles = range(0, 100, 10)
    previous, selection = {}, {}
    for a in angles:
        kept_previous = step(kv(), rotating(a), previous, 1)
        kept_selection = step(kv(compare_to="selection"), rotating(a), selection, 1)
    # previous-step comparison never fires, so the first selection (token 0) survives a full quarter turn
    assert kept_previous == [0] and int(previous["reselections"]) == 1
    # against the last selection: re-selects at 30, 60 and 90 degrees; at 90 token 1 dominates
    assert kept_selection == [1] and int(selection["reselections"]) == 4


def test_kv_budget_change_reselects():
    memory = {}
    step(kv(), FIRST, memory, 2)
    assert step(kv(), NUDGED, memory, 3) == [0, 1, 2]


def test_kv_exact_budget_bf16_and_determinism():
    gen = torch.Generator().manual_seed(0)
    attention = torch.rand(50, generator=gen).softmax(0)
    for budget in (1, 2, 25, 49, 50):
        low = step(kv(), attention.to(torch.bfloat16), {}, budget)
        assert low == step(kv(), attention.to(torch.bfloat16).float(), {}, budget)
        assert step(kv(), attention, {}, budget) == step(kv(), attention, {}, budget)
        assert step(kv(), attention, {}, budget) == sorted(attention.argsort(descending=True)[:budget].tolist())


def test_kv_config_validation():
    with pytest.raises(ConfigError, match="threshold"):
        DyCokeKVConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="compare_to"):
        DyCokeKVConfig(compare_to="first")
