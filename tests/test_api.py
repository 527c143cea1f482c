"""The public API: validation before mutation, re-applying, the context manager, the registries."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress.errors import ConfigError, InputError, TokpressError, UnsupportedModelError
from tokpress.eval.tiny import families as tiny


def _hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


BAD_CONFIGS = [
    (dict(method="nope", retain_ratio=0.5), ConfigError, "unknown method"),
    (dict(outer="nope", retain_ratio=0.5), ConfigError, "unknown outer policy"),
    (dict(inner="uniform", retain_ratio=0.5), ConfigError, "unknown inner policy"),
    (dict(outer="uniform", retain_ratio=0.0), ConfigError, "in (0, 1]"),
    (dict(outer="uniform", retain_ratio=-0.1), ConfigError, "in (0, 1]"),
    (dict(outer="uniform", retain_ratio=1.5), ConfigError, "in (0, 1]"),
    (dict(outer="uniform", retain_ratio="half"), ConfigError, "in (0, 1]"),
    (dict(outer="uniform", retain_ratio=True), ConfigError, "in (0, 1]"),
    (dict(outer="uniform"), ConfigError, "pass retain_ratio"),
    (dict(inner="fastv", retain_ratio=0.5, inner_layer=0), ConfigError, "inner_layer must be"),
    (dict(inner="fastv", retain_ratio=0.5, inner_layer=4), ConfigError, "inner_layer must be"),
    (dict(inner="fastv", retain_ratio=0.5, inner_layer=1.5), ConfigError, "inner_layer must be"),
    (dict(retain_ratio=0.5), ConfigError, "nothing to do"),
    (dict(method="fastv", outer="uniform", retain_ratio=0.5), ConfigError, "either a method"),
    (dict(outer="uniform", retain_ratio=0.5, inner_layer=2), ConfigError, "no inner policy"),
    (dict(inner="fastv", retain_ratio=0.5, outer_ratio=0.5), ConfigError, "no outer policy"),
    (dict(outer="uniform", retain_ratio=0.5, seed=1), ConfigError, "unknown option 'seed'"),
    (dict(outer="random", retain_ratio=0.5, outer_options={"sed": 1}), ConfigError, "valid options: seed"),
    (dict(outer="random", retain_ratio=0.5, seed="x"), ConfigError, "seed must be an int"),
    (dict(outer="fixed", inner="fixed", retain_ratio=0.5, keep=[[1]]), ConfigError, "both the outer and the inner"),
    (dict(outer="fixed", retain_ratio=0.5), ConfigError, "needs keep"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD_CONFIGS, ids=[c[2] + f"-{i}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_config_raises_before_touching_the_model(get_model, kwargs, error, message):
    model = get_model("qwen2_vl")
    inputs = tiny.make_inputs("qwen2_vl")
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    before, hooks = model(**inputs).logits, _hooks(model)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        tokpress.apply(model, **kwargs)
    assert model.tokpress.config.outer.policy == "uniform"  # the previous patch is intact
    assert _hooks(model) == hooks
    assert torch.equal(model(**inputs).logits, before)


def test_error_hierarchy():
    assert issubclass(ConfigError, TokpressError) and issubclass(ConfigError, ValueError)
    assert issubclass(UnsupportedModelError, TokpressError) and issubclass(UnsupportedModelError, NotImplementedError)
    assert issubclass(InputError, TokpressError)


def test_unsupported_model_lists_supported_ones():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    hooks = _hooks(model)
    with pytest.raises(UnsupportedModelError, match="qwen2_5_vl") as info:
        tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    assert "llama" in str(info.value)
    assert _hooks(model) == hooks and not hasattr(model, "tokpress")
    with pytest.raises(UnsupportedModelError, match="not a transformers model"):
        tokpress.apply(torch.nn.Linear(2, 2), outer="uniform", retain_ratio=0.5)


def test_transformers_version_is_checked(get_model, monkeypatch):
    model = get_model("qwen2_vl")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "4.57.1" if n == "transformers" else real(n))
    with pytest.raises(UnsupportedModelError, match=r"transformers 4\.57\.1 is installed.*pip install"):
        tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    assert not hasattr(model, "tokpress")


def test_unsupported_attention_implementation(monkeypatch):
    model = tiny.tiny_model("qwen2_vl")
    monkeypatch.setattr(model.model.language_model.config, "_attn_implementation", "flex_attention")
    with pytest.raises(UnsupportedModelError, match="attn_implementation"):
        tokpress.apply(model, outer="uniform", retain_ratio=0.5)


def test_apply_twice_replaces_the_previous_patch(get_model):
    model = get_model("qwen2_5_vl")
    inputs = tiny.make_inputs("qwen2_5_vl")
    hooks = _hooks(model)
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    tokpress.apply(model, inner="fastv", retain_ratio=0.25)
    assert model.tokpress.config.outer is None and model.tokpress.config.inner[0].policy == "fastv"
    model(**inputs)
    assert model.tokpress.last.after_outer == [64] and model.tokpress.last.after_inner == [[16]]
    only_inner = _hooks(model)
    tokpress.remove(model)
    tokpress.apply(model, inner="fastv", retain_ratio=0.25)
    assert _hooks(model) == only_inner  # nothing of the first patch was left behind
    tokpress.remove(model)
    assert _hooks(model) == hooks
    tokpress.remove(model)  # removing an unpatched model is a no-op


def test_compressed_context_restores_previous_state(get_model):
    model = get_model("llava_onevision")
    inputs = tiny.make_inputs("llava_onevision")
    reference = model(**inputs).logits
    with tokpress.compressed(model, outer="random", retain_ratio=0.5) as patched:
        assert patched is model and model(**inputs).logits.shape[1] < reference.shape[1]
    assert not hasattr(model, "tokpress") and torch.equal(model(**inputs).logits, reference)
    tokpress.apply(model, "evs", retain_ratio=0.25)
    evs = model(**inputs).logits
    with pytest.raises(RuntimeError, match="boom"), tokpress.compressed(model, "fastv", retain_ratio=0.5):
        raise RuntimeError("boom")
    assert model.tokpress.config.method == "evs" and torch.equal(model(**inputs).logits, evs)


def test_presets_and_registries():
    assert {"uniform", "random", "frames", "evs", "fastv"} <= set(tokpress.preset_names())
    assert set(tokpress.adapter_names()) >= {"qwen2_vl", "qwen2_5_vl", "llava_onevision"}
    with pytest.raises(ValueError, match="already registered"):
        tokpress.register_policy("uniform", stage="outer")(
            type("Dup", (tokpress.registry.get_policy("outer", "uniform"),), {})
        )


def test_qwen_without_mm_token_type_ids_is_a_clear_input_error(get_model):
    """5.17 silently falls back to 1-D positions (P1): tokpress then raises; 5.23 raises itself."""
    model = get_model("qwen2_vl")
    inputs = tiny.make_inputs("qwen2_vl")
    inputs.pop("mm_token_type_ids")
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        model(**inputs)


def test_vision_attention_policy_on_a_family_without_it_fails_before_touching(get_model, monkeypatch):
    from tokpress.patches.base import Adapter
    from tokpress.patches.qwen2_vl import Qwen2VLAdapter

    model = get_model("qwen2_vl")
    monkeypatch.setattr(Qwen2VLAdapter, "install_vision_capture", Adapter.install_vision_capture)
    hooks = _hooks(model)
    with pytest.raises(UnsupportedModelError, match="vision-encoder attention"):
        tokpress.apply(model, outer="visionzip", retain_ratio=0.5)
    assert _hooks(model) == hooks and not hasattr(model, "tokpress")
    assert "get_video_features" not in model.model.__dict__


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_vision_encoder_is_the_module_that_encodes_the_frames(get_model, family):
    model = get_model(family)
    encoder = tokpress.vision_encoder(model)
    calls = []
    handle = encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        model(**batch_inputs(family))
    finally:
        handle.remove()
    assert calls  # the forward ran the module tokpress times as "vision"
    assert encoder is getattr(model.model, "visual", None) or encoder is model.model.vision_tower


def test_vision_encoder_refuses_other_models():
    with pytest.raises(tokpress.UnsupportedModelError):
        tokpress.vision_encoder(torch.nn.Linear(2, 2))
