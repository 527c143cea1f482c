"""Outer policies with ``needs_question`` get each sample's text after its last video, embedded
(``VideoTokens.question``): the engine's rows equal the model's own input embeddings there."""

from __future__ import annotations

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress import registry
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.policies.base import OuterPolicy, Plan, VideoTokens
from tokpress.registry import register_policy

NAME = "record_question_test"


class RecordQuestion(OuterPolicy):
    needs_question = True
    records: list = []

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        RecordQuestion.records.append((video.sample, video.video, video.question.clone()))
        return Plan(torch.arange(budget))


@pytest.fixture(autouse=True)
def record_policy():
    register_policy(NAME, stage="outer")(RecordQuestion)
    yield
    registry._POLICIES.pop(("outer", NAME), None)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision", "qwen3_vl", "internvl"])
def test_question_rows_are_the_text_after_the_last_video(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, outer=NAME, retain_ratio=0.5)
    RecordQuestion.records.clear()
    model(**inputs)
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    placeholder = video_placeholder_id(model.config)
    embed = model.get_input_embeddings()
    assert sorted((b, v) for b, v, _ in RecordQuestion.records)[0] == (0, 0)
    for b, _, question in RecordQuestion.records:
        after = mask[b] & (torch.arange(ids.shape[1]) > (ids[b] == placeholder).nonzero().max())
        assert after.sum() > 0
        torch.testing.assert_close(question, embed(ids[b, after]), rtol=0, atol=0)


def test_policies_without_the_flag_get_none(get_model):
    model = get_model("qwen2_5_vl")
    RecordQuestion.needs_question = False
    try:
        tokpress.apply(model, outer=NAME, retain_ratio=0.5)
        RecordQuestion.records.clear()
        with pytest.raises(AttributeError):  # video.question is None: .clone() fails
            model(**batch_inputs("qwen2_5_vl"))
    finally:
        RecordQuestion.needs_question = True
