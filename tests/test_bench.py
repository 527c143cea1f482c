"""``tokpress bench`` on the embedded default: every file is written, token counts follow the ratios, the oracle
rows are there, the plots are valid PNGs — through the Python API and the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tokpress.cli import app
from tokpress.config import budget
from tokpress.eval.bench.report import write_report
from tokpress.eval.bench.runner import BenchConfig, bench_plan, run_bench
from tokpress.eval.bench.workloads import make_workload

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def records():
    config = BenchConfig(
        methods=("none", "uniform", "fastv", "holitom"), ratios=(0.5, 0.25), repeats=1, warmup=0, max_new_tokens=3
    )
    work = make_workload(config)
    return config, work, run_bench(config, work)


def test_rows_follow_the_plan(records):
    config, _, got = records
    assert [(r["method"], r["ratio"]) for r in got] == bench_plan(config)
    assert bench_plan(config)[:2] == [("none", 1.0), ("oracle", 0.5)]


def test_token_counts_follow_the_ratios(records):
    _, _, got = records
    none = got[0]
    n = none["video_tokens"]
    assert none["into_llm"] == n and none["same_answer"] is True
    for r in got[1:]:
        if r["method"] in ("oracle", "uniform", "holitom"):
            assert r["into_llm"] == budget(r["ratio"], n), r["method"]
        else:  # inner-only: everything enters, fewer pass layer K
            assert r["into_llm"] == n and r["tokens_per_layer"][-1] < r["tokens_per_layer"][0]
        assert r["flops_fastv"] < none["flops_fastv"] and r["flops_exact"] < none["flops_exact"]
        assert r["ttft_ms"]["min"] <= r["ttft_ms"]["median"] <= r["ttft_ms"]["max"]
        assert r["stages_ms"]["vision"] > 0 and r["stages_ms"]["preprocess"] > 0
        assert r["kv_cache_mb"] < none["kv_cache_mb"] or r["method"] == "fastv"
    oracle = {r["ratio"]: r for r in got if r["method"] == "oracle"}
    assert set(oracle) == {0.5, 0.25}
    assert all(o["stages_ms"]["compression"] >= 0 for o in oracle.values())


def test_report_files(records, tmp_path):
    _, work, got = records
    paths = write_report(got, work.environment, tmp_path)
    names = {p.name for p in paths.values()}
    assert {
        "results.json",
        "results.csv",
        "report.md",
        "ttft_vs_retention.png",
        "stage_breakdown.png",
        "flops_vs_retention.png",
    } <= names
    for path in paths.values():
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["records"]) == len(got) and data["environment"]["torch"]
    assert "oracle" in (tmp_path / "report.md").read_text()


def test_command_line(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--methods",
            "none,evs+fastv",
            "--ratios",
            "0.5",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--max-new-tokens",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [r["method"] for r in rows] == ["none", "oracle", "evs+fastv"]
    assert (tmp_path / "stage_breakdown.png").read_bytes()[:8] == PNG


def test_command_line_rejects_unknown_method(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--methods", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.startswith("error: --methods: unknown method")


def test_python_entry_point(tmp_path):
    from tokpress.eval import run_benchmark

    rows = run_benchmark(
        out=str(tmp_path),
        methods=("none", "uniform"),
        ratios=(0.5,),
        repeats=1,
        warmup=0,
        max_new_tokens=2,
        oracle=False,
    )
    assert [(r["method"], r["ratio"]) for r in rows] == [("none", 1.0), ("uniform", 0.5)]
    assert (tmp_path / "report.md").exists()
