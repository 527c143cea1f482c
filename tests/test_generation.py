"""Generation features around the invariant matrix: static cache, multi-turn, manual decode loops, mixed
image + video prompts, text-only prompts, accelerate device maps, half precision."""

from __future__ import annotations

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress.eval.tiny import families as tiny

STAGES = {
    "outer": dict(outer="evs", retain_ratio=0.25),
    "inner": dict(inner="fastv", inner_layer=2, retain_ratio=0.25),
    "stacked": dict(outer="uniform", inner="fastv", inner_layer=1, retain_ratio=0.5),
}
CASES = [(f, s) for f in tiny.ALL_FAMILIES for s in STAGES]
IDS = [f"{f}-{s}" for f, s in CASES]


def _generate(model, inputs, n=4, **kwargs):
    out = model.generate(
        **inputs, max_new_tokens=n, do_sample=False, return_dict_in_generate=True, output_logits=True, **kwargs
    )
    return out, torch.stack(out.logits, 1)


def _extend(inputs: dict, ids: torch.Tensor) -> dict:
    """Inputs of a longer conversation: ``ids`` continues ``inputs["input_ids"]``."""
    out = dict(inputs)
    extra = ids.shape[1] - inputs["input_ids"].shape[1]
    out["input_ids"] = ids
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(ids.shape[0], extra, dtype=torch.long)], 1)
    if "mm_token_type_ids" in inputs:
        out["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros(ids.shape[0], extra, dtype=torch.long)], 1
        )
    return out


def _replay(model, last, **stage):
    kwargs = {}
    cfg = model.tokpress.config
    if cfg.outer:
        kwargs.update(outer="fixed", outer_ratio=cfg.outer.ratio, outer_options={"keep": last.kept["outer"]})
    if cfg.inner:
        kwargs.update(
            inner="fixed",
            inner_layer=cfg.inner[0].layer,
            inner_ratio=cfg.inner[0].ratio,
            inner_options={"keep": last.kept["inner0"]},
        )
    tokpress.apply(model, **kwargs)


@pytest.mark.parametrize("family,stage", CASES, ids=IDS)
def test_static_cache_matches_dynamic_cache(get_model, family, stage):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, **STAGES[stage])
    dynamic, dyn_logits = _generate(model, inputs)
    static, static_logits = _generate(model, inputs, cache_implementation="static")
    assert torch.equal(static.sequences, dynamic.sequences)
    torch.testing.assert_close(static_logits, dyn_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,stage", CASES, ids=IDS)
def test_second_generate_continues_the_compressed_conversation(get_model, family, stage):
    model = get_model(family)
    inputs = tiny.make_inputs(family)
    tokpress.apply(model, **STAGES[stage])
    first, _ = _generate(model, inputs, n=3)
    last = model.tokpress.last
    question = torch.tensor([[11, 12, 13, 14]])
    turn2 = _extend(inputs, torch.cat([first.sequences, question], 1))
    follow = {k: v for k, v in turn2.items() if not k.startswith("pixel_values")}  # vision is in the cache
    second, second_logits = _generate(model, follow, n=3, past_key_values=first.past_key_values)
    # reference: the whole conversation recomputed without a cache, with the first turn's selection replayed
    _replay(model, last)
    whole = _extend(inputs, second.sequences[:, :-1])
    recomputed = model(**whole, use_cache=False).logits[:, -3:]
    torch.testing.assert_close(recomputed, second_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,stage", CASES, ids=IDS)
@pytest.mark.parametrize("pass_mask", [True, False], ids=["mask", "no-mask"])
def test_manual_decode_loop_matches_generate(get_model, family, stage, pass_mask):
    """A hand-written greedy loop that passes no position ids (P3) gives generate()'s logits."""
    if pass_mask and family.startswith("qwen"):
        pytest.skip("unpatched transformers (5.17-5.23) already fails on this Qwen loop: it sizes M-RoPE by the mask")
    model = get_model(family)
    inputs = tiny.make_inputs(family)
    tokpress.apply(model, **STAGES[stage])
    _, reference = _generate(model, inputs)
    out = model(**inputs, use_cache=True)
    cache, mask, steps = out.past_key_values, inputs["attention_mask"], [out.logits[:, -1]]
    for _ in range(3):
        token = steps[-1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(token)], 1)
        kwargs = dict(attention_mask=mask) if pass_mask else {}
        out = model(input_ids=token, past_key_values=cache, use_cache=True, **kwargs)
        cache = out.past_key_values
        steps.append(out.logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_images_in_the_prompt_are_left_alone(get_model, family):
    model = get_model(family)
    inputs = tiny.make_inputs(family, with_image=True)
    seen = []

    def record():
        hook = model.model.language_model.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True
        )
        model(**inputs)
        hook.remove()

    record()
    tokpress.apply(model, outer="evs", retain_ratio=0.25)
    record()  # registered after tokpress's hook, so it sees the pruned embeddings
    full, pruned = seen
    image = (inputs["input_ids"][0] == tiny.IMAGE_ID).nonzero().squeeze(1)
    assert image.numel() == 4
    assert torch.equal(pruned[0, image], full[0, image])  # the image precedes the video: same positions
    n_video = int((inputs["input_ids"] == tiny.VIDEO_ID).sum())
    assert pruned.shape[1] == full.shape[1] - (n_video - n_video // 4)
    assert model.tokpress.last.video_tokens == [n_video]


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_text_only_prompt_is_a_no_op(get_model, family):
    model = get_model(family)
    inputs = tiny.make_inputs(family, prompts=[(6, 4), (3, 2)], with_video=False)
    reference = _generate(model, inputs)
    tokpress.apply(model, outer="uniform", inner="fastv", retain_ratio=0.25)
    got = _generate(model, inputs)
    assert torch.equal(got[0].sequences, reference[0].sequences)
    assert torch.equal(got[1], reference[1])
    assert model.tokpress.last is None


def test_generated_video_token_id_is_a_plain_token(get_model):
    """A decode step that feeds the video placeholder id without video features compresses nothing."""
    model = get_model("qwen2_vl")
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    inputs = tiny.make_inputs("qwen2_vl")
    out = model(**inputs, use_cache=True)
    stats = model.tokpress.last
    token = torch.tensor([[tiny.VIDEO_ID]])
    model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
    assert model.tokpress.last is stats


@pytest.mark.parametrize("family", tiny.FAMILIES)
@pytest.mark.parametrize("how", ["cpu_offload", "from_pretrained_device_map"])
def test_accelerate_device_maps(tmp_path, family, how):
    """Weights offloaded by accelerate hooks (moved to the execution device per module) still compress exactly."""
    from accelerate import cpu_offload
    from transformers import AutoModelForImageTextToText

    model = tiny.tiny_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, **STAGES["stacked"])
    expected, expected_logits = _generate(model, inputs)
    if how == "cpu_offload":
        # the decoder (where tokpress hooks) gets accelerate's AlignDevicesHook on every module; SigLIP's meta
        # buffers break a whole-model cpu_offload of LLaVA-OV even without tokpress
        cpu_offload(model.model.language_model, execution_device=torch.device("cpu"))
        assert hasattr(model.model.language_model.layers[0].self_attn.q_proj, "_hf_hook")
    else:
        model.save_pretrained(tmp_path)
        model = AutoModelForImageTextToText.from_pretrained(tmp_path, device_map="auto", attn_implementation="sdpa")
        tokpress.apply(model, **STAGES["stacked"])
    got, got_logits = _generate(model, inputs)
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(got_logits, expected_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", tiny.FAMILIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision(get_model, family, dtype):
    model = get_model(family, "sdpa", dtype)
    inputs = batch_inputs(family, dtype=dtype)
    reference = model(**inputs).logits
    tokpress.apply(model, outer="uniform", inner="fastv", inner_layer=1, retain_ratio=1.0)
    assert torch.equal(model(**inputs).logits, reference)
    tokpress.apply(model, **STAGES["stacked"])
    out, _ = _generate(model, inputs)
    assert out.sequences.shape[1] == inputs["input_ids"].shape[1] + 4
    assert model.tokpress.last.after_inner[0] == [
        tokpress.config.budget(0.5, n - (family == "llava_onevision")) + (family == "llava_onevision")
        for n in model.tokpress.last.after_outer
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_flash_attention_matches_sdpa(family):
    pytest.importorskip("flash_attn")
    inputs = {k: v.cuda() for k, v in batch_inputs(family, dtype=torch.bfloat16).items()}
    results = []
    for attn in ("sdpa", "flash_attention_2"):
        model = tiny.tiny_model(family, attn=attn, dtype=torch.bfloat16).cuda()
        tokpress.apply(model, **STAGES["stacked"])
        results.append(_generate(model, inputs))
    assert torch.equal(results[0][0].sequences, results[1][0].sequences)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=3e-2)


@pytest.mark.parametrize("method", ["uniform", "holitom", "evs+framefusion"])
def test_two_videos_in_one_prompt(get_model, method):
    """Each video of a prompt gets its own grid and budget; the whole prompt stays bit-identical at ratio 1."""
    from tokpress.eval.methods import parse_method
    from tokpress.registry import get_preset

    model = get_model("qwen2_5_vl")
    a = tiny.make_inputs("qwen2_5_vl", video=tiny.VideoSpec(8, 112, 112), seed=1)
    b = tiny.make_inputs("qwen2_5_vl", video=tiny.VideoSpec(4, 56, 112), seed=2)
    ids = torch.cat([a["input_ids"], b["input_ids"]], 1)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": torch.cat([a["mm_token_type_ids"], b["mm_token_type_ids"]], 1),
        "pixel_values_videos": torch.cat([a["pixel_values_videos"], b["pixel_values_videos"]]),
        "video_grid_thw": torch.cat([a["video_grid_thw"], b["video_grid_thw"]]),
        "second_per_grid_ts": torch.ones(2),
    }
    reference = model(**inputs).logits
    kwargs = parse_method(method)
    has_inner = "inner" in kwargs or get_preset(kwargs.get("method", "uniform")).inner is not None
    tokpress.apply(model, retain_ratio=1.0, **kwargs, **({"inner_ratio": 1.0} if has_inner else {}))
    assert torch.equal(model(**inputs).logits, reference)
    tokpress.apply(model, retain_ratio=0.25, **kwargs)
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    last = model.tokpress.last
    assert [len(v) for v in last.kept["outer"][0]] == [16, 4]  # 25 % of 64 and of 16, per video
    assert last.video_tokens == [80] and last.after_outer == [20]
