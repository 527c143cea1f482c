"""``tokpress bench`` on the embedded default: every file is written, token counts follow the ratios, the oracle
rows are there, every round measures every row once, the plots are valid PNGs — through the Python API and the
command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tokpress.cli import app
from tokpress.config import budget
from tokpress.eval.bench.records import derive
from tokpress.eval.bench.report import write_report
from tokpress.eval.bench.runner import BenchConfig, bench_plan, bench_rows, bench_steps, run_bench
from tokpress.eval.bench.workloads import make_workload

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def records():
    config = BenchConfig(
        methods=("none", "uniform", "fastv", "holitom"), ratios=(0.5, 0.25), repeats=2, warmup=0, max_new_tokens=3
    )
    work = make_workload(config)
    labels: list[str] = []
    return config, work, run_bench(config, work, progress=labels.append), labels


def test_rows_follow_the_plan(records):
    config, _, got, labels = records
    assert [(r["method"], r["ratio"]) for r in got] == bench_plan(config)
    assert [(r["method"], r["ratio"], r["batch"]) for r in got] == bench_rows(config)
    assert bench_plan(config)[:2] == [("none", 1.0), ("oracle", 0.5)]
    assert len(labels) == bench_steps(config) == len(got) + 2
    assert labels[0] == "warm-up none @ 1" and labels[-2:] == ["round 1/2", "round 2/2"]


def test_every_round_measures_every_row_once(records):
    _, work, got, _ = records
    for k in range(2):
        assert sorted(r["round_positions"][k] for r in got) == list(range(len(got)))
    assert [r["round_positions"][0] for r in got] != [r["round_positions"][1] for r in got]
    for r in got:
        ttft = r["rounds_ms"]["ttft"]
        assert r["repeats"] == 2 and len(ttft) == 2 and r["ttft_ms"]["min"] == min(ttft)
        assert r["ttft_clock"] == "perf_counter" and r["seed"] == 0
        assert r["stages_ms"]["vision"] == pytest.approx(sum(r["rounds_ms"]["vision"]) / 2)  # median of two
    assert "2 interleaved round(s) of 9 rows" in work.environment["timing"]
    d = derive(got)
    assert d[0]["speedup_vs_none"]["median"] == 1.0 and d[0]["speedup_vs_oracle"] is None
    for r, x in zip(got, d):
        if r["method"] != "none":
            paired = x["speedup_vs_oracle"]
            assert paired["rounds"] == 2 and paired["low"] <= paired["median"] <= paired["high"]
            assert 0 < x["vision_share_pct"]["median"] < 100 and x["overhead_pct"]["median"] >= 0


def test_token_counts_follow_the_ratios(records):
    _, _, got, _ = records
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
    _, work, got, _ = records
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
    assert data["records"][1]["derived"]["speedup_vs_none"]["rounds"] == 2
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
