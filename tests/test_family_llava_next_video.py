"""LLaVA-NeXT-Video: the adapter's video layout, images left alone, the vision-attention capture against eager
CLIP attention weights, the real processor end to end, and HoliTom through ``generate``.

Tiny model (``tokpress.eval.tiny.llava_next_video``): 56 px CLIP, 7 px patches -> 8 x 8 patches + CLS; features
of layer -2 without CLS, average-pooled with stride 2 -> 4 x 4 = 16 tokens per frame; 8 frames -> 128 tokens.
"""

from __future__ import annotations

import logging

import pytest
import torch

import tokpress
from conftest import batch_inputs, sample_inputs
from tokpress.errors import InputError, UnsupportedModelError
from tokpress.eval.tiny import families as tiny
from tokpress.eval.tiny import llava_next_video as lnv
from tokpress.ops import topk_sorted
from tokpress.patches.base import VideoSpan
from tokpress.patches.llava_next_video import LlavaNextVideoAdapter
from tokpress.patches.vision import mean_attention, mean_query_attention
from tokpress.policies.base import Grid, OuterPolicy, Plan, VideoTokens
from tokpress.registry import _POLICIES, register_policy

FAMILY = "llava_next_video"
FRAMES = 8
PER_FRAME = 16  # (56 // 7) // 2 = 4 per side
IMAGE = 64 + 8 * (8 + 1)  # base view 8x8 + one anyres tile of 8 rows x (8 patches + newline)


def _model_with(attn: str = "eager", **changes):
    """A fresh tiny model whose config differs from the shared one by ``changes``."""
    from transformers import AutoModelForImageTextToText

    config = lnv.config()
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, attn_implementation=attn).eval()


def _mask(*pieces: tuple[bool, int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), flag) for flag, n in pieces])


# ---- layout --------------------------------------------------------------------------------------------------------
def test_constants_match_the_hand_derivation():
    assert lnv.FRAME_TOKENS == PER_FRAME and lnv.IMAGE_TOKENS == IMAGE == 136 and lnv.EXTRA == 0


def test_find_videos_one_span_per_run(get_model):
    adapter = LlavaNextVideoAdapter(get_model(FAMILY))
    mask = _mask((False, 3), (True, 2 * PER_FRAME), (False, 5), (True, PER_FRAME), (False, 1))
    spans = adapter.find_videos(mask, None)
    assert spans == [VideoSpan(3, Grid(2, 4, 4)), VideoSpan(3 + 32 + 5, Grid(1, 4, 4))]
    assert [s.extra for s in spans] == [0, 0]
    assert adapter.find_videos(torch.zeros(10, dtype=torch.bool), None) == []


@pytest.mark.parametrize("length", [PER_FRAME - 1, PER_FRAME + 1, 3 * PER_FRAME + 8])
def test_run_not_a_whole_number_of_frames_is_an_input_error(get_model, length):
    adapter = LlavaNextVideoAdapter(get_model(FAMILY))
    with pytest.raises(InputError, match=f"run of {length} video tokens"):
        adapter.find_videos(_mask((False, 2), (True, length)), None)


def test_a_misplaced_frame_boundary_is_an_input_error(get_model):
    """Two videos whose 256 tokens (the model's count) are split 127 + 129 by text: no run is whole frames."""
    model = get_model(FAMILY)
    text = [7, 8, 9]
    ids = torch.tensor([text + [tiny.VIDEO_ID] * 127 + text + [tiny.VIDEO_ID] * 129 + text])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=torch.randn(2, 8, 3, 56, 56))
    model(**inputs)  # the model itself accepts it (it only counts placeholders)
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    with pytest.raises(InputError, match="run of 127 video tokens"):
        model(**inputs)


def test_pool_stride_rounds_down_like_the_model():
    """Stride 3 on the 8 x 8 grid: AvgPool2d without padding keeps floor(8 / 3) = 2 rows -> 4 tokens per frame."""
    model = _model_with(spatial_pool_stride=3)
    pooled = model.model.vision_resampler(torch.randn(FRAMES, 64, 32))
    assert pooled.shape == (FRAMES, 4, 32)
    adapter = LlavaNextVideoAdapter(model)
    assert adapter.frame_side == 2
    assert adapter.find_videos(_mask((False, 1), (True, FRAMES * 4)), None) == [VideoSpan(1, Grid(FRAMES, 2, 2))]


def test_published_geometry_is_12x12_per_frame():
    """336 px / 14 px patches = 24 x 24, pooled with stride 2 -> 144 tokens per frame."""
    vision = dict(lnv.config().vision_config.to_dict(), image_size=336, patch_size=14)
    from transformers import CLIPVisionConfig

    adapter = LlavaNextVideoAdapter(_model_with(vision_config=CLIPVisionConfig(**vision)))
    assert adapter.frame_side == 12
    assert adapter.find_videos(_mask((True, 2 * 144)), None) == [VideoSpan(0, Grid(2, 12, 12))]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("spatial_pool_mode", "bilinear", "spatial_pool_mode"),
        ("spatial_pool_stride", 9, "spatial_pool_stride"),
        ("vision_feature_layer", 0, "vision_feature_layer"),
        ("vision_feature_layer", -4, "vision_feature_layer"),  # hidden_states[-4] of 4: the embeddings
        ("vision_feature_layer", 4, "vision_feature_layer"),  # past the 3 layers
    ],
)
def test_validate_rejects_what_the_adapter_cannot_read(get_model, monkeypatch, key, value, message):
    model = get_model(FAMILY)
    monkeypatch.setattr(model.config, key, value)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with pytest.raises(UnsupportedModelError, match=message):
        tokpress.apply(model, method="holitom", retain_ratio=0.25)
    assert not hasattr(model, "tokpress")
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks


# ---- images stay untouched ---------------------------------------------------------------------------------------
def _language_model_inputs(model, inputs) -> torch.Tensor:
    """``inputs_embeds`` as the language model receives them (after tokpress's own pre-hook)."""
    seen = {}

    def grab(module, args, kwargs):
        seen["emb"] = kwargs["inputs_embeds"]

    handle = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**inputs)
    finally:
        handle.remove()
    return seen["emb"]


def test_images_in_a_video_prompt_are_never_dropped(get_model):
    model = get_model(FAMILY)
    inputs = batch_inputs(FAMILY, with_image=True)
    ids = inputs["input_ids"]
    assert (ids == tiny.IMAGE_ID).sum(1).tolist() == [IMAGE, IMAGE]
    reference = _language_model_inputs(model, inputs)
    tokpress.apply(model, outer="uniform", inner="fastv", inner_layer=1, inner_ratio=0.5, retain_ratio=0.25)
    compressed = _language_model_inputs(model, inputs)
    last = model.tokpress.last
    real = inputs["attention_mask"].sum(1).tolist()
    assert last.video_tokens == [FRAMES * PER_FRAME] * 2
    assert last.after_outer == [32, 32] and last.after_inner == [[16, 16]]
    assert last.seq_tokens == [[r - 96 for r in real], [r - 112 for r in real]]
    for b in range(2):
        image_rows = reference[b, ids[b] == tiny.IMAGE_ID]  # [136, D]
        hits = (image_rows[0] == compressed[b]).all(-1)  # the first row (a base-view patch) is unique
        assert int(hits.sum()) == 1
        start = int(hits.nonzero())
        assert torch.equal(compressed[b, start : start + IMAGE], image_rows)  # the whole image, unchanged, in order


# ---- vision-encoder attention --------------------------------------------------------------------------------------
def _capture(model, pixel_values_videos: torch.Tensor, score) -> torch.Tensor:
    """What the adapter's hooks pass on while the model encodes ``pixel_values_videos`` [B, F, 3, 56, 56]."""
    got: list[torch.Tensor] = []
    handles = LlavaNextVideoAdapter(model).install_vision_capture(lambda: True, got.append, score)
    try:
        model.model.get_video_features(pixel_values_videos)
    finally:
        for handle in handles:
            handle.remove()
    assert len(got) == 1
    return got[0]


def _eager_reference(model, pixel_values_videos: torch.Tensor, pool, layer: int = -2) -> torch.Tensor:
    """From eager CLIP attention weights of encoder layer ``layer`` (-2: the one whose output the model reads by
    default): attention each patch receives, averaged over heads and queries, CLS column dropped, pooled 2 x 2."""
    frames = pixel_values_videos.flatten(0, 1)
    weights = model.model.vision_tower(frames, output_attentions=True).attentions[layer]  # [BF, H, 65, 65]
    received = weights.mean(dim=(1, 2))[:, 1:].reshape(-1, 1, 8, 8)
    return pool(received, kernel_size=2, stride=2).flatten()


@pytest.mark.parametrize(
    "mode,feature_layer,layer",
    [
        ("average", -2, -2),
        ("max", -2, -2),
        ("average", 1, 0),  # hidden_states[1] is the output of encoder layer 0
        ("average", [1, 3], 2),  # several feature layers: the last one listed
    ],
)
def test_capture_equals_pooled_eager_attention(mode, feature_layer, layer):
    model = _model_with("eager", spatial_pool_mode=mode, vision_feature_layer=feature_layer)
    pixels = lnv.make_inputs([(1, 1), (1, 1)])["pixel_values_videos"]
    got = _capture(model, pixels, mean_attention)
    pool = torch.nn.functional.avg_pool2d if mode == "average" else torch.nn.functional.max_pool2d
    assert got.shape == (2 * FRAMES * PER_FRAME,) and got.dtype == torch.float32
    torch.testing.assert_close(got, _eager_reference(model, pixels, pool, layer))


def test_capture_mean_query_is_a_pooled_distribution(get_model):
    model = get_model(FAMILY)
    pixels = lnv.make_inputs()["pixel_values_videos"]
    got = _capture(model, pixels, mean_query_attention)
    assert got.shape == (FRAMES * PER_FRAME,) and bool((got > 0).all())
    # each frame's 65 keys sum to 1; the 64 patches (CLS dropped) average 2x2 -> the 16 tokens sum to < 1/4
    per_frame = got.view(FRAMES, PER_FRAME).sum(1)
    assert bool((per_frame < 0.25).all()) and bool((per_frame > 0).all())


class _Recorder(OuterPolicy):
    needs_vision_attention = True
    vision_attention = "full"
    seen: list = []

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        _Recorder.seen.append((video.sample, video.attention.clone()))
        return Plan(topk_sorted(video.attention, budget))


@pytest.fixture
def recorder():
    register_policy("t_lnv_vision", stage="outer")(_Recorder)
    _Recorder.seen.clear()
    yield _Recorder.seen
    _POLICIES.pop(("outer", "t_lnv_vision"), None)


def test_vision_attention_reaches_the_policy_per_sample(get_model, recorder):
    model = get_model(FAMILY, "eager")
    inputs = batch_inputs(FAMILY, with_image=True)  # the image goes through the same tower: not captured
    tokpress.apply(model, outer="t_lnv_vision", retain_ratio=0.5)
    model(**inputs)
    reference = _eager_reference(model, inputs["pixel_values_videos"], torch.nn.functional.avg_pool2d)
    batch = dict(recorder)
    assert sorted(batch) == [0, 1]
    torch.testing.assert_close(torch.cat([batch[0], batch[1]]), reference)
    recorder.clear()
    model(**sample_inputs(inputs, FAMILY, 1))
    torch.testing.assert_close(recorder[0][1], batch[1])  # batch == alone


# ---- processor and generation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processed():
    processor = lnv.processor()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "What moves?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.startswith("USER: <image>\n<video>\nWhat moves?") and prompt.endswith("ASSISTANT:")
    video = tiny.moving_square_video(tiny.VideoSpec(frames=FRAMES, height=112, width=112))
    image = tiny.moving_square_video(tiny.VideoSpec(frames=1, height=80, width=80))[0]
    return processor, processor(text=[prompt], videos=[video], images=[image], return_tensors="pt")


def test_processor_layout(processed):
    processor, inputs = processed
    ids = inputs["input_ids"][0]
    assert processor.video_token_id == tiny.VIDEO_ID and processor.image_token_id == tiny.IMAGE_ID
    assert int((ids == tiny.VIDEO_ID).sum()) == FRAMES * PER_FRAME
    assert int((ids == tiny.IMAGE_ID).sum()) == IMAGE
    assert tuple(inputs["pixel_values_videos"].shape) == (1, FRAMES, 3, 56, 56)
    assert inputs["image_sizes"].tolist() == [[80, 80]]
    assert int(ids.max()) < tiny.VOCAB


def test_processor_output_runs_and_compresses(get_model, processed):
    processor, inputs = processed
    model = get_model(FAMILY)
    base = model(**inputs).logits
    tokpress.apply(model, outer="uniform", retain_ratio=1.0)
    assert torch.equal(model(**inputs).logits, base)
    tokpress.apply(model, method="holitom", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, suppress_tokens=[tiny.IMAGE_ID, tiny.VIDEO_ID])
    width = inputs["input_ids"].shape[1]
    assert out.shape == (1, width + 4)
    assert isinstance(processor.batch_decode(out[:, width:])[0], str)
    last = model.tokpress.last
    assert last.video_tokens == [128] and last.after_outer == [32]
    assert last.seq_tokens[0] == [width - 96]
    tokpress.remove(model)
    assert torch.equal(model(**inputs).logits, base)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_holitom_generates_on_the_batch(get_model, attn, caplog):
    model = get_model(FAMILY, attn)
    inputs = batch_inputs(FAMILY)
    width = inputs["input_ids"].shape[1]
    tokpress.apply(model, method="holitom", retain_ratio=0.25)
    with caplog.at_level(logging.WARNING, logger="tokpress"):
        out = model.generate(
            **inputs, max_new_tokens=4, do_sample=False, suppress_tokens=[tiny.IMAGE_ID, tiny.VIDEO_ID]
        )
    assert not [r for r in caplog.records if "vision-encoder values unavailable" in r.getMessage()]
    assert out.shape == (2, width + 4)
    last = model.tokpress.last
    real = inputs["attention_mask"].sum(1).tolist()
    assert last.video_tokens == [128, 128] and last.after_outer == [32, 32]
    assert last.seq_tokens[0] == [r - 96 for r in real]
