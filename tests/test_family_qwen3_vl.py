"""Qwen3-VL: per-temporal-patch blocks with timestamps assembled into one grid; deepstack follows the kept set."""

from __future__ import annotations

from collections import deque

import pytest
import torch

import tokpress
from tokpress import registry
from tokpress.eval.tiny import families as tiny
from tokpress.eval.tiny import qwen3_vl as tiny_qwen3_vl
from tokpress.eval.tiny.families import VIDEO_ID, VideoSpec
from tokpress.ops import group_mean
from tokpress.patches.deepstack import EMBEDS_KWARG, MASK_KWARG
from tokpress.policies.base import Grid, OuterPolicy, Plan, VideoTokens
from tokpress.registry import register_policy


class PairMean(OuterPolicy):
    """Keeps the first ``budget`` tokens; token ``i < budget`` becomes the mean of tokens ``i`` and ``i + budget``
    (when that exists): a merge whose weights the test knows."""

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        n = video.grid.numel
        groups = torch.arange(n) % budget
        groups[2 * budget :] = torch.arange(n - 2 * budget) % budget  # a few groups get a third member
        features = group_mean(video.features, groups.to(video.features.device), budget)
        return Plan(torch.arange(budget, device=video.features.device), features.to(video.features.dtype))


@pytest.fixture(scope="module", autouse=True)
def pair_mean_policy():
    """Register the test policy for this module only, so other tests never see it among the policies."""
    register_policy("test_pair_mean", stage="outer")(PairMean)
    yield
    registry._POLICIES.pop(("outer", "test_pair_mean"), None)


def _adapter(model):
    tokpress.apply(model, outer="uniform", retain_ratio=1.0)
    return model.tokpress.adapter


def _lm_kwargs(model, inputs) -> dict:
    """What the unpatched model hands its language model."""
    seen = {}

    def grab(module, args, kwargs):
        seen.update(kwargs)

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    return seen


def test_blocks_of_one_video_form_one_grid(get_model):
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=8, height=128, width=64))
    adapter = _adapter(model)
    is_video = inputs["input_ids"][0] == VIDEO_ID
    rope = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"]
    )[0][:, 0]
    (span,) = adapter.find_videos(is_video, rope, counts=deque([32]))
    assert span.grid == Grid(4, 4, 2)  # 4 temporal blocks of (128/32) x (64/32) tokens
    positions = is_video.nonzero().squeeze(1)
    assert torch.equal(span.index(), positions)  # raster order = sequence order, timestamps skipped
    assert span.positions[8] - span.positions[7] > 1  # a timestamp lies between block 0 and block 1
    (by_gaps,) = adapter.find_videos(is_video, rope, counts=None)
    assert by_gaps.grid == span.grid and torch.equal(by_gaps.index(), span.index())


def test_two_videos_in_one_prompt_and_wrong_counts(get_model):
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=4, height=64, width=64), videos_per_sample=2)
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    model(**inputs)
    assert model.tokpress.last.video_tokens == [16]  # 2 videos x 2 blocks x 2 x 2 tokens
    assert [len(v) for v in model.tokpress.last.kept["outer"][0]] == [4, 4]
    adapter = model.tokpress.adapter
    is_video = inputs["input_ids"][0] == VIDEO_ID
    rope = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"]
    )[0][:, 0]
    spans = adapter.find_videos(is_video, rope, counts=deque([8, 8]))
    assert [s.grid for s in spans] == [Grid(2, 2, 2)] * 2
    with pytest.raises(tokpress.TokpressError, match="video_grid_thw"):
        adapter.find_videos(is_video, rope, counts=deque([6, 10]))


def test_timestamps_and_images_are_never_dropped(get_model):
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=8, height=64, width=64), with_image=True)
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    kept_text = {}

    def grab(module, args, kwargs):
        kept_text["n"] = kwargs["inputs_embeds"].shape[1]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    n_video = int((inputs["input_ids"] == VIDEO_ID).sum())
    assert model.tokpress.last.video_tokens == [n_video]  # the 4 image tokens are not video
    # everything but the dropped video tokens enters the decoder: text, timestamps, markers and the image
    assert kept_text["n"] == inputs["input_ids"].shape[1] - (n_video - n_video // 4)


def test_long_video_of_32_blocks(get_model):
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=64, height=64, width=64))
    tokpress.apply(model, method="holitom", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, suppress_tokens=[tiny.IMAGE_ID, VIDEO_ID])
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert model.tokpress.last.video_tokens == [128] and model.tokpress.last.after_outer == [32]


def test_pruned_deepstack_matches_the_model_on_the_pruned_sequence(get_model):
    """uniform at 0.5 == the unpatched language model fed the kept rows of every input, deepstack rows included."""
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=8, height=64, width=64))
    seen = _lm_kwargs(model, inputs)
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    logits = model(**inputs).logits[0, -1]
    grid_keep = torch.tensor(model.tokpress.last.kept["outer"][0][0])
    tokpress.remove(model)
    video_at = (inputs["input_ids"][0] == VIDEO_ID).nonzero().squeeze(1)
    keep = torch.ones(inputs["input_ids"].shape[1], dtype=torch.bool)
    keep[video_at] = False
    keep[video_at[grid_keep]] = True
    rows = torch.zeros(video_at.numel(), dtype=torch.bool)
    rows[grid_keep] = True  # the mask covers only video positions here, in order
    hidden = model.model.language_model(
        inputs_embeds=seen["inputs_embeds"][:, keep],
        position_ids=seen["position_ids"][..., keep],
        attention_mask=seen["attention_mask"][:, keep],
        **{MASK_KWARG: seen[MASK_KWARG][:, keep], EMBEDS_KWARG: [d[rows] for d in seen[EMBEDS_KWARG]]},
    ).last_hidden_state
    torch.testing.assert_close(model.lm_head(hidden)[0, -1], logits, rtol=0, atol=1e-5)
    assert len(seen[EMBEDS_KWARG]) == 2  # both tiny deepstack layers were exercised


def test_merged_tokens_get_the_merged_deepstack_rows(get_model):
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=8, height=64, width=64))
    seen = _lm_kwargs(model, inputs)
    tokpress.apply(model, outer="test_pair_mean", retain_ratio=0.25)
    model.tokpress.record_plans = True
    model(**inputs)
    (plan,) = model.tokpress.last.plans["outer"][0]
    n, k = 16, 4
    groups = torch.arange(n) % k
    groups[2 * k :] = torch.arange(n - 2 * k) % k
    assert plan.sides is not None and len(plan.sides) == 2
    for layer, rows in enumerate(seen[EMBEDS_KWARG]):  # only video positions carry deepstack rows here
        torch.testing.assert_close(plan.sides[layer], group_mean(rows, groups, k), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_real_processor_output_is_compressed_end_to_end(get_model, family):
    """Frames -> Qwen3VLProcessor (timestamps from the fps metadata) -> tiny model -> tokpress."""
    from transformers.video_utils import VideoMetadata

    from tokpress.eval.tiny.processor import tiny_processor

    processor = tiny_processor(family)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    spec = VideoSpec(frames=8, height=128, width=128)
    metadata = VideoMetadata(total_num_frames=8, fps=2.0, frames_indices=list(range(8)))
    inputs = processor(
        text=[prompt], videos=[tiny.moving_square_video(spec)], video_metadata=[metadata], return_tensors="pt"
    )
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<0.2 seconds>" in text and "<3.2 seconds>" in text  # one timestamp per 2-frame block, at their mean
    assert int((inputs["input_ids"] == VIDEO_ID).sum()) == 4 * 16  # 4 blocks of (128 / 32)^2 tokens
    model = get_model(family)
    reference = model(**inputs).logits
    tokpress.apply(model, method="holitom", retain_ratio=1.0, inner_ratio=1.0)
    assert torch.equal(model(**inputs).logits, reference)
    tokpress.apply(model, outer="fastvid", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, suppress_tokens=[tiny.IMAGE_ID, VIDEO_ID])
    assert model.tokpress.last.video_tokens == [64] and model.tokpress.last.after_outer == [16]
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_beams_repeat_samples_and_still_find_each_video(get_model):
    """With num_beams, generate() repeats each sample; the per-video counts then no longer line up with the rows,
    and the videos are read from the block structure instead."""
    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.batch_inputs()
    tokpress.apply(model, outer="fastvid", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, num_beams=2, num_return_sequences=2, do_sample=False)
    assert out.shape[0] == 4
    assert model.tokpress.last.after_outer == [16, 16, 4, 4]  # 64 and 16 video tokens, each sample twice


def test_inner_stage_in_deepstack_layers_matches_a_layer_by_layer_reference(get_model):
    """A fixed inner stage at layer 1 (deepstack still writes after layers 0 and 1) == the unpatched layers run one
    by one: layer 0 and its deepstack rows on the whole prompt, then the kept rows only, with the kept tokens'
    deepstack rows added after layer 1."""
    from transformers.masking_utils import create_causal_mask

    from tokpress.patches.cache_arg import CACHE_KWARG

    model = get_model("qwen3_vl")
    inputs = tiny_qwen3_vl.make_inputs(video=VideoSpec(frames=4, height=128, width=64))  # 16 video tokens
    seen = _lm_kwargs(model, inputs)
    kept_ordinals = list(range(0, 16, 2))
    tokpress.apply(model, inner="fixed", inner_layer=1, retain_ratio=0.5, inner_options={"keep": [kept_ordinals]})
    got = model(**inputs).logits[0, -1]
    tokpress.remove(model)

    lm = model.model.language_model
    emb, pos, mask2d = seen["inputs_embeds"], seen["position_ids"], seen["attention_mask"]
    text_pos, rope_pos = (pos[0], pos[1:]) if pos.shape[0] == 4 else (None, pos)
    cos, sin = lm.rotary_emb(emb, rope_pos)
    vmask, rows = seen[MASK_KWARG], seen[EMBEDS_KWARG]

    def layer(i, h, keep):
        m = create_causal_mask(
            config=lm.config, inputs_embeds=h, attention_mask=mask2d[:, keep], **{CACHE_KWARG: None}, position_ids=None
        )
        return lm.layers[i](h, attention_mask=m, position_embeddings=(cos[:, keep], sin[:, keep]))

    everything = torch.ones(emb.shape[1], dtype=torch.bool)
    h = lm._deepstack_process(layer(0, emb, everything), vmask, rows[0])
    video_at = (inputs["input_ids"][0] == VIDEO_ID).nonzero().squeeze(1)
    keep = everything.clone()
    keep[video_at] = False
    keep[video_at[kept_ordinals]] = True
    h = h[:, keep]
    h = lm._deepstack_process(layer(1, h, keep), vmask[:, keep], rows[1][kept_ordinals])
    for i in (2, 3):
        h = layer(i, h, keep)
    want = model.lm_head(lm.norm(h))[0, -1]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
