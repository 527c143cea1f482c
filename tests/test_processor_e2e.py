"""End to end through the real Hugging Face processors: RGB frames -> processor -> tiny model -> tokpress.

The processors are the actual ``transformers`` classes built offline by :func:`tokpress.eval.tiny.processor`, so
the token layout, pixel packing, ``mm_token_type_ids`` and ``second_per_grid_ts`` are whatever the installed
``transformers`` produces, not the hand-made layout of :func:`tokpress.eval.tiny.families.make_inputs`.
"""

from __future__ import annotations

import pytest
import torch

import tokpress
from tokpress.eval.tiny.families import (
    FAMILIES,
    VIDEO_ID,
    VideoSpec,
    moving_square_video,
    tiny_model,
    video_token_count,
)
from tokpress.eval.tiny.processor import tiny_processor

SPEC = VideoSpec(frames=8, height=112, width=112)
RATIO = 0.25


def grid_tokens(family: str, video_tokens: int) -> int:
    """Compressible video tokens: LLaVA-OneVision's trailing newline is protected."""
    return video_tokens - 1 if family == "llava_onevision" else video_tokens


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    family = request.param
    processor = tiny_processor(family)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves? Answer:"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert isinstance(prompt, str) and processor.video_token in prompt
    inputs = processor(text=[prompt], videos=[moving_square_video(SPEC)], return_tensors="pt")
    model = tiny_model(family)
    yield family, processor, model, inputs
    tokpress.remove(model)


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_processor_layout(case):
    family, processor, _, inputs = case
    n_video = int((inputs["input_ids"] == VIDEO_ID).sum())
    assert processor.video_token_id == VIDEO_ID
    assert n_video == video_token_count(family, SPEC)
    assert int(inputs["input_ids"].max()) < 256
    if family == "llava_onevision":
        assert tuple(inputs["pixel_values_videos"].shape) == (1, SPEC.frames, 3, 56, 56)
    else:
        assert inputs["video_grid_thw"].tolist() == [[SPEC.frames // 2, SPEC.height // 14, SPEC.width // 14]]
        assert tuple(inputs["pixel_values_videos"].shape) == (n_video * 4, 3 * 2 * 14 * 14)
        assert int((inputs["mm_token_type_ids"] == 2).sum()) == n_video


def test_processor_e2e(case):
    family, processor, model, inputs = case
    n_video = int((inputs["input_ids"] == VIDEO_ID).sum())
    tokpress.remove(model)
    base = _logits(model, inputs)

    # (a) keeping every token is exactly the unpatched model
    tokpress.apply(model, outer="uniform", retain_ratio=1.0)
    assert torch.equal(_logits(model, inputs), base)
    assert model.tokpress.last.video_tokens == model.tokpress.last.after_outer == [n_video]

    # (b) real compression through generate
    tokpress.apply(model, outer="evs", inner="fastv", retain_ratio=RATIO)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert isinstance(processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])[0], str)
    last = model.tokpress.last
    assert last.video_tokens[0] == n_video
    protected = n_video - grid_tokens(family, n_video)
    assert last.after_outer[0] == round(RATIO * grid_tokens(family, n_video)) + protected
    assert last.after_inner and last.after_inner[0][0] < last.after_outer[0]

    # (c) removing restores the model exactly
    tokpress.remove(model)
    assert not hasattr(model, "tokpress")
    assert torch.equal(_logits(model, inputs), base)
