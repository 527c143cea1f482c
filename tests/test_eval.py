"""``tokpress eval`` on the built-in tiny random-weight Qwen2.5-VL: the records are complete and consistent, the
uncompressed reference agrees with itself, the option scores are the log-likelihoods of a plain full forward (also
under compression, against a replay of the same selection), batching changes nothing, the files and plots are
written, the command line runs, a local exported dataset is read through the video decoder. Accuracy levels are
never asserted: the weights are random."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tokpress
from tokpress.cli import app
from tokpress.config import budget
from tokpress.errors import ConfigError
from tokpress.eval.accuracy import workload as eval_workload
from tokpress.eval.accuracy.data import chat_prompt, format_prompt, local_samples, match_answer, synth_samples
from tokpress.eval.accuracy.figures import PLOT_FILES, pareto_front
from tokpress.eval.accuracy.report import write_eval_report
from tokpress.eval.accuracy.runner import RANDOM_WEIGHTS_NOTE, EvalConfig, eval_plan, make_eval_workload, run_eval
from tokpress.eval.accuracy.scoring import option_logprobs, prepare, score_options, stack_rows
from tokpress.eval.accuracy.stats import agreement, bootstrap_ci, mcnemar
from tokpress.eval.synth.export import export_split, load_annotations
from tokpress.eval.synth.tasks import make_split

PNG = b"\x89PNG\r\n\x1a\n"
N_BOOT = 200


@pytest.fixture(scope="module")
def work():
    return make_eval_workload(EvalConfig(model="tiny"))


@pytest.fixture(scope="module")
def run(work):
    config = EvalConfig(model="tiny", methods=("uniform", "fastv"), ratios=(0.25,), n=5, n_boot=N_BOOT, warmup=False)
    with torch.no_grad():
        return config, run_eval(config, work)


def _samples(records):
    return [r for r in records if r["kind"] == "sample"]


def _summaries(records, task="all"):
    return {(r["method"], r["ratio"]): r for r in records if r["kind"] == "summary" and r["task"] == task}


def test_records_are_complete(run):
    config, records = run
    samples = _samples(records)
    plan = eval_plan(config)
    assert plan == [("none", 1.0), ("uniform", 0.25), ("fastv", 0.25)]
    assert len(samples) == len(plan) * 5
    assert {(r["method"], r["ratio"]) for r in samples} == set(plan)
    ids = {r["sample_id"] for r in samples}
    assert len(ids) == 5 and all(sum(r["sample_id"] == i for r in samples) == len(plan) for i in ids)
    for r in samples:
        assert r["video_tokens"] == 128 and r["ttft_ms"] > 0 and r["flops_fastv"] > 0
        assert len(r["scores"]) == len(r["logprobs"]) == len(r["option_tokens"]) == r["n_options"] == 4
        assert r["reference"] is not None and r["agree"] is not None and r["rows_consistent"] is True
        assert len(r["tokens_per_layer"]) == 4
    summaries = [r for r in records if r["kind"] == "summary"]
    assert records[: len(summaries)] == summaries  # summaries first
    assert len(summaries) == len(plan) * 6  # five task families + "all"
    for r in _summaries(records).values():
        assert r["n"] == 5 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["chance"] == 0.25
        assert r["mcnemar_test"] == "exact" and 0 <= r["mcnemar_p"] <= 1 and 0 <= r["agreement"] <= 1


def test_uncompressed_reference_agrees_with_itself(run):
    _, records = run
    for task, by_run in ((t, _summaries(records, t)) for t in ("all", "needle", "position")):
        none = by_run[("none", 1.0)]
        assert none["agreement"] == 1.0, task
        assert (none["mcnemar_b01"], none["mcnemar_b10"], none["mcnemar_p"]) == (0, 0, 1.0)
        assert none["delta"] == 0.0 and none["flops_fraction"] == 1.0 and none["speedup"] == 1.0
    assert all(r["agree"] and r["reference"] == r["chosen"] for r in _samples(records) if r["method"] == "none")


def test_the_choice_is_the_argmax_of_the_computed_log_likelihoods(run):
    _, records = run
    samples = _samples(records)
    reference = {r["sample_id"]: r["chosen"] for r in samples if r["method"] == "none"}
    for r in samples:
        expected = [lp / t for lp, t in zip(r["logprobs"], r["option_tokens"])]  # mean per-token rule
        assert r["scores"] == pytest.approx(expected)
        assert r["chosen"] == int(np.argmax(r["scores"]))
        assert r["correct"] == (r["chosen"] == r["answer"])
        assert r["reference"] == reference[r["sample_id"]] and r["agree"] == (r["chosen"] == r["reference"])
        assert all(lp < 0 for lp in r["logprobs"])


def test_summaries_match_the_statistics_functions(run):
    _, records = run
    samples = _samples(records)
    none = {r["sample_id"]: r for r in samples if r["method"] == "none"}
    for (method, _), summary in _summaries(records).items():
        rows = [r for r in samples if r["method"] == method]
        correct = np.array([r["correct"] for r in rows], float)
        base = np.array([none[r["sample_id"]]["correct"] for r in rows], float)
        assert summary["accuracy"] == correct.mean() and summary["correct"] == correct.sum()
        assert (summary["ci_low"], summary["ci_high"]) == bootstrap_ci(correct, n_boot=N_BOOT, seed=0)
        b01, b10, _, p = mcnemar(base, correct)
        assert (summary["mcnemar_b01"], summary["mcnemar_b10"], summary["mcnemar_p"]) == (b01, b10, p)
        assert summary["agreement"] == agreement(
            [r["chosen"] for r in rows], [none[r["sample_id"]]["chosen"] for r in rows]
        )
        assert summary["delta"] == pytest.approx(correct.mean() - base.mean())
        tasks = {r["task"] for r in rows}
        per_task = [_summaries(records, t)[(method, summary["ratio"])]["accuracy"] for t in tasks]
        assert summary["accuracy_macro"] == pytest.approx(np.mean(per_task))
    uniform, fastv = _summaries(records)[("uniform", 0.25)], _summaries(records)[("fastv", 0.25)]
    assert uniform["into_llm"] == budget(0.25, 128) and fastv["into_llm"] == 128
    assert uniform["flops_fraction"] < 1 and fastv["flops_fraction"] < 1
    fastv_rows = [r for r in samples if r["method"] == "fastv"]
    assert all(r["tokens_per_layer"][-1] < r["tokens_per_layer"][0] for r in fastv_rows)


def _full_forward_logprobs(model, prepared):
    """Reference: each option appended to the prompt and run through one plain forward, no cache."""
    inputs, out = prepared.inputs, []
    for option in prepared.options:
        ids = torch.tensor([option])
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], ids], 1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ids)], 1)
        logp = torch.log_softmax(model(**full, use_cache=False).logits[0].float(), -1)
        start = logp.shape[0] - len(option) - 1  # compressed forwards return fewer positions; the text tail stays
        out.append(sum(float(logp[start + j, t]) for j, t in enumerate(option)))
    return out


def _replay(model, last):
    """The selection of ``last`` as fixed policies (no selection work, same tokens kept)."""
    cfg, kwargs = model.tokpress.config, {}
    if cfg.outer:
        kwargs.update(outer="fixed", outer_ratio=cfg.outer.ratio, outer_options={"keep": [last.kept["outer"][0]]})
    if cfg.inner:
        kwargs.update(
            inner="fixed",
            inner_layer=cfg.inner[0].layer,
            inner_ratio=cfg.inner[0].ratio,
            inner_options={"keep": [last.kept["inner0"][0]]},
        )
    tokpress.apply(model, **kwargs)


@pytest.mark.parametrize("method", [None, "uniform", "fastv"])
def test_option_scores_are_the_full_sequence_log_likelihoods(work, method):
    model, processor = work.model, work.processor
    prepared = prepare(model, processor, synth_samples(2)[1])
    if method:
        tokpress.apply(model, method, retain_ratio=0.25)
    (scored,), stats = option_logprobs(model, [prepared], pad_id=0)
    assert [t for _, t in scored] == [len(o) for o in prepared.options]
    if method:  # every option row selected the same tokens; the reference replays that selection
        assert all(row == stats.tokens_per_layer[0] for row in stats.tokens_per_layer)
        _replay(model, stats)
    try:
        expected = _full_forward_logprobs(model, prepared)
    finally:
        tokpress.remove(model)
    assert [lp for lp, _ in scored] == pytest.approx(expected, abs=1e-4)
    if method is None:  # the one-sample API applies the rule to the same numbers
        result = score_options(model, processor, synth_samples(2)[1], normalize="sum")
        assert result.logprobs == pytest.approx(expected, abs=1e-4) and result.scores == result.logprobs
        assert result.chosen == int(np.argmax(expected)) and result.tokens == [len(o) for o in prepared.options]


@pytest.mark.parametrize("method", ["holitom", "dycoke"])
def test_batched_scoring_equals_one_sample_at_a_time(work, method):
    model, processor = work.model, work.processor
    prepared = [prepare(model, processor, s) for s in synth_samples(3)]
    assert len({p.inputs["input_ids"].shape[1] for p in prepared}) > 1  # ragged: left padding is exercised
    tokpress.apply(model, method, retain_ratio=0.25)
    try:
        alone = [option_logprobs(model, [p], 0)[0][0] for p in prepared]
        together, _ = option_logprobs(model, prepared, 0)
    finally:
        tokpress.remove(model)
    for a, b in zip(alone, together):
        assert [lp for lp, _ in a] == pytest.approx([lp for lp, _ in b], abs=1e-4)


def test_stacked_rows_equal_the_processors_left_padded_batch(work):
    model, processor = work.model, work.processor
    samples = synth_samples(2)
    prepared = [prepare(model, processor, s) for s in samples]
    texts = [chat_prompt(processor, format_prompt(s.question, s.options)) for s in samples]
    assert processor.tokenizer.padding_side == "left"
    from tokpress.eval.video import video_metadata_kwargs

    meta = video_metadata_kwargs(processor, len(samples[0].frames), samples[0].fps, copies=len(samples))
    batch = processor(text=texts, videos=[s.frames for s in samples], padding=True, return_tensors="pt", **meta)
    stacked = stack_rows([p.inputs for p in prepared], [1, 1], processor.tokenizer.pad_token_id)
    assert set(stacked) == {k for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for key, value in stacked.items():
        torch.testing.assert_close(value, batch[key].to(value.dtype), rtol=0, atol=0)
    repeated = stack_rows([prepared[0].inputs], [4], 0)
    assert repeated["input_ids"].shape[0] == 4 and repeated["video_grid_thw"].shape[0] == 4
    assert repeated["pixel_values_videos"].shape[0] == 4 * prepared[0].inputs["pixel_values_videos"].shape[0]


def test_report_files_and_plots(run, work, tmp_path):
    config, records = run
    paths = write_eval_report(records, work.environment, tmp_path, notes=[RANDOM_WEIGHTS_NOTE], config=config)
    assert {"results.json", "results.csv", "samples.csv", "report.md", *PLOT_FILES} <= {p.name for p in paths.values()}
    for name in PLOT_FILES:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    payload = json.loads((tmp_path / "results.json").read_text())
    assert len(payload["samples"]) == 15 and len(payload["summary"]) == 18
    assert payload["config"]["methods"] == ["uniform", "fastv"] and payload["notes"] == [RANDOM_WEIGHTS_NOTE]
    assert len((tmp_path / "results.csv").read_text().strip().splitlines()) == 1 + 18
    assert len((tmp_path / "samples.csv").read_text().strip().splitlines()) == 1 + 15
    report = (tmp_path / "report.md").read_text()
    assert "RANDOM weights" in report and "McNemar" in report and "| fastv | 0.25 |" in report
    assert "## By task family" in report and "| needle | uncompressed |" in report
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| method | retained | mean of tasks | all [95 % CI] |")
    rows = [line.split(" | ") for line in table[2:]]
    assert [r[0].strip("| ") for r in rows] == ["uncompressed", "uniform", "fastv"]
    assert [r[1] for r in rows] == ["1.00", "0.25", "0.25"]
    per_task = {(r["method"], r["ratio"], r["task"]): r["accuracy"] for r in payload["summary"]}
    tasks = table[0].strip("| ").split(" | ")[4:]
    assert len(tasks) == 5
    for task, cell in zip(tasks, rows[2][4:]):
        assert float(cell.strip("| ")) == pytest.approx(100 * per_task[("fastv", 0.25, task)], abs=0.05)


def test_pareto_front():
    points = [(1.0, 0.8), (0.5, 0.7), (0.25, 0.4), (0.5, 0.6), (0.3, 0.3), (0.9, 0.75)]
    assert pareto_front(points) == [2, 1, 5, 0]


def test_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(eval_workload, "SHIPPED_MODEL", tmp_path / "not-shipped")  # no --model: the built-in fallback
    out = tmp_path / "out"
    args = ["eval", "--methods", "none,uniform", "--ratios", "0.5", "--n", "2", "--n-boot", "50", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in payload["summary"] if r["task"] == "all"] == ["none", "uniform"]
    assert "RANDOM weights" in (out / "report.md").read_text()
    assert all((out / name).read_bytes()[:8] == PNG for name in PLOT_FILES)


def test_command_line_rejects_bad_options(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--model", "tiny", "--methods", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: --methods: unknown method")
    result = CliRunner().invoke(app, ["eval", "--model", "tiny", "--scoring", "vibes", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: --scoring:")


def test_local_dataset_is_read_through_the_video_decoder(work, tmp_path):
    folder = tmp_path / "synth-test"
    export_split(make_split("test", 3), folder)
    annotations = load_annotations(folder)
    config = EvalConfig(benchmark=str(folder), methods=("uniform",), ratios=(0.5,), n=None, n_boot=N_BOOT)
    records = run_eval(config, work)
    samples = _samples(records)
    assert [r["sample_id"] for r in samples if r["method"] == "none"] == [a["question_id"] for a in annotations]
    assert [r["answer"] for r in samples if r["method"] == "none"] == [a["answer_index"] for a in annotations]
    assert all(r["decode_ms"] > 0 and r["video_tokens"] == 128 for r in samples)
    assert {r["into_llm"] for r in samples if r["method"] == "uniform"} == {budget(0.5, 128)}
    assert _summaries(records)[("none", 1.0)]["agreement"] == 1.0


def test_local_dataset_in_video_mme_style(tmp_path):
    (tmp_path / "annotations.jsonl").write_text(
        json.dumps(
            {
                "video": "a.mp4",
                "question": "Q?",
                "options": ["A. red", "B. blue", "C. up"],
                "answer": "B",
                "task_type": "colour",
                "videoID": "a",
            }
        )
        + "\n"
        + json.dumps({"video": "/abs/b.mp4", "question": "Q2?", "candidates": ["x", "y"], "answer": "y"})
        + "\n"
    )
    first, second = local_samples(tmp_path)
    assert first.options == ["red", "blue", "up"] and first.answer == 1 and first.task == "colour"
    assert first.video == str(tmp_path / "a.mp4")
    assert second.options == ["x", "y"] and second.answer == 1 and second.video == "/abs/b.mp4"
    assert len(local_samples(tmp_path, n=1)) == 1


def test_generation_scoring_and_letters(work):
    config = EvalConfig(
        methods=("fastv",),
        ratios=(0.5,),
        n=2,
        scoring="generate",
        answer_format="letter",
        max_new_tokens=3,
        n_boot=N_BOOT,
    )
    records = run_eval(config, work)
    samples = _samples(records)
    assert len(samples) == 4 and all(isinstance(r["generated"], str) and -1 <= r["chosen"] < 4 for r in samples)
    assert _summaries(records)[("none", 1.0)]["agreement"] == 1.0
    letters = run_eval(EvalConfig(methods=("none",), ratios=(0.5,), n=1, answer_format="letter", n_boot=N_BOOT), work)
    assert _samples(letters)[0]["option_tokens"] == [1, 1, 1, 1]  # "A".."D", no end token


def test_match_answer_and_prompts():
    options = ["red", "top-left", "two", "blue"]
    assert match_answer("top-left", options) == 1
    assert match_answer(" Blue.", options) == 3
    assert match_answer("It is red, not blue", options) == 0
    assert match_answer("purple", options) == -1
    assert match_answer("B", options, "letter") == 1 and match_answer("(C) two", options, "letter") == 2
    assert match_answer("Banana", options, "letter") == -1 and match_answer("E.", options, "letter") == -1
    assert "Options: red, top-left, two, blue." in format_prompt("Q?", options)
    assert "A. red\nB. top-left" in format_prompt("Q?", options, "letter")
    assert format_prompt("Q?", options, template="{question}|{options}") == "Q?|red, top-left, two, blue"


def test_config_validation():
    for bad in (dict(answer_format="emoji"), dict(normalize="max"), dict(batch=0), dict(ratios=(1.5,)), dict(n=0)):
        with pytest.raises(ConfigError):
            EvalConfig(**bad).validate()
    assert eval_plan(EvalConfig(methods=("fastv",), ratios=(0.5, 0.1)))[0] == ("none", 1.0)


def test_video_metadata_sets_the_temporal_spacing(work, tmp_path):
    """Synth frames carry their 2 fps to Qwen2.5-VL's processor (1 s per temporal grid), decoded files their own
    rate; processors without ``second_per_grid_ts`` get nothing; no frame rate, nothing."""
    from tokpress.eval.synth.tasks import SYNTH_FPS
    from tokpress.eval.tiny.processor import tiny_processor
    from tokpress.eval.video import video_metadata_kwargs

    sample = synth_samples(1)[0]
    assert sample.fps == SYNTH_FPS
    spg = prepare(work.model, work.processor, sample).inputs["second_per_grid_ts"]
    assert spg.tolist() == [pytest.approx(2 / SYNTH_FPS)]  # temporal patch of 2 frames at 2 fps
    meta = video_metadata_kwargs(work.processor, 16, 4.0, copies=3)["video_metadata"]
    assert len(meta) == 3 and meta[0].fps == 4.0 and meta[0].total_num_frames == 16
    assert video_metadata_kwargs(tiny_processor("llava_onevision"), 16, 2.0) == {}
    assert video_metadata_kwargs(work.processor, 16, None) == {}
    export_split(make_split("test", 1), tmp_path, fps=4)
    (local,) = local_samples(tmp_path)
    assert prepare(work.model, work.processor, local).inputs["second_per_grid_ts"].tolist() == [pytest.approx(0.5)]
