"""The command line: one-line errors checked before anything loads, --version / --debug, models, methods, output
when stdout is not a terminal."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

import tokpress
from tokpress import cli
from tokpress.cli import app
from tokpress.errors import ConfigError, InputError
from tokpress.eval import demo, video
from tokpress.eval.accuracy import runner as accuracy
from tokpress.eval.accuracy import workload as eval_workload
from tokpress.eval.accuracy.runner import EvalConfig
from tokpress.eval.bench import archs, workloads
from tokpress.eval.bench.runner import BenchConfig
from tokpress.eval.tiny import families as tiny

LOADERS = [
    (workloads, "default_workload"),
    (workloads, "synth_workload"),
    (workloads, "arch_workload"),
    (workloads, "pretrained_workload"),
    (accuracy, "make_eval_workload"),
    (tiny, "tiny_model"),
    (demo, "tiny_model"),
    (demo, "run_demo"),
    (archs, "random_weight_model"),
    (video, "load_video"),
]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Every model / video loader raises: a test passing with it proves nothing was loaded."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or video was loaded before the arguments were checked")

    for module, name in LOADERS:
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr("transformers.AutoModelForImageTextToText.from_pretrained", forbidden)
    monkeypatch.delenv("TOKPRESS_DEBUG", raising=False)
    cli._state["debug"] = False


@pytest.fixture
def short_video(tmp_path):
    """A 2-frame video file."""
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "two.mp4"
    video.write_video(frames, path, fps=2.0)
    return str(path)


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def assert_one_line_error(result, code: int, *needles: str) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


BAD_BENCH = [
    (["--ratios", "0"], "--ratios"),
    (["--ratios", "1.5"], "--ratios"),
    (["--ratios", "nan"], "--ratios"),
    (["--ratios", "0.5,abc"], "--ratios"),
    (["--ratios", ""], "--ratios"),
    (["--repeats", "0"], "--repeats"),
    (["--batch", "0"], "--batch"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--warmup", "-1"], "--warmup"),
    (["--frames", "0"], "--frames"),
    (["--fps", "0"], "--fps"),
    (["--fps", "inf"], "--fps"),
    (["--frames", "16", "--fps", "2"], "drop --fps"),
    (["--device", "gpu"], "--device"),
    (["--device", "cuda:x"], "--device"),
    (["--dtype", "fp8"], "--dtype"),
    (["--attn", "foo"], "--attn"),
    (["--model", "/nonexistent/checkpoint"], "--model"),
    (["--model", "./nope"], "--model"),
    (["--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--arch", "qwen2.5-vl-7b"], "--arch"),
    (["--methods", ""], "--methods"),
    (["--methods", " , "], "--methods"),
    (["--methods", "fixed"], "Python"),
    (["--methods", "none,fixed+fastv"], "Python"),
    (["--methods", "nope"], "unknown method"),
    (["--arch", "llava-onevision-7b"], "--random-weights"),
    (["--arch", "gpt2", "--random-weights"], "--list-archs"),
    (["--video", "missing.mp4"], "--video"),
    (["--size", "0"], "--size"),
    (["--repeats", "abc"], "--repeats"),
    (["--bogus"], "--bogus"),
    (["--device-map", "balanced"], "--device-map"),
    (["--arch", "qwen2.5-vl-7b", "--random-weights", "--device-map", "auto"], "--device"),
]


@pytest.mark.parametrize("args, needle", BAD_BENCH, ids=[" ".join(a) or "empty" for a, _ in BAD_BENCH])
def test_bench_refuses_bad_arguments_before_loading(args, needle, nothing_loads, tmp_path):
    result = invoke(["bench", *args, "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 2, needle)
    assert not (tmp_path / "out").exists() or needle == "--out"


def test_bench_cuda_device_must_exist(nothing_loads, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert_one_line_error(invoke(["bench", "--device", "cuda", "--out", str(tmp_path)]), 2, "--device", "cpu")


def test_flash_attention_needs_flash_attn(nothing_loads, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    result = invoke(["bench", "--attn", "flash_attention_2", "--out", str(tmp_path)])
    assert_one_line_error(result, 2, "--attn", "flash-attn")


def test_out_folder_is_checked_before_the_run(nothing_loads, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in (["bench"], ["eval", "--model", "tiny"]):
        result = invoke([*command, "--out", str(blocker / "results")])
        assert_one_line_error(result, 2, "--out", "not writable")


def test_out_folder_is_created_and_left_empty(tmp_path, nothing_loads, monkeypatch):
    monkeypatch.setattr(workloads, "make_workload", lambda config: (_ for _ in ()).throw(InputError("stop here")))
    result = invoke(["bench", "--out", str(tmp_path / "new" / "out")])
    assert result.exit_code == 1  # a runtime TokpressError (not an argument error): exit 1
    assert result.output.strip().splitlines() == ["bench: loading the model", "error: stop here"]
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone


def test_video_shorter_than_frames_is_refused(short_video, nothing_loads, tmp_path):
    result = invoke(["bench", "--video", short_video, "--frames", "16", "--out", str(tmp_path)])
    assert_one_line_error(result, 2, "--frames", "only 2 frame")


def test_default_synth_video_frames_are_checked(nothing_loads, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    monkeypatch.setattr(eval_workload, "SHIPPED_MODEL", shipped)
    result = invoke(["bench", "--frames", "100", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 2, "--frames", "16 frames")


def test_video_shorter_than_the_default_is_clamped(short_video, tmp_path, caplog):
    """No --frames: a user's video gives at most 32 frames, all of a shorter one (logged), not an error."""
    config = BenchConfig(video=short_video)
    config.validate()
    with caplog.at_level(logging.WARNING, logger="tokpress"):
        _, decode = workloads._video_frames(config, 16, tmp_path)
    frames, _, _ = decode()
    assert frames.shape[0] == 2
    assert "using all of them" in caplog.text


BAD_EVAL = [
    (["--n", "0"], "--n"),
    (["--n", "-3"], "--n"),
    (["--ratios", "0"], "--ratios"),
    (["--methods", ""], "--methods"),
    (["--methods", "fixed"], "Python"),
    (["--batch", "0"], "--batch"),
    (["--n-boot", "0"], "--n-boot"),
    (["--scoring", "vibes"], "--scoring"),
    (["--answer-format", "emoji"], "--answer-format"),
    (["--frames", "4", "--fps", "1"], "drop --fps"),
    (["--fps", "0"], "--fps"),
    (["--benchmark", "/nonexistent/dataset"], "--benchmark"),
    (["--device", "gpu"], "--device"),
    (["--attn", "foo"], "--attn"),
    (["--model", "/nonexistent/checkpoint"], "--model"),
    (["--model", "tiny", "--device-map", "auto"], "--device-map"),
]


@pytest.mark.parametrize("args, needle", BAD_EVAL, ids=[" ".join(a) for a, _ in BAD_EVAL])
def test_eval_refuses_bad_arguments_before_loading(args, needle, nothing_loads, tmp_path):
    result = invoke(["eval", *args, "--out", str(tmp_path / "out")])
    assert_one_line_error(result, 2, needle)


BAD_DEMO = [
    (["--family", "gpt2"], "--family"),
    (["--ratio", "0"], "--ratio"),
    (["--ratio", "nan"], "--ratio"),
    (["--frames", "0"], "--frames"),
    (["--repeats", "0"], "--repeats"),
    (["--methods", ""], "--methods"),
    (["--methods", "fixed"], "Python"),
]


@pytest.mark.parametrize("args, needle", BAD_DEMO, ids=[" ".join(a) for a, _ in BAD_DEMO])
def test_demo_refuses_bad_arguments_before_loading(args, needle, nothing_loads):
    assert_one_line_error(invoke(["demo", *args]), 2, needle)


def test_top_level_errors_are_one_line(nothing_loads):
    assert_one_line_error(invoke(["--bogus"]), 2, "--bogus")
    assert_one_line_error(invoke(["nosuch"]), 2, "nosuch")


def test_debug_shows_the_traceback(nothing_loads, tmp_path, monkeypatch):
    result = invoke(["--debug", "bench", "--ratios", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output and "ConfigError" in result.output
    monkeypatch.setenv("TOKPRESS_DEBUG", "1")
    result = invoke(["eval", "--n", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback (most recent call last)" in result.output


# ------------------------------------------------------------------------------------ the Python API checks


def test_configs_validate_for_the_python_api():
    with pytest.raises(ConfigError) as err:
        BenchConfig(ratios=(0.5, float("nan"))).validate()
    assert err.value.field == "ratios"
    config = BenchConfig(ratios=(np.float32(0.25), np.float64(0.5)))
    config.validate()
    assert config.ratios == (0.25, 0.5) and all(type(r) is float for r in config.ratios)
    with pytest.raises(ConfigError) as err:
        EvalConfig(n=0).validate()
    assert err.value.field == "n"
    with pytest.raises(ConfigError) as err:
        EvalConfig(frames=8, fps=2.0).validate()
    assert err.value.field == "fps"
    EvalConfig(n=None).validate()  # None: the default 40 synth videos / a whole local dataset


def test_evaluate_checks_the_out_folder_before_loading(nothing_loads, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        accuracy.evaluate(EvalConfig(model="tiny"), blocker / "out")


# ------------------------------------------------------------------------------- --version, models, methods


def test_version():
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tokpress {importlib.metadata.version('tokpress')}"


def test_models_lists_layout_and_tested_versions():
    result = invoke(["models"])
    assert result.exit_code == 0, result.output
    assert set(tokpress.adapter_names()) <= set(cli.MODEL_FAMILIES)  # every family has its row's data
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 4}
    assert set(rows) == set(tokpress.adapter_names())
    assert "M-RoPE" in rows["qwen2_5_vl"] and "5.17.0" in rows["qwen2_5_vl"]
    assert "T·14·14 + 1 newline" in rows["llava_onevision"]


def test_methods_describes_every_method_in_one_line():
    result = invoke(["methods"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output  # not cut to 80 columns when stdout is not a terminal
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 5}
    assert set(rows) == set(tokpress.preset_names())  # one line per method: no wrapped rows
    for name in tokpress.preset_names():
        line = cli._method_line(name)
        assert line == cli.METHOD_LINES[name] and line in rows[name]
        assert "\n" not in line and len(line.split()) >= 5


def test_methods_lists_the_vision_policies():
    from tokpress.policies.vision import vision_policy_names

    result = invoke(["methods"])
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") == 4}
    assert set(rows) == set(vision_policy_names()) == set(cli.VISION_LINES)
    for name, (where, line) in cli.VISION_LINES.items():
        assert where in rows[name] and line in rows[name]


def test_method_line_fallback_for_registered_presets(monkeypatch):
    """A preset added at run time (no METHOD_LINES entry) shows its description, on one line."""
    monkeypatch.delitem(cli.METHOD_LINES, "dycoke")
    line = cli._method_line("dycoke")
    assert line.startswith("DyCoke (CVPR 2025): temporal token merging in 4-frame windows") and "\n" not in line


# ------------------------------------------------------------------------------------ non-terminal output


def test_plain_progress_lines(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    console = cli.Console(file=open("/dev/null", "w"), force_terminal=False)  # noqa: SIM115
    with cli._Progress("bench", 4, console, every=0.0) as progress:
        progress.update("now none @ 1", 0)
        now[0] = 110.0
        progress.update("now fastv @ 0.5", 2)  # 10 s for 2 rows: 10 s to go
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "bench: 0/4 now none @ 1 · 0:00 elapsed · ETA ?",
        "bench: 2/4 now fastv @ 0.5 · 0:10 elapsed · ETA 0:10",
    ]


def test_plain_progress_is_throttled(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(cli.time, "perf_counter", lambda: now[0])
    console = cli.Console(file=open("/dev/null", "w"), force_terminal=False)  # noqa: SIM115
    with cli._Progress("eval", 10, console, every=5.0) as progress:
        for i in range(1, 11):
            now[0] = float(i)
            progress.update(f"batch {i}", i)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["1/10", "6/10", "10/10"]  # first, every 5 s, last


def test_tables_are_not_cut_when_piped():
    assert cli._console().width == cli.PIPE_WIDTH  # pytest's stdout is not a terminal
