"""The vision stage (``vision="tome"``): ToMe merging inside LLaVA-OneVision's SigLIP encoder, grid restored.

Algorithm tests use hand-built tensors whose answer is known; model tests use the tiny LLaVA-OneVision (and a
4-layer-encoder variant of it, so that merged layers sit strictly inside the encoder).
"""

from __future__ import annotations

import math

import pytest
import torch

import tokpress
from conftest import batch_inputs, sample_inputs
from tokpress.errors import ConfigError, UnsupportedModelError
from tokpress.eval.tiny import families as tiny
from tokpress.policies.vision import ToMeVision, ToMeVisionConfig
from tokpress.policies.vision.merge import (
    bipartite_slots,
    compose,
    merge_schedule,
    merge_weighted,
    proportional_bias,
    unmerge,
)

FAMILY = "llava_onevision"
PATCHES = 64  # tiny SigLIP: 56 px / 7 px = 8 x 8 patches per frame
VIDEO_TOKENS = 8 * 16 + 1  # 8 frames x 4 x 4 pooled + newline


# ---- pure ops on crafted tensors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, target, rounds",
    [(729, 729, []), (729, 365, [364]), (729, 182, [365, 182]), (2, 1, [1]), (5, 1, [3, 1]), (7, 4, [3])],
)
def test_merge_schedule_halves_at_most_per_round(n, target, rounds):
    assert merge_schedule(n, target) == rounds


def _unit(*rows: list[float]) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# tokens 0..5: A = {0, 2, 4}, B = {1, 3, 5}; frame 0: 0 == 5 (cos 1), 2 ~ 1 (cos 0.9), 4 orthogonal to all of B;
# frame 1: 4 == 3 (cos 1), 2 ~ 1 (cos 0.9), 0 orthogonal to all of B
E1, E2, E3, E4 = [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]
NEAR_E1 = [0.9, 0, 0, math.sqrt(1 - 0.81)]
METRIC = torch.stack([_unit(E3, E1, NEAR_E1, E2, E4, E3), _unit(E4, E1, NEAR_E1, E2, E2, E3)])


def test_bipartite_matching_merges_the_most_similar_pairs_per_frame():
    # r = 2: frame 0 merges 0 -> 5 and 2 -> 1; survivors 1, 3, 4, 5 take slots 0..3
    # frame 1 merges 4 -> 3 and 2 -> 1; survivors 0, 1, 3, 5 take slots 0..3
    slot = bipartite_slots(METRIC, 2)
    assert slot.tolist() == [[3, 0, 0, 1, 2, 3], [0, 1, 1, 2, 2, 3]]
    # r = 1: only the identical pair merges
    assert bipartite_slots(METRIC, 1).tolist() == [[4, 0, 1, 2, 3, 4], [0, 1, 2, 3, 3, 4]]
    # cosine similarity: scaling a token changes nothing; r = 0 is the identity
    scaled = METRIC * torch.tensor([10.0, 1, 0.5, 3, 1, 7])[None, :, None]
    assert torch.equal(bipartite_slots(scaled, 2), slot)
    assert bipartite_slots(METRIC, 0).tolist() == [list(range(6))] * 2
    with pytest.raises(ValueError, match="at most"):
        bipartite_slots(METRIC, 4)


def test_merge_is_size_weighted_and_singletons_stay_exact():
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])
    size = torch.tensor([[1.0, 3.0, 2.0, 2.0]])
    merged, merged_size = merge_weighted(x, size, torch.tensor([[0, 0, 1, 1]]), 2)
    assert merged.flatten().tolist() == [(1 * 1 + 2 * 3) / 4, (3 * 2 + 4 * 2) / 4]
    assert merged_size.tolist() == [[4.0, 4.0]]
    y = torch.randn(2, 5, 3)
    same, ones = merge_weighted(y, torch.ones(2, 5), torch.arange(5).expand(2, 5), 5)
    assert torch.equal(same, y) and torch.equal(ones, torch.ones(2, 5))


def test_proportional_bias_is_log_size_and_equals_duplicated_keys():
    size = torch.tensor([[1.0, 2.0, 4.0]])
    bias = proportional_bias(size, torch.float32)
    assert bias.shape == (1, 1, 1, 3)
    torch.testing.assert_close(bias.flatten(), torch.tensor([0.0, math.log(2), math.log(4)]))
    # attention over merged keys with the bias == attention over each key repeated `size` times
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 8, generator=gen) for _ in range(3))
    repeats = torch.tensor([1, 2, 4])
    k_full, v_full = k.repeat_interleave(repeats, dim=2), v.repeat_interleave(repeats, dim=2)
    merged = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(merged, torch.nn.functional.scaled_dot_product_attention(q, k_full, v_full))


def test_unmerge_copies_each_token_to_all_its_patches():
    x = torch.tensor([[[10.0], [20.0], [30.0]]])
    source = torch.tensor([[0, 0, 1, 2, 1]])
    assert unmerge(x, source).flatten().tolist() == [10.0, 10.0, 20.0, 30.0, 20.0]
    # two rounds compose: patch -> round-1 token -> round-2 token
    assert compose(source, torch.tensor([[0, 1, 0]])).tolist() == [[0, 0, 1, 0, 1]]


@pytest.mark.parametrize("metric", ["keys", "hidden"])
def test_tome_merges_to_exact_averages_of_the_patches_it_absorbed(metric):
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 10, 4, generator=gen)
    keys = torch.randn(3, 10, 2, generator=gen) if metric == "keys" else hidden
    out = ToMeVision(ToMeVisionConfig(metric=metric)).merge(hidden, keys, target=3)  # 10 -> 5 -> 3: two rounds
    assert out.hidden.shape == (3, 3, 4) and out.source.shape == (3, 10)
    for f in range(3):
        counts = torch.bincount(out.source[f], minlength=3).float()
        assert torch.equal(out.size[f], counts) and out.size[f].sum() == 10
        for j in range(3):
            torch.testing.assert_close(out.hidden[f, j], hidden[f, out.source[f] == j].mean(0))


# ---- the model ---------------------------------------------------------------------------------------------------
def _deep_model(vision_layers: int = 4, feature_layer: int = -1, attn: str = "sdpa"):
    """The tiny LLaVA-OneVision with a ``vision_layers``-layer SigLIP encoder."""
    from transformers import AutoModelForImageTextToText

    config = tiny.tiny_config(FAMILY)
    config.vision_config.num_hidden_layers = vision_layers
    config.vision_feature_layer = feature_layer
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, attn_implementation=attn).eval()


def _encoder_layers(model) -> torch.nn.ModuleList:
    tower = model.model.vision_tower
    return (tower.encoder if hasattr(tower, "encoder") else tower.vision_model.encoder).layers


def _layer_inputs(model) -> tuple[list, list]:
    """Forward pre-hooks recording the token count of every SigLIP layer's input (independent of tokpress)."""
    seen, handles = [], []
    for layer in _encoder_layers(model):
        handles.append(layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1])))
    return seen, handles


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_ratio_one_is_bit_identical_and_remove_restores(get_model, attn):
    model = get_model(FAMILY, attn)
    inputs = tiny.make_inputs(FAMILY)
    ref = model(**inputs).logits
    ref_gen = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    layers = _encoder_layers(model)
    hooks_before = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in layers.modules()]
    tokpress.apply(model, vision="tome", vision_ratio=1.0)
    assert torch.equal(model(**inputs).logits, ref)
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), ref_gen)
    assert model.tokpress.last.vision_tokens == [PATCHES, PATCHES]
    tokpress.apply(model, vision="tome", vision_ratio=0.5, outer="uniform", retain_ratio=0.5)
    assert not torch.equal(model(**inputs).logits, ref)
    tokpress.remove(model)
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in layers.modules()] == hooks_before
    assert "get_video_features" not in model.model.__dict__
    assert torch.equal(model(**inputs).logits, ref)


def test_ratio_one_stacked_equals_the_outer_stage_alone(get_model):
    model = get_model(FAMILY)
    inputs = tiny.make_inputs(FAMILY)
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    ref = model(**inputs).logits
    tokpress.apply(model, vision="tome", vision_ratio=1.0, outer="uniform", retain_ratio=0.25)
    assert torch.equal(model(**inputs).logits, ref)


@pytest.mark.parametrize(
    "feature_layer, ratio, expected",
    [
        (-1, 0.5, [64, 64, 32, 32]),  # default merge layer 4 // 3 = 1; round(0.5 * 64) = 32
        (-1, 0.3, [64, 64, 19, 19]),  # round(19.2)
        (-1, 0.1, [64, 64, 6, 6]),  # four bipartite rounds: 64 -> 32 -> 16 -> 8 -> 6
        (-2, 0.25, [64, 64, 16, 64]),  # features read at layer 2's output: grid restored there, layer 3 full again
    ],
)
def test_promised_vision_counts_and_unchanged_llm_tokens(feature_layer, ratio, expected):
    model = _deep_model(feature_layer=feature_layer)
    inputs = tiny.make_inputs(FAMILY)
    tokpress.apply(model, vision="tome", vision_ratio=ratio)
    seen, handles = _layer_inputs(model)
    try:
        model(**inputs)
    finally:
        for h in handles:
            h.remove()
    stats = model.tokpress.last
    assert seen == expected and stats.vision_tokens == expected
    assert stats.vision_frames == 8
    assert stats.video_tokens == stats.after_outer == [VIDEO_TOKENS]
    assert "vision encoder: 64 -> " in stats.summary()


def test_hooks_compute_the_stage_as_defined():
    """The encoder's output equals a by-hand run: layers 0..k, ToMe on layer k's head-averaged keys, later layers
    with the log(size) bias, unmerge; and differs from the same run without the bias."""
    model = _deep_model()
    pixels = tiny.make_inputs(FAMILY, video=tiny.VideoSpec(frames=2))["pixel_values_videos"]
    layers = _encoder_layers(model)
    tower = model.model.vision_tower
    hidden = tower.embeddings(pixels.flatten(0, 1))
    frames, n, _ = hidden.shape
    for i in range(2):  # merge layer k = 1
        if i == 1:
            attn = layers[1].self_attn
            keys = attn.k_proj(layers[1].layer_norm1(hidden)).view(frames, n, attn.num_heads, -1).mean(2)
        hidden = layers[i](hidden, None)
    merged = ToMeVision(ToMeVisionConfig()).merge(hidden, keys, 16)
    expected, unbiased = merged.hidden, merged.hidden
    for i in (2, 3):
        expected = layers[i](expected, proportional_bias(merged.size, expected.dtype))
        unbiased = layers[i](unbiased, None)
    tokpress.apply(model, vision="tome", vision_ratio=0.25, vision_layer=1)
    out = model.model.get_video_features(pixels, vision_feature_layer=-1, vision_feature_select_strategy="full")
    got = out.hidden_states[-1]
    assert got.shape == (frames, PATCHES, 32)
    torch.testing.assert_close(got, unmerge(expected, merged.source))
    assert not torch.allclose(got, unmerge(unbiased, merged.source), atol=1e-4)


def test_merge_layer_is_configurable_and_checked():
    model = _deep_model()
    inputs = tiny.make_inputs(FAMILY)
    tokpress.apply(model, vision="tome", vision_ratio=0.5, vision_layer=0)
    model(**inputs)
    assert model.tokpress.last.vision_tokens == [64, 32, 32, 32]
    for bad in (3, -1, 1.0):
        with pytest.raises(ConfigError, match=r"vision_layer must be an int in \[0, 2\]"):
            tokpress.apply(model, vision="tome", vision_ratio=0.5, vision_layer=bad)
    assert model.tokpress.config.vision.layer == 0  # the failed applies left the patch as it was


def test_sdpa_and_eager_agree_with_merging():
    inputs = tiny.make_inputs(FAMILY)
    logits = []
    for attn in ("sdpa", "eager"):
        model = _deep_model(attn=attn)
        tokpress.apply(model, vision="tome", vision_ratio=0.25, vision_options={"metric": "keys"})
        logits.append(model(**inputs).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-4)


def test_frames_are_merged_independently():
    """A frame's encoder output does not depend on the other frames it is encoded with."""
    model = _deep_model()
    tokpress.apply(model, vision="tome", vision_ratio=0.3)
    pixels = tiny.make_inputs(FAMILY, video=tiny.VideoSpec(frames=3))["pixel_values_videos"]
    base = model.model
    together = base.get_video_features(pixels, vision_feature_layer=-1, vision_feature_select_strategy="full")
    for t in range(3):
        alone = base.get_video_features(
            pixels[:, t : t + 1], vision_feature_layer=-1, vision_feature_select_strategy="full"
        )
        torch.testing.assert_close(alone.pooler_output[0, :16], together.pooler_output[0, 16 * t : 16 * (t + 1)])


def test_batch_of_two_and_a_second_generate(get_model):
    model = get_model(FAMILY)
    inputs = batch_inputs(FAMILY)
    tokpress.apply(model, vision="tome", vision_ratio=0.5, outer="holitom", retain_ratio=0.25)
    first = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    stats = model.tokpress.last
    assert stats.vision_tokens == [PATCHES, 32] and stats.vision_frames == 16
    assert stats.after_outer == [round(0.25 * 128) + 1] * 2
    assert torch.equal(model.generate(**inputs, max_new_tokens=4, do_sample=False), first)
    batch_logits = model(**inputs).logits[:, -1]
    for b in range(2):
        alone = model(**sample_inputs(inputs, FAMILY, b)).logits[0, -1]
        torch.testing.assert_close(alone, batch_logits[b], rtol=0, atol=1e-5)


def test_vision_on_a_family_without_it_fails_before_touching(get_model):
    model = get_model("llava_next_video")
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    previous = model.tokpress
    with pytest.raises(UnsupportedModelError, match="families with one: llava_onevision, qwen2_vl, qwen3_5, qwen3_vl"):
        tokpress.apply(model, vision="tome", vision_ratio=0.5)
    assert model.tokpress is previous


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vision="tome", vision_ratio=0), "vision_ratio must be a number in"),
        (dict(vision="nope", vision_ratio=0.5), "unknown vision policy 'nope'; choose one of: mustdrop, rlt, tome"),
        (dict(vision="tome"), "pass vision_ratio="),
        (dict(vision="tome", vision_ratio=0.5, vision_options={"metrc": "keys"}), "valid options: metric"),
        (dict(vision="tome", vision_ratio=0.5, vision_options={"metric": "values"}), "metric must be one of"),
        (dict(outer="uniform", retain_ratio=0.5, vision_ratio=0.5), "no vision policy"),
    ],
)
def test_bad_vision_config_raises_before_touching(get_model, kwargs, message):
    model = get_model(FAMILY)
    with pytest.raises(ConfigError, match=message):
        tokpress.apply(model, **kwargs)
    assert "tokpress" not in model.__dict__


def test_vision_ratio_defaults_to_retain_ratio(get_model):
    model = get_model(FAMILY)
    tokpress.apply(model, vision="tome", retain_ratio=0.5)
    model(**tiny.make_inputs(FAMILY))
    assert model.tokpress.last.vision_tokens == [PATCHES, 32]


# ---------------------------------------------------------------------------------------------- method grammar


def test_method_specs_stack_a_vision_stage():
    from tokpress.eval.methods import VISION_DEFAULT_RATIO, parse_method

    assert parse_method("tome") == {"vision": "tome"}  # alone: the row's ratio is the vision ratio
    assert parse_method("tome>holitom") == {
        "vision": "tome",
        "vision_ratio": VISION_DEFAULT_RATIO,
        "method": "holitom",
    }
    assert parse_method("tome@0.25>evs+fastv") == {
        "vision": "tome",
        "vision_ratio": 0.25,
        "outer": "evs",
        "inner": "fastv",
    }


@pytest.mark.parametrize("spec", ["tome>tome", "nope>holitom", "tome@x>fastv", "tome>none", "tome>nope"])
def test_bad_vision_specs_name_the_grammar(spec):
    from tokpress.eval.methods import parse_method

    with pytest.raises(ConfigError):
        parse_method(spec)


def test_a_stacked_spec_applies_both_stages():
    from tokpress.eval.methods import parse_method

    model = tiny.tiny_model("llava_onevision")
    inputs = tiny.make_inputs("llava_onevision")
    tokpress.apply(model, retain_ratio=0.5, **parse_method("tome@0.5>holitom"))
    try:
        with torch.no_grad():
            model(**inputs)
        last = model.tokpress.last
        frames = last.video_tokens[0] - 1  # 8 frames x 16 tokens + the protected newline
        assert last.after_outer[0] == round(0.5 * frames) + 1  # HoliTom at the row's ratio
        per_frame = max(last.vision_tokens)
        assert min(last.vision_tokens) == round(0.5 * per_frame)  # the encoder's later layers ran merged
    finally:
        tokpress.remove(model)
