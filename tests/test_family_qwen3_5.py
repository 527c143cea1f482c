"""Qwen3.5: a hybrid decoder (Gated-DeltaNet linear attention + full attention) under outer and inner stages."""

from __future__ import annotations

import pytest
import torch

import tokpress
from tokpress.eval.tiny import families as tiny
from tokpress.eval.tiny import qwen3_5 as tiny_qwen3_5
from tokpress.eval.tiny.families import VIDEO_ID, VideoSpec

GEN = dict(do_sample=False, suppress_tokens=[tiny.IMAGE_ID, VIDEO_ID])


def _model(layer_types):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    config = tiny_qwen3_5.config(layer_types=layer_types)
    return AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa").eval()


def test_attention_stages_need_an_attention_layer_before_them():
    model = _model(["linear_attention", "full_attention", "linear_attention", "full_attention"])
    with pytest.raises(tokpress.TokpressError, match=r"full-attention layers: \[1, 3\]\); use inner_layer=2"):
        tokpress.apply(model, inner="fastv", inner_layer=1, retain_ratio=0.5)
    assert not hasattr(model, "tokpress")
    tokpress.apply(model, inner="sttm", inner_layer=1, retain_ratio=0.5)  # merges by similarity: any layer
    tokpress.apply(model, inner="fastv", inner_layer=3, retain_ratio=0.5)
    # layer 2 is linear: the stage at 3 reads layer 1, the last attention layer before it
    assert model.tokpress.captures[0].attention is model.model.language_model.layers[1].self_attn
    with torch.no_grad():
        out = model(**tiny_qwen3_5.make_inputs(video=VideoSpec(frames=4, height=64, width=64)))
    assert torch.isfinite(out.logits).all() and model.tokpress.last.after_inner == [[4]]


def test_score_layer_reads_the_last_attention_layer(get_model):
    model = get_model("qwen3_5")  # full, linear, linear, full
    adapter = tokpress.apply(model, inner="fastv", inner_layer=3, retain_ratio=0.5).tokpress.adapter
    assert adapter.linear_layers() == [1, 2] and adapter.sliding_layers() == []
    assert [adapter.score_layer(k) for k in (1, 2, 3)] == [0, 0, 0]
    assert model.tokpress.captures[0].attention is model.model.language_model.layers[0].self_attn


def test_outer_state_is_the_state_of_the_kept_sequence(get_model):
    """uniform at 0.5: logits and every layer's cache (KV and recurrent state) equal the unpatched language model's
    on the kept rows of its inputs."""
    model = get_model("qwen3_5")
    inputs = tiny_qwen3_5.make_inputs(video=VideoSpec(frames=8, height=64, width=64))
    seen = {}
    handle = model.model.language_model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    model(**inputs)
    handle.remove()
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    out = model(**inputs, use_cache=True)
    grid_keep = torch.tensor(model.tokpress.last.kept["outer"][0][0])
    tokpress.remove(model)
    video_at = (inputs["input_ids"][0] == VIDEO_ID).nonzero().squeeze(1)
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    keep[video_at] = False
    keep[video_at[grid_keep]] = True
    ref = model.model.language_model(
        inputs_embeds=seen["inputs_embeds"][:, keep],
        position_ids=seen["position_ids"][..., keep],
        attention_mask=seen["attention_mask"][:, keep],
        use_cache=True,
    )
    torch.testing.assert_close(model.lm_head(ref.last_hidden_state)[0, -1], out.logits[0, -1], rtol=0, atol=1e-5)
    ours, theirs = out.past_key_values.layers, ref.past_key_values.layers
    for layer in (1, 2):
        for a, b in zip(ours[layer].recurrent_states, theirs[layer].recurrent_states):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        for a, b in zip(ours[layer].conv_states, theirs[layer].conv_states):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours[3].keys, theirs[3].keys, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", [dict(outer="uniform"), dict(outer="uniform", inner="framefusion", inner_layer=2)])
def test_second_turn_on_the_cache_equals_the_whole_conversation(get_model, method):
    """Query-agnostic compression: continuing the compressed cache (KV + recurrent state) with a second turn gives
    the tokens of a fresh compressed run over the whole conversation."""
    model = get_model("qwen3_5")
    inputs = tiny_qwen3_5.make_inputs(video=VideoSpec(frames=8, height=64, width=64))
    tokpress.apply(model, retain_ratio=0.5, **method)
    first = model.generate(**inputs, max_new_tokens=3, return_dict_in_generate=True, **GEN)
    turn = torch.tensor([[40, 41, 42, 43]])
    ids = torch.cat([first.sequences, turn], 1)
    second = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
    second["mm_token_type_ids"] = torch.cat(
        [inputs["mm_token_type_ids"], torch.zeros(1, ids.shape[1] - inputs["input_ids"].shape[1], dtype=torch.long)], 1
    )
    follow = {k: v for k, v in second.items() if not k.startswith("pixel_values")}  # the video is in the cache
    cached = model.generate(**follow, past_key_values=first.past_key_values, max_new_tokens=3, **GEN)
    fresh = model.generate(**second, max_new_tokens=3, **GEN)
    assert torch.equal(cached[:, -3:], fresh[:, -3:])


def test_a_default_inner_layer_without_scores_moves_to_the_first_with_them():
    """FastV's default K = 2 has only linear layers before it on the real layout (3 linear, then attention): the
    stage moves to K = 4, FastV's rule for the first attention layer; an explicit K = 2 is refused."""
    model = _model(["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 2)
    tokpress.apply(model, method="fastv", retain_ratio=0.5)
    assert [s.layer for s in model.tokpress.config.inner] == [4]
    assert model.tokpress.captures[0].attention is model.model.language_model.layers[3].self_attn
    with pytest.raises(tokpress.TokpressError, match="use inner_layer=4 or later"):
        tokpress.apply(model, method="fastv", inner_layer=2, retain_ratio=0.5)


def test_a_multi_stage_default_schedule_moves_whole_past_the_linear_layers():
    """SparseVLM's default stages on 8 layers start at K = 1 (only linear layers before it on this layout): the whole
    schedule moves until every stage has an attention layer before it."""
    model = _model(["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 2)
    tokpress.apply(model, inner="sparsevlm", retain_ratio=0.25)
    layers = [s.layer for s in model.tokpress.config.inner]
    assert layers[0] == 4 and layers == sorted(set(layers))
    adapter = model.tokpress.adapter
    assert all(adapter.score_layer(k) is not None for k in layers)
