"""The lmms-eval plugin: argument handling, the per-call recorder, entry points, and one lmms-eval run end to end.

The recorder tests need no lmms-eval; the others skip with the install command where it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tokpress
from tokpress.config import budget
from tokpress.errors import ConfigError, UnsupportedModelError
from tokpress.eval.tiny import families as tiny
from tokpress.integrations.lmms_eval.manifest import WRAPPERS
from tokpress.integrations.lmms_eval.session import PromptRecorder, check_args, split_args, summarize

SHIPPED = Path(tokpress.__file__).resolve().parents[1] / "eval" / "models" / "tokpress-synth-qwen2.5-vl"
NEEDS_LMMS = "lmms-eval is not installed: pip install -e '.[lmms]'"


def _hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# ------------------------------------------------------------------------------------------------ arguments


def test_split_args_takes_tokpress_keys_and_leaves_the_rest():
    args, rest = split_args(
        {
            "pretrained": "x",
            "device": "cpu",
            "method": "holitom",
            "retain_ratio": 1,  # lmms-eval turns "1" into an int
            "inner_layer": 3,
            "outer_options": '{"seed": 3}',
            "tp_alpha": 0.5,
            "tokpress_log": "/tmp/x.jsonl",
        }
    )
    assert rest == {"pretrained": "x", "device": "cpu"}
    assert args.retain_ratio == 1.0 and isinstance(args.retain_ratio, float)
    assert args.apply_kwargs() == {
        "method": "holitom",
        "retain_ratio": 1.0,
        "inner_layer": 3,
        "outer_options": {"seed": 3},
        "alpha": 0.5,
    }
    assert args.log == "/tmp/x.jsonl" and args.active


def test_split_args_without_tokpress_keys_is_inactive():
    args, rest = split_args({"pretrained": "x"})
    assert not args.active and rest == {"pretrained": "x"} and args.describe() == "uncompressed"


def test_bad_options_json_names_the_format():
    with pytest.raises(ConfigError, match="JSON object"):
        split_args({"inner_options": "alpha=1"})


@pytest.fixture(scope="module")
def qwen_checkpoint(tmp_path_factory) -> str:
    """A config-only checkpoint folder of the tiny Qwen2.5-VL (4 decoder layers): enough for :func:`check_args`."""
    path = tmp_path_factory.mktemp("tiny-qwen")
    tiny.tiny_config("qwen2_5_vl").save_pretrained(path)
    return str(path)


def test_check_args_accepts_a_valid_method(qwen_checkpoint):
    args, _ = split_args({"method": "fastv", "retain_ratio": 0.25})
    check_args(args, qwen_checkpoint, ("qwen2_5_vl",), "tokpress_qwen2_5_vl")


@pytest.mark.parametrize(
    "given, match",
    [
        ({"method": "holitom", "retain_ratio": 1.5}, "in \\(0, 1\\]"),
        ({"method": "nope", "retain_ratio": 0.5}, "unknown method"),
        ({"inner": "fastv", "retain_ratio": 0.5, "inner_layer": 4}, "inner_layer must be"),  # the config has 4
        ({"method": "quota", "retain_ratio": 0.5}, "tokpress eval --benchmark"),  # no per-request frame scores
    ],
)
def test_check_args_refuses_bad_arguments_before_loading(qwen_checkpoint, given, match):
    args, _ = split_args(given)
    with pytest.raises(ConfigError, match=match):
        check_args(args, qwen_checkpoint, ("qwen2_5_vl",), "tokpress_qwen2_5_vl")


def test_check_args_names_the_right_model_id_for_another_family(qwen_checkpoint):
    args, _ = split_args({"method": "fastv", "retain_ratio": 0.5})
    with pytest.raises(UnsupportedModelError, match="use --model tokpress_qwen2_5_vl"):
        check_args(args, qwen_checkpoint, ("qwen3_vl", "qwen3_vl_moe"), "tokpress_qwen3_vl")


def test_model_ids_are_distinct_and_prefixed():
    ids = [w.model_id for w in WRAPPERS]
    assert len(set(ids)) == len(ids) and all(i.startswith("tokpress_") for i in ids)
    families = [f for w in WRAPPERS for f in w.families]
    assert len(set(families)) == len(families)  # one wrapper per family


# ------------------------------------------------------------------------------------------------ recorder


@pytest.fixture(scope="module")
def model_and_inputs():
    model = tiny.tiny_model("qwen2_5_vl")
    prompts = [(5, 7), (3, 2)]
    inputs = tiny.make_inputs("qwen2_5_vl", prompts)
    return model, inputs


def test_recorder_counts_the_promised_tokens_and_removes_everything(model_and_inputs):
    model, inputs = model_and_inputs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    with torch.no_grad():
        ref = model(**inputs).logits
    args, _ = split_args({"outer": "uniform", "retain_ratio": 0.25})
    with PromptRecorder(model, args) as rec, torch.no_grad():
        model.generate(**inputs, max_new_tokens=3, do_sample=False)
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    n_video = tiny.video_token_count("qwen2_5_vl", tiny.VideoSpec())
    assert [(r["prompt"], r["sample"]) for r in rec.records] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # prefills only
    for r in rec.records:
        assert r["video_tokens"] == n_video and r["after_outer"] == budget(0.25, n_video)
        assert len(r["tokens_per_layer"]) == model.config.text_config.num_hidden_layers
        assert r["ttft_s"] >= r["prefill_s"] > 0 and r["vision_s"] > 0
    assert not hasattr(model, "tokpress") and _hooks(model) == hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref)
    summary = summarize(rec.records)
    assert summary["tokpress_video_tokens_after_outer"] == budget(0.25, n_video)
    assert summary["tokpress_samples"] == 4


def test_recorder_restores_a_patch_that_was_there_before(model_and_inputs):
    model, inputs = model_and_inputs
    tokpress.apply(model, outer="uniform", retain_ratio=0.5)
    try:
        args, _ = split_args({"outer": "evs", "retain_ratio": 0.25})
        with PromptRecorder(model, args), torch.no_grad():
            model(**inputs)
        assert model.tokpress.config.outer.policy == "uniform"
    finally:
        tokpress.remove(model)


def test_inactive_recorder_leaves_the_model_alone(model_and_inputs, tmp_path):
    model, inputs = model_and_inputs
    hooks = _hooks(model)
    args, _ = split_args({"tokpress_log": str(tmp_path / "log.jsonl")})
    with PromptRecorder(model, args) as rec, torch.no_grad():
        assert _hooks(model) == hooks and not hasattr(model, "tokpress")
        model(**inputs)
    assert rec.records == [] and not (tmp_path / "log.jsonl").exists()


# ------------------------------------------------------------------------------------------------ lmms-eval


def test_every_entry_point_resolves_to_a_subclass_of_lmms_evals_wrapper():
    pytest.importorskip("lmms_eval", reason=NEEDS_LMMS)
    import importlib

    from lmms_eval.models import get_model

    for spec in WRAPPERS:
        cls = get_model(spec.model_id)
        module, name = spec.base.split(":")
        base = getattr(importlib.import_module(module), name)
        assert issubclass(cls, base) and cls is not base
        assert cls.is_simple == (not spec.chat)
        assert callable(cls.generate_until)


@pytest.mark.slow
def test_lmms_eval_run_end_to_end(tmp_path):
    """``python -m lmms_eval`` on a local task of 4 synth videos with the shipped model, HoliTom at 0.25."""
    pytest.importorskip("lmms_eval", reason=NEEDS_LMMS)
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("the shipped synth model is not installed")
    from tokpress.integrations.lmms_eval.synth_task import TASK, write_task

    task_dir = write_task(tmp_path / "task", n=4)
    out, log = tmp_path / "out", tmp_path / "tokpress.jsonl"
    model_args = (
        f"pretrained={SHIPPED},device=cpu,device_map=cpu,max_pixels=12544,min_pixels=3136,max_num_frames=16,"
        f"method=holitom,retain_ratio=0.25,tokpress_log={log}"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "lmms_eval", "--model", "tokpress_qwen2_5_vl", "--model_args", model_args]
    command += ["--tasks", TASK, "--include_path", str(task_dir), "--output_path", str(out), "--log_samples"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(next(out.rglob("*_results.json")).read_text())
    accuracy = results["results"][TASK]["accuracy,none"]
    assert 0.0 <= accuracy <= 1.0
    throughput = results["throughput"]
    assert throughput["avg_tokpress_video_tokens"] == 128  # 16 frames of 112 x 112
    assert throughput["avg_tokpress_video_tokens_after_outer"] == budget(0.25, 128)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 4 and all(r["config"] == "method=holitom, retain_ratio=0.25" for r in records)
    samples = [json.loads(line) for line in next(out.rglob(f"*_samples_{TASK}.jsonl")).read_text().splitlines()]
    assert len(samples) == 4
