"""MustDrop: spatial window merging and the key set (outer), the dual-attention filter (inner), the engine's
read-only marks and the output-aware KV cut."""

from __future__ import annotations

import math

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress.patches.plans import plan_around_marks
from tokpress.policies.base import Grid, InnerTokens, Plan, VideoTokens
from tokpress.policies.inner.mustdrop import (
    MustDropInnerConfig,
    MustDropInnerPolicy,
    dual_attention_scores,
    scaled_layers,
)
from tokpress.policies.outer.mustdrop import (
    MustDropOuterConfig,
    MustDropOuterPolicy,
    merge_order,
    window_members,
    window_similarity,
)

D = 8


def _video(frames: int, side: int, seed: int = 0, attention=None) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    n = frames * side * side
    features = torch.randn(n, D, generator=g)
    att = torch.rand(n, generator=g) if attention is None else attention
    return VideoTokens(features, Grid(frames, side, side), attention=att)


def _outer(**options) -> MustDropOuterPolicy:
    return MustDropOuterPolicy(MustDropOuterConfig(**options))


def _make_window_alike(video: VideoTokens, window: int, noise: float = 0.0) -> None:
    """Give window ``window`` of frame 0 (4x4 grid, 2x2 windows) four nearly equal tokens."""
    members = window_members(video.grid, 2)[window]
    video.features[members] = video.features[members[0]] + noise * torch.arange(4.0)[:, None]


def test_window_members_tile_each_frame_from_the_top_left():
    members = window_members(Grid(2, 3, 4), 2)  # one row of windows per frame; the last grid row is left out
    assert members.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [12, 13, 16, 17], [14, 15, 18, 19]]


def test_window_similarity_is_the_mean_of_distinct_pairs():
    x = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 1]])
    cos = torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1)
    expect = (cos.sum() - cos.diagonal().sum()) / 12
    assert torch.allclose(window_similarity(x, torch.tensor([[0, 1, 2, 3]])), expect.view(1))


def test_merge_order_takes_every_frames_best_window_first():
    # frame 0's two windows are both more similar than frame 1's best, yet frame 1's best comes second
    similarity = torch.tensor([0.9, 0.8, 0.1, 0.5])
    assert merge_order(similarity, 2).tolist() == [0, 3, 1, 2]


def test_most_similar_window_merges_into_its_last_token():
    video = _video(1, 4)
    _make_window_alike(video, 3, noise=0.01)
    members = window_members(video.grid, 2)[3]
    plan = _outer(key_ratio=0.0).plan(video, 13)
    dropped = set(range(16)) - set(plan.keep.tolist())
    assert dropped == set(members[:3].tolist())
    at = plan.keep.tolist().index(int(members[3]))
    assert torch.allclose(plan.features[at], video.features[members].mean(0), atol=1e-6)
    assert plan.sizes[at] == 4 and plan.sizes.sum() == 16
    others = [i for i in range(13) if i != at]
    assert torch.equal(plan.features[others], video.features[plan.keep[others]])


def test_a_remainder_merges_the_tail_of_the_next_window():
    video = _video(1, 4)
    _make_window_alike(video, 0, noise=0.0)
    _make_window_alike(video, 2, noise=0.05)  # the second most similar window
    members = window_members(video.grid, 2)
    plan = _outer(key_ratio=0.0).plan(video, 16 - 5)  # one whole window (3) + 2 of the next
    dropped = set(range(16)) - set(plan.keep.tolist())
    assert dropped == set(members[0, :3].tolist()) | set(members[2, 1:3].tolist())
    at = plan.keep.tolist().index(int(members[2, 3]))
    assert torch.allclose(plan.features[at], video.features[members[2, 1:]].mean(0), atol=1e-6)


def test_below_a_quarter_it_drops_the_least_attended_after_merging_every_window():
    attention = torch.arange(16.0)
    video = _video(1, 4, attention=attention)
    plan = _outer(key_ratio=0.0).plan(video, 3)
    # every window merges into its bottom-right token (5, 7, 13, 15); the window with the least summed attention
    # (window 0: 0 + 1 + 4 + 5) is dropped
    assert plan.keep.tolist() == [7, 13, 15]
    assert plan.sizes.tolist() == [4.0, 4.0, 4.0]


def test_key_set_is_the_most_attended_share_of_the_kept_tokens():
    video = _video(2, 4, seed=3)
    budget = 20
    plan = _outer(key_ratio=0.25).plan(video, budget)
    assert plan.marks.dtype == torch.bool and int(plan.marks.sum()) == math.ceil(0.25 * budget)
    # summed attention of each kept token's members, recomputed from the sizes' groups
    group = torch.full((32,), -1)
    for i, k in enumerate(plan.keep.tolist()):
        group[k] = i
    members = window_members(video.grid, 2)
    for w in members:  # merged windows send their members to the last one
        if int(w[-1]) in plan.keep.tolist() and all(int(m) not in plan.keep.tolist() for m in w[:-1]):
            group[w] = int(group[w[-1]])
    score = torch.zeros(budget).index_add_(0, group[group >= 0], video.attention[group >= 0])
    top = set(torch.topk(score, int(plan.marks.sum())).indices.tolist())
    assert set(plan.marks.nonzero().squeeze(1).tolist()) == top


def test_threshold_form_merges_only_windows_above_it():
    video = _video(1, 4)
    _make_window_alike(video, 1)
    plan = _outer(spatial_threshold=0.99, key_ratio=0.0).plan(video, 10)
    members = window_members(video.grid, 2)[1]
    assert not set(members[:3].tolist()) & set(plan.keep.tolist())
    assert plan.keep.numel() == 10  # the other 3 removals are the least attended tokens


def test_dual_attention_scores_reproduce_the_authors_thresholds():
    attention = torch.tensor([[0.30, 0.001, 0.0005, 0.0], [0.20, 0.0002, 0.0, 0.0020]])
    global_thr, individual_thr = 0.003, 0.0015
    total = attention.sum(0)
    kept_by_rule = ~((total < total.sum() * global_thr) & (attention.amax(0) < individual_thr))
    scores = dual_attention_scores(attention, global_thr, individual_thr)
    assert torch.equal(scores >= 1, kept_by_rule)
    assert kept_by_rule.tolist() == [True, False, False, True]  # token 3 by its individual peak alone


def test_schedule_scales_the_authors_layers_and_keeps_r_overall():
    assert scaled_layers(32) == [3, 7, 11, 15]
    stages = MustDropInnerPolicy.schedule(MustDropInnerConfig(), 28, scaled_layers(28)[0], 0.0625)
    assert [k for k, _ in stages] == scaled_layers(28)
    assert math.isclose(math.prod(r for _, r in stages), 0.0625)


def _inner_tokens(n: int, sizes=None) -> InnerTokens:
    return InnerTokens(torch.arange(n * 2.0).view(n, 2), torch.arange(n), torch.arange(n, 0, -1.0), 3, sizes=sizes)


def _top_by_attention(tokens: InnerTokens, budget: int) -> Plan:
    return Plan(torch.topk(tokens.attention, budget).indices.sort().values)


def test_marked_tokens_count_towards_the_budget_and_always_survive():
    tokens = _inner_tokens(6)  # attention falls with the index: the policy alone keeps 0, 1, 2
    marked = torch.tensor([False, False, False, False, True, True])
    plan = plan_around_marks(_top_by_attention, tokens, 3, marked)
    assert plan.keep.tolist() == [0, 4, 5]
    # more marks than budget: the policy thins the key set
    plan = plan_around_marks(_top_by_attention, tokens, 1, marked)
    assert plan.keep.tolist() == [4]


def test_merged_features_of_the_policy_land_on_their_rows_around_marks():
    tokens = _inner_tokens(5, sizes=torch.ones(5))
    marked = torch.tensor([False, True, False, False, False])

    def merge_all(t: InnerTokens, budget: int) -> Plan:  # keeps the first `budget` and gives them new features
        return Plan(torch.arange(budget), torch.full((budget, 2), -1.0), torch.full((budget,), 2.0))

    plan = plan_around_marks(merge_all, tokens, 3, marked)
    assert plan.keep.tolist() == [0, 1, 2]
    assert plan.features[1].tolist() == tokens.hidden[1].tolist()  # the marked token is untouched
    assert plan.features[[0, 2]].eq(-1).all() and plan.sizes.tolist() == [2.0, 1.0, 2.0]


def _marked_ordinals(last) -> list[set[int]]:
    """Per sample (one video each), the video ordinals the outer stage marked."""
    out = []
    for plans in last.plans["outer"]:
        assert len(plans) == 1
        out.append(set(plans[0].keep[plans[0].marks].tolist()))
    return out


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
def test_the_key_set_survives_every_inner_stage(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(
        model,
        outer="mustdrop",
        outer_options={"key_ratio": 0.25},
        inner="pdrop",
        inner_layer=1,
        retain_ratio=0.5,
        inner_ratio=0.3,
    )
    model.tokpress.record_plans = True
    model(**inputs)
    last = model.tokpress.last
    stages = len(last.after_inner)
    assert stages > 1
    for b, marked in enumerate(_marked_ordinals(last)):
        assert marked
        for s in range(stages):
            assert marked <= set(last.kept[f"inner{s}"][b]), f"stage {s}"


def test_output_aware_cut_keeps_the_final_tokens_rows_of_every_stage_layer(get_model, monkeypatch):
    family = "qwen2_5_vl"
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, method="mustdrop", retain_ratio=0.5, inner_options={"layers": (1, 2, 3)})
    cut = model(**inputs, use_cache=True).past_key_values
    monkeypatch.setattr(MustDropInnerPolicy, "cut_kv_to_final", False)
    full = model(**inputs, use_cache=True).past_key_values
    final = cut.layers[3].keys.shape[2]
    assert full.layers[3].keys.shape[2] == final  # the last stage's layers hold the final tokens either way
    assert torch.equal(cut.layers[0].keys, full.layers[0].keys)  # before the first stage: untouched
    for layer in (1, 2):
        assert full.layers[layer].keys.shape[2] > final == cut.layers[layer].keys.shape[2]
        for b in range(cut.layers[layer].keys.shape[0]):
            rows = full.layers[layer].keys[b, 0]  # [L_s, d]
            for row in cut.layers[layer].keys[b, 0]:  # every cut row is one of the layer's own rows
                assert (rows == row).all(-1).any()


def test_decode_stage_must_be_a_decode_policy_above_the_schedule(monkeypatch):
    from tokpress.config import build_config
    from tokpress.errors import ConfigError

    cfg = build_config("mustdrop", num_layers=8, retain_ratio=0.5, inner_options={"decode": True})
    assert [s.policy for s in cfg.inner] == ["mustdrop"] * 4 + ["dycoke"]
    assert cfg.inner[-1].layer == cfg.inner[-2].layer + 1
    monkeypatch.setattr(MustDropInnerPolicy, "decode_stage", classmethod(lambda cls, c, n, s: ("fastv", 7, 0.5, {})))
    with pytest.raises(ConfigError, match="decode-time policy"):
        build_config("mustdrop", num_layers=8, retain_ratio=0.5)


def test_the_key_set_stays_visible_to_the_decode_stage(get_model, monkeypatch):
    import tokpress.patches.inner as inner

    seen = []
    real = inner.plan_around_marks

    def spy(plan, tokens, budget, marked):
        out = real(plan, tokens, budget, marked)
        if tokens.hidden.shape[1] == 0:  # decode-time calls carry no hidden states
            seen.append((marked, out.keep))
        return out

    monkeypatch.setattr(inner, "plan_around_marks", spy)
    model = get_model("qwen2_5_vl")
    tokpress.apply(model, method="mustdrop", retain_ratio=0.5, inner_options={"layers": (1, 2), "decode": True})
    model.generate(**batch_inputs("qwen2_5_vl"), max_new_tokens=3, do_sample=False)
    assert seen
    for marked, keep in seen:
        assert marked is not None and bool(marked.any())
        assert set(marked.nonzero().squeeze(1).tolist()) <= set(keep.tolist())
