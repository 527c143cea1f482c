"""Inputs that used to give a silently wrong result or a misleading error (issue 13, item 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tokpress
from tokpress.errors import InputError
from tokpress.eval.accuracy.data import UNTAGGED, first_answer, local_samples
from tokpress.eval.accuracy.runner import summarize
from tokpress.eval.synth.export import load_annotations
from tokpress.eval.tiny import families as tiny


@pytest.mark.parametrize("ratio", [np.float32(0.25), np.float64(0.25), torch.tensor(0.25), np.array(0.25)])
def test_numpy_and_tensor_ratios_are_numbers(get_model, ratio):
    model = get_model("qwen2_vl")
    tokpress.apply(model, outer="uniform", retain_ratio=ratio)
    assert model.tokpress.config.outer.ratio == 0.25 and type(model.tokpress.config.outer.ratio) is float
    model(**tiny.make_inputs("qwen2_vl"))
    assert model.tokpress.last.after_outer == [16]  # a quarter of 64


@pytest.mark.parametrize("ratio", [torch.tensor([0.2, 0.3]), np.bool_(True), "0.5", float("nan")])
def test_what_is_not_one_ratio_is_still_refused(get_model, ratio):
    with pytest.raises(tokpress.TokpressError, match="must be a number in"):
        tokpress.apply(get_model("qwen2_vl"), outer="uniform", retain_ratio=ratio)


def test_assisted_decoding_is_refused_up_front_and_generate_restored(get_model):
    model = get_model("qwen2_vl")
    inputs = tiny.make_inputs("qwen2_vl")
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    with pytest.raises(InputError, match=r"assisted decoding \(assistant_model\).*tokpress.remove"):
        model.generate(**inputs, assistant_model=model, max_new_tokens=2)
    with pytest.raises(InputError, match="prompt_lookup_num_tokens"):
        model.generate(**inputs, prompt_lookup_num_tokens=2, max_new_tokens=2)
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2
    tokpress.remove(model)
    assert "generate" not in model.__dict__  # the class's generate again


def test_labels_with_video_are_refused_text_only_loss_still_works(get_model):
    model = get_model("qwen2_vl")
    inputs = tiny.make_inputs("qwen2_vl")
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    with pytest.raises(InputError, match="labels"):
        model(**inputs, labels=inputs["input_ids"])
    text = tiny.make_inputs("qwen2_vl", with_video=False)
    assert torch.isfinite(model(**text, labels=text["input_ids"]).loss)


def test_a_malformed_annotation_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "annotations.jsonl"
    path.write_text('{"video": "a.mp4"}\n\n{"video": "b.mp4",\n')
    with pytest.raises(InputError, match=r"annotations.jsonl:3: not a JSON object"):
        load_annotations(tmp_path)
    path.write_text('{"video": "a.mp4"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"annotations.jsonl:2: expected a JSON object, got list"):
        load_annotations(path)


def _annotations(tmp_path, tasks):
    rows = [
        {"video": f"v{i}.mp4", "question": "q", "candidates": ["red", "blue"], "answer_index": 0, **t}
        for i, t in enumerate(tasks)
    ]
    (tmp_path / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_untagged_samples_get_their_own_family_and_all_stays_one_row(tmp_path):
    _annotations(tmp_path, [{"task": "color"}, {}, {"task_type": "count"}])
    samples = local_samples(tmp_path)
    assert [s.task for s in samples] == ["color", UNTAGGED, "count"]
    rows = [
        dict(
            kind="sample",
            model="m",
            method=m,
            ratio=1.0,
            sample_id=s.sample_id,
            task=s.task,
            correct=c,
            chosen=0,
            n_options=2,
        )
        for m in ("none", "uniform")
        for s, c in zip(samples, (1, 0, 1))
    ]
    summary = summarize(rows, n_boot=10)
    pooled = [r for r in summary if r["task"] == "all"]
    assert len(pooled) == 2  # one per method, not one per method and "untagged" sample
    assert {r["task"] for r in summary} == {"color", UNTAGGED, "count", "all"}
    _annotations(tmp_path, [{"task": "all"}])
    with pytest.raises(InputError, match="'all' is reserved"):
        local_samples(tmp_path)


@pytest.mark.parametrize(
    "a,b,same",
    [("red", "Red.\nThe square then", True), ("red, mostly", "red", False), ("blue", "red", False), ("", "", True)],
)
def test_same_answer_compares_the_answer_not_every_token(a, b, same):
    assert (first_answer(a) == first_answer(b)) is same


def test_naming_the_shipped_model_runs_it_on_its_own_synth_videos(monkeypatch, tmp_path):
    """`--model <the shipped folder>` used to switch to a 32-frame generated video; it now runs what the default
    runs (the synth test videos the model was trained on). Another folder still loads as a pretrained model."""
    from tokpress.eval.accuracy.workload import SHIPPED_MODEL
    from tokpress.eval.bench import workloads
    from tokpress.eval.bench.runner import BenchConfig

    monkeypatch.setattr(workloads, "default_workload", lambda config: "default")
    monkeypatch.setattr(workloads, "pretrained_workload", lambda config: "pretrained")
    spelled = f"{SHIPPED_MODEL.parent}/./{SHIPPED_MODEL.name}/"
    assert workloads.make_workload(BenchConfig(model=spelled)) == "default"
    other = tmp_path / "model"
    other.mkdir()
    assert workloads.make_workload(BenchConfig(model=str(other))) == "pretrained"
