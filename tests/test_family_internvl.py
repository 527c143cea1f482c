"""InternVL: telling videos (labelled single-tile frames) from images in the token ids, compressing only the
videos, the real processor end to end, and the InternViT attention the vision capture passes on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tokpress
from tokpress.config import budget
from tokpress.errors import InputError
from tokpress.eval.tiny import families as tiny
from tokpress.eval.tiny import internvl as T
from tokpress.eval.tiny.families import IMAGE_ID, VISION_END_ID, VISION_START_ID, VideoSpec, moving_square_video
from tokpress.ops import topk_sorted
from tokpress.patches.internvl import InternVLAdapter
from tokpress.policies.base import Grid, OuterPolicy, Plan, VideoTokens
from tokpress.registry import _POLICIES, register_policy

FAMILY = "internvl"
PER = T.FRAME_TOKENS  # 16 tokens per tile
#: tokens of one frame block and the newline + label ("\nFrameN: ", N < 10) in front of the next one
BLOCK, GAP = PER + 2, len("\nFrame2: ")


@pytest.fixture
def adapter(get_model):
    return InternVLAdapter(get_model(FAMILY))


def videos(adapter: InternVLAdapter, ids: list[int]):
    row = torch.tensor(ids)
    return adapter.find_videos(row == IMAGE_ID, None, ids=row)


def frame_starts(span) -> list[int]:
    return span.index()[::PER].tolist()


# ---- recognising videos -----------------------------------------------------------------------------------------
def test_labelled_frames_are_one_video_with_their_positions(adapter):
    ids = T.text_ids("hi: ") + T.video_ids(3) + T.text_ids("?")
    (span,) = videos(adapter, ids)
    assert span.grid == Grid(3, 4, 4)
    # "hi: " (4) + "Frame1: " (8) + <img> -> the first context token at 13; each next frame 18 + 9 tokens later
    first = 4 + 8 + 1
    starts = [first, first + BLOCK + GAP, first + 2 * (BLOCK + GAP)]
    assert frame_starts(span) == starts and span.start == first
    expect = torch.cat([torch.arange(s, s + PER) for s in starts])
    assert torch.equal(span.index(), expect)
    assert all(ids[p] == IMAGE_ID for p in span.index().tolist())


def test_adjacent_single_tile_images_are_not_a_video(adapter):
    image = T.tile_block() + T.text_ids("\n")  # the chat template's "<IMG_CONTEXT>\n"
    assert videos(adapter, T.text_ids("user\n") + image + image + T.text_ids("Compare.")) == []


def test_multi_tile_images_are_never_frames(adapter):
    ids = T.text_ids("Frame1: ") + T.tile_block(3) + T.text_ids("\nFrame2: ") + T.tile_block(3)
    assert videos(adapter, ids) == []


def test_image_before_a_video_is_left_out(adapter):
    """The gap between the image and the first frame ("\\nFrame1: ") looks like a frame gap; the text before the
    image is no label, so the video starts at Frame1."""
    ids = T.text_ids("user\n") + T.tile_block() + T.text_ids("\n") + T.video_ids(2) + T.text_ids("\n")
    (span,) = videos(adapter, ids)
    image_ctx = 5 + 1
    first = image_ctx + PER + 1 + 1 + 8 + 1  # image block, "\n", "Frame1: ", <img>
    assert span.grid == Grid(2, 4, 4)
    assert frame_starts(span) == [first, first + BLOCK + GAP]
    assert image_ctx not in span.index().tolist()


def test_two_videos_in_a_row_are_two_videos(adapter):
    """The second video's "Frame1: " repeats a label of the first: a new video starts there."""
    ids = T.text_ids("a\n") + T.video_ids(3) + T.text_ids("\n") + T.video_ids(2)
    first, second = videos(adapter, ids)
    assert (first.grid, second.grid) == (Grid(3, 4, 4), Grid(2, 4, 4))
    start = 2 + 8 + 1
    assert frame_starts(first) == [start + i * (BLOCK + GAP) for i in range(3)]
    second_start = start + 2 * (BLOCK + GAP) + BLOCK + GAP
    assert frame_starts(second) == [second_start, second_start + BLOCK + GAP]


def test_one_frame_or_unlabelled_frames_are_left_alone(adapter):
    assert videos(adapter, T.text_ids("q\n") + T.video_ids(1)) == []
    unlabelled = T.text_ids("x") + T.tile_block() + T.text_ids("\nand ") + T.tile_block()
    assert videos(adapter, unlabelled) == []


@pytest.mark.parametrize("count", [PER - 1, PER + 1])
def test_a_block_that_is_not_whole_tiles_raises(adapter, count):
    ids = T.text_ids("Frame1: ") + [VISION_START_ID, *[IMAGE_ID] * count, VISION_END_ID]
    with pytest.raises(InputError, match="not a whole number"):
        videos(adapter, ids + T.text_ids("\nFrame2: ") + T.tile_block())


def test_context_tokens_outside_a_block_raise(adapter):
    ids = T.video_ids(2) + T.text_ids("\n") + [IMAGE_ID] * PER
    with pytest.raises(InputError, match="<img> / </img>"):
        videos(adapter, T.text_ids("a ") + ids)


# ---- compression through the model ------------------------------------------------------------------------------
def _decoder_inputs(model, inputs) -> torch.Tensor:
    """``inputs_embeds`` as the language model receives them (after tokpress's hook, if applied)."""
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True
    )
    try:
        model(**inputs)
    finally:
        hook.remove()
    return seen[0]


def test_an_image_next_to_a_video_is_untouched(get_model):
    model = get_model(FAMILY)
    frames = 6
    inputs = T.make_inputs([(5, 7)], VideoSpec(frames=frames), with_image=True)
    image = list(range(5 + 1, 5 + 1 + PER))  # "<img>" right after the 5 text tokens
    assert bool((inputs["input_ids"][0, image] == IMAGE_ID).all())
    full = _decoder_inputs(model, inputs)
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    compressed = _decoder_inputs(model, inputs)
    last = model.tokpress.last
    n = frames * PER
    assert last.video_tokens == [n] and last.after_outer == [budget(0.25, n)]
    assert compressed.shape[1] == full.shape[1] - (n - budget(0.25, n))
    torch.testing.assert_close(compressed[0, image], full[0, image], rtol=0, atol=0)  # before the video: same place
    torch.testing.assert_close(compressed[0, -7:], full[0, -7:], rtol=0, atol=0)  # the text after it


def test_an_image_only_prompt_is_not_compressed(get_model):
    model = get_model(FAMILY)
    inputs = T.make_inputs([(5, 7)], with_image=True, with_video=False)
    reference = model(**inputs).logits
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    assert torch.equal(model(**inputs).logits, reference)
    assert model.tokpress.last is None


# ---- the real processor -----------------------------------------------------------------------------------------
def test_processor_end_to_end(get_model):
    processor = T.processor()
    frames = 5
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "What moves?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = np.full((56, 112, 3), 128, np.uint8)  # 1 x 2 tiles + a thumbnail = 3 tiles, one 48-token block
    video = moving_square_video(VideoSpec(frames=frames, height=112, width=112))
    inputs = processor(text=[prompt], images=[image], videos=[video], return_tensors="pt")
    ids = inputs["input_ids"]
    assert tuple(inputs["pixel_values"].shape) == (3 + frames, 3, 56, 56)
    assert int((ids == IMAGE_ID).sum()) == PER * (3 + frames)
    assert T.grid_tokens(inputs) == [frames * PER]
    model = get_model(FAMILY)
    base = model(**inputs).logits
    n = frames * PER

    tokpress.apply(model, outer="uniform", retain_ratio=1.0)
    assert torch.equal(model(**inputs).logits, base)
    assert model.tokpress.last.video_tokens == model.tokpress.last.after_outer == [n]

    tokpress.apply(model, outer="evs", inner="fastv", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, suppress_tokens=[IMAGE_ID])
    assert out.shape == (1, ids.shape[1] + 4)
    assert isinstance(processor.batch_decode(out[:, ids.shape[1] :])[0], str)
    last = model.tokpress.last
    assert last.video_tokens == [n] and last.after_outer == [budget(0.25, n)]
    assert last.after_inner[0][0] == budget(model.tokpress.config.inner[0].ratio, budget(0.25, n))

    tokpress.remove(model)
    assert torch.equal(model(**inputs).logits, base)


# ---- vision attention -------------------------------------------------------------------------------------------
RECORDS: list = []


class FullVisionRecorder(OuterPolicy):
    needs_vision_attention = True
    vision_attention = "full"

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        RECORDS.append((video.sample, video.attention.clone()))
        return Plan(topk_sorted(video.attention, budget))


@pytest.fixture
def recorder():
    RECORDS.clear()
    if ("outer", "t_internvl_vision") not in _POLICIES:
        register_policy("t_internvl_vision", stage="outer")(FullVisionRecorder)
    yield "t_internvl_vision"
    _POLICIES.pop(("outer", "t_internvl_vision"), None)
    RECORDS.clear()


def test_fold_sums_the_patches_pixel_shuffle_merges(adapter):
    """Token (i, j) of a tile stands for patches rows 2i..2i+1, columns 2j..2j+1 of the 8 x 8 grid."""
    scores = torch.zeros(2, 64)
    scores[0, 3 * 8 + 5] = 1.0  # patch (3, 5) -> token (1, 2)
    scores[1, 6 * 8 + 0] = 2.0  # patch (6, 0) -> token (3, 0)
    scores[1, 7 * 8 + 1] = 4.0  # patch (7, 1) -> token (3, 0) as well
    folded = adapter.fold(scores)
    expect = torch.zeros(2, 16)
    expect[0, 1 * 4 + 2] = 1.0
    expect[1, 3 * 4 + 0] = 6.0
    assert torch.equal(folded, expect.flatten())
    index = torch.arange(64.0)[None]
    blocks = index.view(4, 2, 4, 2).sum((1, 3)).flatten()  # the 2 x 2 block sums, written out
    assert torch.equal(adapter.fold(index), blocks)


def test_full_vision_attention_equals_internvit_eager_attention(recorder):
    """The map averaged over queries and heads is InternViT's own eager attention of the feature layer, CLS
    column dropped, 2 x 2 patch blocks summed; the image tile before each video is left out."""
    model = tiny.tiny_model(FAMILY, attn="eager")
    inputs = T.make_inputs([(5, 7), (2, 3)], [VideoSpec(frames=3), VideoSpec(frames=2)], with_image=True)
    attentions = model.model.vision_tower(inputs["pixel_values"], output_attentions=True).attentions[-1]
    per_tile = attentions.mean(dim=(1, 2))[:, 1:]  # [tiles, 64]: the CLS key dropped
    expect = per_tile.view(-1, 4, 2, 4, 2).sum((2, 4)).flatten(1)  # [tiles, 16]
    frames = {0: expect[1:4].flatten(), 1: expect[5:7].flatten()}  # tiles: image, 3 frames, image, 2 frames
    tokpress.apply(model, outer=recorder, retain_ratio=0.5)
    model(**inputs)
    assert [b for b, _ in RECORDS] == [0, 1]
    for b, att in RECORDS:
        torch.testing.assert_close(att, frames[b], rtol=1e-4, atol=1e-6)
    RECORDS.clear()
    model.generate(**inputs, max_new_tokens=2, do_sample=False)  # 5.23+ encodes the tiles before the prefill
    for b, att in RECORDS:
        torch.testing.assert_close(att, frames[b], rtol=1e-4, atol=1e-6)
    RECORDS.clear()
    alone = T.sample_inputs(inputs, 1)
    model(**alone)
    torch.testing.assert_close(RECORDS[0][1], frames[1], rtol=1e-4, atol=1e-6)
    tokpress.remove(model)
    assert "get_image_features" not in model.model.__dict__
