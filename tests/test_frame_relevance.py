"""QuoTA's frame scorer (``tokpress.score_frames``) and its per-request hand-off to ``framebudget`` (``quota``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tokpress
from tokpress.errors import ConfigError, InputError
from tokpress.eval.accuracy.data import format_prompt, synth_samples
from tokpress.eval.accuracy.workload import SHIPPED_MODEL
from tokpress.eval.tiny.families import tiny_model
from tokpress.eval.tiny.processor import tiny_processor
from tokpress.frame_relevance import parse_entities, relevance_prompt, uncompressed
from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.framebudget import FrameBudgetConfig, FrameBudgetPolicy, capped_weights, integer_budgets


@pytest.fixture(scope="module")
def synth():
    pytest.MonkeyPatch().setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(SHIPPED_MODEL, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(SHIPPED_MODEL, local_files_only=True)
    sample = synth_samples(5)[4]  # a "position" question: the frames where the square has the colour matter
    return model, processor, sample


def _options_scores(model, processor, sample, **kwargs) -> torch.Tensor:
    prompt = format_prompt(sample.question, sample.options)
    return tokpress.score_frames(
        model, processor, sample.frames, sample.question, readout="options", options=sample.options, prompt=prompt,
        fps=2.0, **kwargs,
    )  # fmt: skip


def _inputs(processor, text: str, clips: list[np.ndarray], fps: float | None = None) -> dict:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    extra = {}
    if fps is not None:
        from transformers.video_utils import VideoMetadata

        extra["video_metadata"] = [VideoMetadata(total_num_frames=len(c), fps=fps) for c in clips]
    return dict(
        processor(text=[prompt] * len(clips), videos=clips, return_tensors="pt", do_sample_frames=False, **extra)
    )


@torch.no_grad()
def test_options_readout_matches_a_hand_computation_per_temporal_patch(synth):
    model, processor, sample = synth
    scores = _options_scores(model, processor, sample)
    assert scores.shape == (8,)  # 16 frames, temporal patches of 2: one score per grid frame
    assert bool(((scores >= 0) & (scores <= 1)).all())
    # frame 3 of the grid is video frames 6 and 7, alone, with the task prompt; the largest probability (softmax
    # over the whole vocabulary of the last position's logits) among the options' first tokens
    inputs = _inputs(processor, format_prompt(sample.question, sample.options), [sample.frames[6:8]], fps=2.0)
    probs = torch.softmax(model(**inputs).logits[0, -1].float(), -1)
    ids = [processor.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in sample.options]
    assert float(scores[3]) == pytest.approx(float(probs[ids].max()), abs=1e-5)


@torch.no_grad()
def test_batched_scores_equal_one_frame_at_a_time(synth):
    model, processor, sample = synth
    together = _options_scores(model, processor, sample)
    alone = _options_scores(model, processor, sample, batch_size=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@torch.no_grad()
def test_yes_readout_on_a_tiny_llava_onevision_reads_the_letter_a():
    model, processor = tiny_model("llava_onevision"), tiny_processor("llava_onevision")
    frames = _noise_frames(3)
    scores = tokpress.score_frames(model, processor, frames, "Where is the square?", entities=["square"])
    assert scores.shape == (3,)  # LLaVA-OneVision: one grid frame per video frame
    inputs = _inputs(processor, relevance_prompt("", ["square"]), [frames[1:2]])
    probs = torch.softmax(model(**inputs).logits[0, -1].float(), -1)
    a = processor.tokenizer("A", add_special_tokens=False)["input_ids"][0]
    assert float(scores[1]) == pytest.approx(float(probs[a]), abs=1e-6)


def _noise_frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(n, 56, 56, 3), dtype=np.uint8)


@torch.no_grad()
def test_the_prepass_leaves_a_patched_model_as_it_was(synth):
    model, processor, sample = synth
    plain = _options_scores(model, processor, sample)
    tokpress.apply(model, "quota", retain_ratio=0.25)
    try:
        engine = model.tokpress
        inputs = _inputs(processor, format_prompt(sample.question, sample.options), [sample.frames], fps=2.0)
        with tokpress.frame_scores(model, plain):
            before = model(**inputs).logits
        last, handles, config = engine.last, len(engine._handles), engine.config
        scores = _options_scores(model, processor, sample)  # with the hooks off: the uncompressed model's scores
        torch.testing.assert_close(scores, plain, atol=0, rtol=0)
        assert model.tokpress is engine and engine.last is last and engine.config is config
        assert len(engine._handles) == handles and engine.outer.request_scores is None
        with tokpress.frame_scores(model, plain):
            after = model(**inputs).logits
        torch.testing.assert_close(after, before, atol=0, rtol=0)
        assert engine.last.after_outer == [32]
    finally:
        tokpress.remove(model)


@torch.no_grad()
def test_quota_budgets_frames_by_the_squared_probabilities(synth):
    model, processor, sample = synth
    scores = _options_scores(model, processor, sample)
    inputs = _inputs(processor, format_prompt(sample.question, sample.options), [sample.frames], fps=2.0)
    with tokpress.compressed(model, "quota", retain_ratio=0.25), tokpress.frame_scores(model, scores):
        model(**inputs)
        kept = torch.tensor(model.tokpress.last.kept["outer"][0][0])
    per_frame = torch.bincount(kept // 16, minlength=8)  # 8 grid frames of 4x4 tokens
    caps = torch.full((8,), 16)
    expected = integer_budgets(capped_weights(scores.double() ** 2, caps, 32), caps, 32)
    assert per_frame.tolist() == expected.tolist() and int(per_frame.sum()) == 32


def test_lvlm_weights_are_quota_squares_capped_at_a_frame():
    # p = (0.5, 1, 0, 0): weights 0.25 : 1 -> shares 1.2, 4.8 of 6; frame 1 is capped at its 4 tokens and its
    # excess 0.8 goes to frame 0, the only other frame with weight -> budgets (2, 4, 0, 0)
    policy = FrameBudgetPolicy(FrameBudgetConfig(scorer="lvlm"))
    policy.request_scores = [[torch.tensor([0.5, 1.0, 0.0, 0.0])]]
    video = VideoTokens(torch.randn(16, 8), Grid(4, 2, 2))
    assert policy.frame_budgets(video, 6).tolist() == [2, 4, 0, 0]
    policy.request_scores = [[torch.zeros(4)]]  # nothing relevant: an even spread
    assert policy.frame_budgets(video, 6).tolist() == [2, 2, 1, 1]


def test_quota_without_scores_and_frame_scores_without_framebudget_are_refused(synth):
    model, processor, sample = synth
    inputs = _inputs(processor, format_prompt(sample.question, sample.options), [sample.frames], fps=2.0)
    with pytest.raises(ConfigError, match="framebudget"):
        with tokpress.frame_scores(model, torch.ones(8)):
            pass
    with tokpress.compressed(model, "quota", retain_ratio=0.5):
        with pytest.raises(InputError, match="tokpress.frame_scores"):
            model(**inputs)
        with pytest.raises(InputError, match="7 scores for 8 frames"), tokpress.frame_scores(model, torch.ones(7)):
            model(**inputs)


def test_uncompressed_is_a_no_op_on_an_unpatched_model():
    model = tiny_model("qwen2_vl")
    with uncompressed(model) as inside:
        assert inside is model and "tokpress" not in model.__dict__


@pytest.mark.parametrize(
    "text, entities",
    [
        ('Step 1: yes\nStep 2: ["man", "bed", "video"]\nStep 3: ["man", "bed"]', ["man", "bed"]),
        ("step 1: Yes\nstep 3: ['red cups']", ["red cups"]),
        ("Step 1: no", []),
        ("Step 1: yes\nStep 3: null", []),
        ("Step 1: yes\nStep 3: [broken", []),
        ("no steps at all", []),
    ],
)
def test_parse_entities(text, entities):
    assert parse_entities(text) == entities


def test_relevance_prompt_names_the_entities_or_falls_back_to_the_question():
    assert "man, bed" in relevance_prompt("What is the man doing?", ["man", "bed"])
    assert relevance_prompt("What is the man doing?", []).startswith("What is the man doing?\n")
