"""Every method of the library under the generation features users hit: a static cache, a second generate() on
the same cache, and accelerate-dispatched weights — not only the baselines of test_generation.py."""

from __future__ import annotations

import pytest
import torch
from test_invariants import CACHE_CHANGES_SEMANTICS, GEN, METHODS, RATIO, _apply, _replay

import tokpress
from conftest import batch_inputs
from tokpress.errors import InputError
from tokpress.eval.tiny import families as tiny

FAMILIES = ("qwen2_5_vl", "llava_onevision")
CASES = [(f, m) for f in FAMILIES for m in METHODS]
IDS = [f"{f}-{m}" for f, m in CASES]


def _logits(out) -> torch.Tensor:
    return torch.stack(out.logits, 1)


@pytest.mark.parametrize("family,method", CASES, ids=IDS)
def test_static_cache(get_model, family, method):
    model = get_model(family)
    inputs = batch_inputs(family)
    _apply(model, method)
    kwargs = dict(GEN, return_dict_in_generate=True, output_logits=True)
    inner = model.tokpress.inner
    if inner and (inner[0].prune_earlier_kv or any(p.cut_kv_to_final for p in inner)):  # both cut DynamicCache
        with pytest.raises(InputError, match="DynamicCache"):
            model.generate(**inputs, cache_implementation="static", **kwargs)
        return
    dynamic = model.generate(**inputs, **kwargs)
    static = model.generate(**inputs, cache_implementation="static", **kwargs)
    assert torch.equal(static.sequences, dynamic.sequences)
    torch.testing.assert_close(_logits(static), _logits(dynamic), rtol=0, atol=1e-5)


def _conversation(inputs: dict, ids: torch.Tensor) -> dict:
    out = {k: v for k, v in inputs.items()}
    extra = ids.shape[1] - inputs["input_ids"].shape[1]
    out["input_ids"] = ids
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(ids.shape[0], extra, dtype=torch.long)], 1)
    if "mm_token_type_ids" in inputs:
        pad = torch.zeros(ids.shape[0], extra, dtype=torch.long)
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], pad], 1)
    return out


@pytest.mark.parametrize("family,method", CASES, ids=IDS)
def test_second_generate_on_the_same_cache(get_model, family, method):
    model = get_model(family)
    inputs = tiny.make_inputs(family)
    _apply(model, method)
    kwargs = dict(GEN, max_new_tokens=3, return_dict_in_generate=True, output_logits=True)
    first = model.generate(**inputs, **kwargs)
    last = model.tokpress.last
    turn2 = _conversation(inputs, torch.cat([first.sequences, torch.tensor([[11, 12, 13, 14]])], 1))
    follow = {k: v for k, v in turn2.items() if not k.startswith("pixel_values")}
    second = model.generate(**follow, past_key_values=first.past_key_values, **kwargs)
    assert second.sequences.shape[1] == turn2["input_ids"].shape[1] + 3
    assert torch.isfinite(_logits(second)).all()
    if method in CACHE_CHANGES_SEMANTICS:
        return  # decode-time masking / earlier-KV cuts: no no-cache equivalent (see test_invariants.py)
    _replay(model, last)
    whole = _conversation(inputs, second.sequences[:, :-1])
    recomputed = model(**whole, use_cache=False).logits[:, -3:]
    torch.testing.assert_close(recomputed, _logits(second), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,method", CASES, ids=IDS)
def test_accelerate_offloaded_decoder(family, method):
    from accelerate import cpu_offload

    model = tiny.tiny_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, retain_ratio=RATIO, **METHODS[method])
    kwargs = dict(GEN, return_dict_in_generate=True, output_logits=True)
    expected = model.generate(**inputs, **kwargs)
    cpu_offload(model.model.language_model, execution_device=torch.device("cpu"))
    got = model.generate(**inputs, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(_logits(got), _logits(expected), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,method", CASES, ids=IDS)
def test_beam_search(get_model, family, method):
    """Beams: ratio 1 equals unpatched beam search; compressed, a ragged batch equals each sample alone (the
    video is encoded once and its tokens repeated per beam; cache rows are reordered within a sample)."""
    from conftest import sample_inputs

    model = get_model(family)
    inputs = batch_inputs(family)
    beams = dict(GEN, num_beams=3)
    reference = model.generate(**inputs, **beams)
    _apply(model, method, ratio=1.0)
    assert torch.equal(model.generate(**inputs, **beams), reference)
    _apply(model, method)
    out = model.generate(**inputs, **beams)
    width = inputs["input_ids"].shape[1]
    for b in range(2):
        alone = model.generate(**sample_inputs(inputs, family, b), **beams)
        assert torch.equal(alone[0, -GEN["max_new_tokens"] :], out[b, width:])


# query-agnostic methods: the plan depends on the video prefix only, so a cache holding the compressed video can
# serve any question (transformers' prompt-reuse recipe: copy.deepcopy the prefix cache for every question)
PREFIX_REUSE = ("uniform", "evs", "vidcom2", "scissor", "sttm", "holitom")


def _split_after_video(inputs: dict, family: str) -> int:
    ids = inputs["input_ids"][0]
    last = int((ids == tiny.VIDEO_ID).nonzero().max())
    return last + (2 if family != "llava_onevision" else 1)  # Qwen: past <|vision_end|>


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PREFIX_REUSE)
def test_a_compressed_prefix_cache_serves_every_question(get_model, family, method):
    """Prefill [text, video] once; ask each question on a deep copy of that cache. For a query-agnostic method the
    question's logits equal compressing [text, video, question] in one pass. The continuation gets the one-pass
    M-RoPE positions (transformers 5.25's own ``generate()`` continues a Qwen prefix cache one or two positions off
    the one-pass layout, with or without tokpress); ``generate()`` on the copies must run too. HoliTom's inner stage
    reads the last query's attention, so its plan comes from the prefix: it is checked only for running."""
    import copy

    from tokpress.eval.accuracy.scoring import _continuation_positions

    model = get_model(family)
    inputs = tiny.make_inputs(family, prompts=[(5, 7)])
    split = _split_after_video(inputs, family)
    cut = ("input_ids", "attention_mask", "mm_token_type_ids")
    prefix = {k: (v[:, :split] if k in cut else v) for k, v in inputs.items()}
    _apply(model, method)
    cache = model(**prefix, use_cache=True).past_key_values
    for seed in (1, 2):
        question = torch.randint(3, 200, (1, 6), generator=torch.Generator().manual_seed(seed))
        whole = _conversation(prefix, torch.cat([prefix["input_ids"], question], 1))
        follow = {k: v for k, v in whole.items() if not k.startswith("pixel_values")}
        generated = model.generate(**follow, past_key_values=copy.deepcopy(cache), **GEN)
        assert generated.shape[1] == whole["input_ids"].shape[1] + GEN["max_new_tokens"]
        step = dict(input_ids=question, attention_mask=whole["attention_mask"])
        positions = _continuation_positions(model, prefix, question, whole["attention_mask"])
        if positions is not None:
            step["position_ids"] = positions
        reused = model(**step, past_key_values=copy.deepcopy(cache)).logits
        assert torch.isfinite(reused).all()
        if method != "holitom":
            one_pass = model(**whole).logits[:, -question.shape[1] :]  # the output is as short as the kept sequence
            torch.testing.assert_close(reused, one_pass, rtol=0, atol=1e-5)
