"""Engine features the method library relies on: vision-encoder attention, question attention, multi-stage
schedules, earlier-KV pruning and decode-time visibility — each checked against an independent reference."""

from __future__ import annotations

import inspect

import pytest
import torch

import tokpress
from conftest import batch_inputs, sample_inputs
from tokpress.errors import InputError
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.tiny import families as tiny
from tokpress.ops import topk_sorted
from tokpress.patches.vision import mean_query_attention
from tokpress.policies.base import InnerPolicy, InnerTokens, OuterPolicy, Plan, VideoTokens
from tokpress.registry import _POLICIES, register_policy

RECORDS: list = []


class VisionRecorder(OuterPolicy):
    needs_vision_attention = True

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        RECORDS.append(("vision", video.sample, video.attention.clone()))
        return Plan(topk_sorted(video.attention, budget))


class QuestionRecorder(InnerPolicy):
    needs_attention = True
    attention_queries = "question"

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        RECORDS.append(("question", tokens.sample, tokens.attention.clone()))
        return Plan(topk_sorted(tokens.attention, budget))


class ThreeStages(InnerPolicy):
    needs_attention = True

    @classmethod
    def schedule(cls, config, num_layers, layer, ratio):
        return [(1, 0.5), (2, 0.5), (3, 0.5)]

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        return Plan(topk_sorted(tokens.attention, budget))


class EarlierKV(InnerPolicy):
    needs_attention = True
    prune_earlier_kv = True

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        return Plan(topk_sorted(tokens.attention, budget))


class DecodeTopK(InnerPolicy):
    needs_attention = True
    decode = True

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        tokens.memory["calls"] = tokens.memory.get("calls", 0) + 1
        RECORDS.append(("decode", tokens.sample, tokens.ordinals.clone()))
        return Plan(topk_sorted(tokens.attention, budget))


TEST_POLICIES = {
    ("outer", "t_vision"): VisionRecorder,
    ("inner", "t_question"): QuestionRecorder,
    ("inner", "t_three"): ThreeStages,
    ("inner", "t_earlier"): EarlierKV,
    ("inner", "t_decode"): DecodeTopK,
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    for (stage, name), cls in TEST_POLICIES.items():
        if (stage, name) not in _POLICIES:
            register_policy(name, stage=stage)(cls)
    yield
    for key in TEST_POLICIES:
        _POLICIES.pop(key, None)


@pytest.fixture(autouse=True)
def clear_records():
    RECORDS.clear()


# ---- vision-encoder attention ------------------------------------------------------------------------------------
def test_mean_query_attention_matches_a_per_group_loop():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(10, 2, 4, generator=gen), torch.randn(10, 2, 4, generator=gen)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    got = mean_query_attention(q, k, groups, 0.5)
    for g in range(3):
        rows = groups == g
        expect = torch.softmax((q[rows].mean(0)[None] * k[rows]).sum(-1) * 0.5, dim=0).mean(-1)
        torch.testing.assert_close(got[rows], expect)


@pytest.mark.parametrize("family", [*tiny.FAMILIES, "qwen3_vl", "qwen3_5"])  # the others: tests/test_family_*.py
def test_vision_attention_reaches_the_policy(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    signature = inspect.signature(model.model.get_video_features)
    tokpress.apply(model, outer="t_vision", retain_ratio=0.5)
    assert inspect.signature(model.model.get_video_features) == signature  # functools.wraps (P8)
    model(**inputs)
    batch = {b: att for _, b, att in RECORDS}
    grid = (inputs["input_ids"] == tiny.VIDEO_ID).sum(1) - int(family == "llava_onevision")
    for b in range(2):
        att = batch[b]
        assert att.shape == (int(grid[b]),) and att.dtype == torch.float32 and bool((att > 0).all())
        if family != "llava_onevision":  # softmax within each temporal patch, summed over merged patches
            per_frame = att.view(-1, 16 if b == 0 else 8).sum(-1)
            torch.testing.assert_close(per_frame, torch.ones_like(per_frame))
    RECORDS.clear()
    model.generate(**inputs, max_new_tokens=2, do_sample=False)  # 5.23 encodes vision before the prefill
    assert len(RECORDS) == 2
    for _, b, att in RECORDS:
        torch.testing.assert_close(att, batch[b])
    RECORDS.clear()
    model(**sample_inputs(inputs, family, 1))
    torch.testing.assert_close(RECORDS[0][2], batch[1])  # batch == alone
    tokpress.remove(model)
    assert "get_video_features" not in model.model.__dict__


def test_qwen25_vision_attention_follows_raster_order(get_model):
    """Qwen2.5-VL runs its vision blocks in window order; the scores must come back in the LLM's raster order.
    Reference: the same mean-query attention computed on the block's input, re-ordered by the model's own window
    index, group by group."""
    from transformers.vision_utils import get_vision_window_index

    model = get_model("qwen2_5_vl")
    inputs = tiny.make_inputs("qwen2_5_vl", video=tiny.VideoSpec(frames=4, height=224, width=112))
    visual, seen = model.model.visual, {}
    attn = visual.blocks[-1].attn
    hooks = [attn.register_forward_pre_hook(lambda m, a, kw: seen.update(h=a[0], **kw), with_kwargs=True)]
    tokpress.apply(model, outer="t_vision", retain_ratio=0.5)
    model(**inputs)
    for h in hooks:
        h.remove()
    q, k, _ = attn.qkv(seen["h"]).reshape(seen["h"].shape[0], 3, attn.num_heads, -1).unbind(1)
    cos, sin = (t[:, None] for t in seen["position_embeddings"])
    rot = lambda x: x * cos + torch.cat([-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]], -1) * sin  # noqa: E731
    q, k, cu = rot(q), rot(k), seen["cu_seqlens"].tolist()
    scores = torch.empty(q.shape[0])
    for a, b in zip(cu[:-1], cu[1:]):
        scores[a:b] = torch.softmax((q[a:b].mean(0)[None] * k[a:b]).sum(-1) * attn.scaling, 0).mean(-1)
    window_index, _ = get_vision_window_index(
        inputs["video_grid_thw"], spatial_merge_size=2, window_size=visual.window_size, patch_size=14
    )
    expect = scores.view(-1, 4).sum(-1)[torch.argsort(window_index)]
    assert not torch.equal(window_index, torch.arange(window_index.numel()))  # the test needs a real reordering
    torch.testing.assert_close(RECORDS[0][2], expect)


def _attention_layers(model) -> list[int]:
    """Decoder layers with attention (all but Qwen3.5's linear-attention layers)."""
    text = model.config.get_text_config()
    types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    return [i for i, t in enumerate(types) if t != "linear_attention"]


# ---- question attention --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_question_attention_equals_eager_attention(family):
    model = tiny.tiny_model(family, attn="eager")
    inputs = batch_inputs(family)
    layer = 2
    attention = _attention_layers(model)  # `attentions` holds the attention layers only (not Qwen3.5's linear ones)
    score_layer = max(i for i in attention if i < layer)
    ref = model(**inputs, output_attentions=True).attentions[attention.index(score_layer)]  # [B, H, L, L]
    tokpress.apply(model, inner="t_question", inner_layer=layer, retain_ratio=0.5)
    model(**inputs)
    for _, b, got in RECORDS:
        ids = inputs["input_ids"][b]
        video = (ids == video_placeholder_id(model.config)).nonzero().squeeze(1)
        grid = video[:-1] if family == "llava_onevision" else video
        question = torch.arange(int(video[-1]) + 1, ids.numel())
        expect = ref[b][:, question][:, :, grid].amax(dim=(0, 1))
        torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-6)


# ---- multi-stage -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_three_stage_schedule_invariants(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    reference = model(**inputs).logits
    tokpress.apply(model, inner="t_three", retain_ratio=0.125)
    assert [s.layer for s in model.tokpress.config.inner] == [1, 2, 3]
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True)
    last = model.tokpress.last
    extra = family == "llava_onevision"
    for entering, after in zip([last.after_outer, *last.after_inner[:-1]], last.after_inner):
        assert after == [tokpress.config.budget(0.5, n - extra) + extra for n in entering]
    lengths = [out.past_key_values.layers[i].keys.shape[2] for i in _attention_layers(model)]
    assert lengths == sorted(set(lengths), reverse=True) and len(lengths) > 1  # fewer tokens after every stage
    cfg = model.tokpress.config
    tokpress.apply(
        model,
        inner="fixed",
        retain_ratio=1.0,
        inner_options={
            "keep": [last.kept[f"inner{s}"] for s in range(3)],
            "layers": tuple(s.layer for s in cfg.inner),
            "ratios": tuple(s.ratio for s in cfg.inner),
        },
    )
    full = dict(inputs)
    new = out.sequences[:, inputs["input_ids"].shape[1] : -1]
    full["input_ids"] = out.sequences[:, :-1]
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(new)], 1)
    if "mm_token_type_ids" in inputs:
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(new)], 1)
    recomputed = model(**full, use_cache=False).logits[:, -3:]
    torch.testing.assert_close(recomputed, torch.stack(out.logits, 1), rtol=0, atol=1e-5)
    tokpress.remove(model)
    assert torch.equal(model(**inputs).logits, reference)


# ---- earlier-KV pruning (PruneVid) ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_earlier_kv_pruning_cuts_every_layer(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, inner="t_earlier", inner_layer=2, retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    lengths = {out.past_key_values.layers[i].keys.shape[2] for i in _attention_layers(model)}
    assert len(lengths) == 1  # layers < K were cut to the kept set too (a recurrent state has no tokens to cut)
    plain = tokpress.remove(model).generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert lengths.pop() < plain.past_key_values.layers[0].keys.shape[2]
    tokpress.apply(model, inner="t_earlier", inner_layer=2, retain_ratio=0.25)
    with pytest.raises(InputError, match="DynamicCache"):
        model.generate(**inputs, max_new_tokens=2, cache_implementation="static")


def test_earlier_kv_pruning_keeps_decoding_on_the_cut_cache(get_model):
    model = get_model("qwen2_vl")
    inputs = tiny.make_inputs("qwen2_vl")
    tokpress.apply(model, inner="t_earlier", inner_layer=2, retain_ratio=0.25)
    out = model(**inputs, use_cache=True)
    cache = out.past_key_values
    before = [cache.layers[i].keys.shape[2] for i in range(4)]
    assert len(set(before)) == 1 and before[0] == inputs["input_ids"].shape[1] - 48
    step = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=cache, use_cache=True).logits
    assert torch.isfinite(step).all()
    assert [cache.layers[i].keys.shape[2] for i in range(4)] == [n + 1 for n in before]


# ---- decode-time visibility (DyCoke) ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_decode_stage_hides_tokens_from_layers_after_k(family):
    model = tiny.tiny_model(family, attn="eager")
    inputs = tiny.make_inputs(family)
    reference = model.generate(
        **inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True
    )
    tokpress.apply(model, inner="t_decode", inner_layer=2, retain_ratio=1.0)
    same = model.generate(
        **inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_logits=True
    )
    assert torch.equal(torch.stack(same.logits), torch.stack(reference.logits))
    tokpress.apply(model, inner="t_decode", inner_layer=2, retain_ratio=0.25)
    RECORDS.clear()
    out = model.generate(
        **inputs,
        max_new_tokens=3,
        do_sample=False,
        return_dict_in_generate=True,
        output_attentions=True,
        output_logits=True,
    )
    assert torch.equal(out.logits[0], reference.logits[0])  # the prefill is untouched
    assert {r[0] for r in RECORDS} == {"decode"} and len(RECORDS) == 2  # called at each decode step only
    video = (inputs["input_ids"][0] == video_placeholder_id(model.config)).nonzero().squeeze(1)
    grid = video[:-1] if family == "llava_onevision" else video
    attention = _attention_layers(model)
    for step in (1, 2):
        attentions = out.attentions[step]  # per attention layer [B, H, 1, kv]
        for layer in [attention.index(i) for i in attention if i < 2]:
            assert (attentions[layer][0, :, -1, grid] > 0).all()
        for layer in [attention.index(i) for i in attention if i >= 2]:
            visible = (attentions[layer][0, :, -1, grid] > 0).all(0)
            assert int(visible.sum()) == tokpress.config.budget(0.25, grid.numel())
            assert not (attentions[layer][0, :, -1, grid][:, ~visible] != 0).any()


# ---- token sizes flow from merging stages to later ones --------------------------------------------------------
class SizedOuter(OuterPolicy):
    def plan(self, video: VideoTokens, budget: int) -> Plan:
        keep = torch.arange(budget)
        sizes = torch.full((budget,), video.grid.numel / budget)  # as if each kept token absorbed the rest
        return Plan(keep, video.features[keep] * 2, sizes)


class SizeRecorder(InnerPolicy):
    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        RECORDS.append(("sizes", tokens.sample, tokens.sizes.clone(), tokens.hidden.clone()))
        return Plan(torch.arange(budget))


def test_merged_sizes_and_features_reach_the_inner_stage(get_model):
    for key, cls in ((("outer", "t_sized"), SizedOuter), (("inner", "t_sizes"), SizeRecorder)):
        if key not in _POLICIES:
            register_policy(key[1], stage=key[0])(cls)
    try:
        model = get_model("qwen2_vl")
        inputs = tiny.make_inputs("qwen2_vl")
        seen = []
        hook = model.model.language_model.layers[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        model(**inputs)
        tokpress.apply(model, outer="t_sized", inner="t_sizes", inner_layer=1, retain_ratio=0.25, inner_ratio=0.5)
        model(**inputs)
        hook.remove()
        full, pruned = seen
        video = (inputs["input_ids"][0] == tiny.VIDEO_ID).nonzero().squeeze(1)
        kept = video[:16]  # SizedOuter keeps the first 16 of 64, same positions (the video follows 6 tokens)
        torch.testing.assert_close(pruned[0, kept], 2 * full[0, kept])
        _, _, sizes, _ = RECORDS[0]
        assert sizes.tolist() == [4.0] * 16  # each kept token stands for 4 of the 64
    finally:
        _POLICIES.pop(("outer", "t_sized"), None)
        _POLICIES.pop(("inner", "t_sizes"), None)


class FullVisionRecorder(VisionRecorder):
    vision_attention = "full"


def test_mean_attention_matches_a_per_query_loop():
    from tokpress.patches.vision import mean_attention

    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(7, 2, 4, generator=gen), torch.randn(7, 2, 4, generator=gen)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    got = mean_attention(q, k, groups, 0.5)
    for g in range(2):
        rows = groups == g
        per_query = torch.stack([torch.softmax((qi[None] * k[rows]).sum(-1) * 0.5, 0) for qi in q[rows]])
        torch.testing.assert_close(got[rows], per_query.mean(dim=(0, 2)))


def test_full_vision_attention_equals_siglip_eager_attention():
    """LLaVA-OV: the map averaged over queries and heads equals SigLIP's own eager attention weights, pooled like
    the features."""
    model = tiny.tiny_model("llava_onevision", attn="eager")
    inputs = tiny.make_inputs("llava_onevision")
    frames = inputs["pixel_values_videos"][0]
    ref = model.model.vision_tower(frames, output_attentions=True).attentions[-1]  # [F, H, 64, 64]
    side = 56 // 7
    ref = ref.mean(dim=(1, 2)).view(-1, 1, side, side)
    expect = torch.nn.functional.interpolate(ref, size=[4, 4], mode="bilinear").flatten()
    if ("outer", "t_full_vision") not in _POLICIES:
        register_policy("t_full_vision", stage="outer")(FullVisionRecorder)
    try:
        tokpress.apply(model, outer="t_full_vision", retain_ratio=0.5)
        model(**inputs)
        torch.testing.assert_close(RECORDS[0][2], expect, rtol=1e-4, atol=1e-6)
    finally:
        _POLICIES.pop(("outer", "t_full_vision"), None)


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_decoder_layers_see_no_gapped_positions(get_model, family):
    """Flash-attention would read gapped position ids as packed sequences; every layer gets None instead."""
    model = get_model(family)
    inputs = tiny.make_inputs(family)
    seen = []
    tokpress.apply(model, outer="uniform", inner="fastv", inner_layer=2, retain_ratio=0.5)
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("position_ids")), with_kwargs=True)
        for layer in model.model.language_model.layers
    ]
    try:
        model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 4 and all(p is None for p in seen)
