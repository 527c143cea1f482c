"""Bench reports: JSON round-trip, flat CSV, report.md with hand-checked paired speed-ups (per-round ratios with
bootstrap intervals), overhead and vision share, valid PNG plots, rich table, a batch column for a sweep."""

from __future__ import annotations

import copy
import csv
import json

import pytest
from rich.console import Console

from tokpress.eval.bench.records import derive, median_of
from tokpress.eval.bench.report import print_table, write_report
from tokpress.eval.bench.tables import render_markdown

MODEL = "tiny-qwen2.5-vl"
ENV = {"device": "NVIDIA H100 80GB", "driver": "550.54", "cuda": "12.4", "torch": "2.15.0", "attn": "sdpa"}


def _record(method: str, ratio: float, ttft: float, *, compression: float | None = 0.0, rounds=None, **extra) -> dict:
    """A record with three rounds; by default round k costs ``ttft`` x (1, 0.95, 1.1) — load common to all rows."""
    video = 2048
    into = round(video * ratio)
    per_round = list(rounds) if rounds is not None else [ttft, ttft * 0.95, ttft * 1.1]
    stages = {
        "video_decode": 20.0,
        "preprocess": 5.0,
        "vision": 40.0,
        "compression": compression,
        "prefill": ttft - 75.0 - (compression or 0.0),
        "first_decode": 10.0,
    }
    record = {
        "model": MODEL,
        "method": method,
        "ratio": ratio,
        "video_tokens": video,
        "into_llm": into,
        "tokens_per_layer": [into + 40] * 4,
        "ttft_ms": {"median": ttft, "min": min(per_round), "max": max(per_round)},
        "stages_ms": stages,
        "rounds_ms": {"ttft": per_round} | {k: [v] * len(per_round) for k, v in stages.items()},
        "round_positions": [0, 1, 2],
        "seed": 0,
        "decode_tokens_per_s": 42.0,
        "peak_memory_mb": 1500.0 + into,
        "kv_cache_mb": into / 100,
        "flops_fastv": 1e12 * ratio,
        "flops_exact": 8e11 * ratio,
        "answer": "left to right",
        "same_answer": method != "none" or None,
        "repeats": 5,
    }
    record.update(extra)
    return record


@pytest.fixture
def records() -> list[dict]:
    sparse = _record("evs+fastv", 0.25, 90.0, compression=None)  # written before rounds: ratios of medians
    sparse.update(peak_memory_mb=None, kv_cache_mb=None, flops_exact=None, decode_tokens_per_s=None, same_answer=None)
    sparse["stages_ms"]["vision"] = None
    del sparse["tokens_per_layer"], sparse["answer"], sparse["rounds_ms"]
    return [
        _record("none", 1.0, 200.0, rounds=[200.0, 190.0, 220.0]),
        _record("fastv", 0.5, 150.0, compression=6.0),
        _record("oracle", 0.5, 120.0),
        _record("fastv", 0.25, 100.0, compression=10.0, rounds=[95.0, 110.0, 100.0]),
        _record("oracle", 0.25, 80.0, rounds=[80.0, 76.0, 88.0]),
        _record("evs+fastv", 0.5, 125.0, compression=4.0, same_answer=False),
        sparse,
    ]


def _row(markdown: str, method: str, ratio: str) -> list[str]:
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {method} | {ratio} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_speedups_by_hand(records):
    # fastv@0.25 vs uncompressed, per round: 200/95 = 2.105, 190/110 = 1.727, 220/100 = 2.2 -> median 2.105 (the
    # ratio of the medians would say 2.00). Three distinct values: a bootstrap median is the smallest with
    # probability 7/27, the largest with 7/27 (> 2.5 % each), so the 95 % interval is [1.727, 2.2].
    # vs oracle@0.25: 80/95 = 0.842, 76/110 = 0.691, 88/100 = 0.88; TTFT / oracle: 1.1875, 1.447, 1.136 -> 1.19.
    # overhead: 10 ms compression / oracle's 80, 76, 88 ms -> 12.5, 13.2, 11.4 % -> 12.5; vision 40 ms / 95, 110,
    # 100 -> 42.1, 36.4, 40.0 % -> 40. Sparse evs+fastv@0.25 (no rounds): 200 / 90 = 2.22x, 80 / 90 = 0.89x.
    md = render_markdown(records, ENV, "tokpress bench")
    fastv = _row(md, "fastv", "0.25")
    assert fastv[2:10] == [
        "2048 → 512",
        "100 [95.0–110]",
        "2.11× [1.73–2.20]",
        "0.84× [0.69–0.88]",
        "1.19",
        "20.0 / 5.00 / 40.0 / 10.0 / 15.0 / 10.0",
        "12.5",
        "40",
    ]
    assert fastv[10] == "250 G (25%)" and fastv[-1] == "yes"
    sparse = _row(md, "evs+fastv", "0.25")
    assert sparse[4:6] == ["2.22×", "0.89×"]
    assert sparse[7] == "20.0 / 5.00 / — / — / 15.0 / 10.0"
    assert sparse[8:10] == ["—", "—"] and sparse[11:] == ["—"] * 5
    base = _row(md, "uncompressed", "1.00")
    assert base[4] == "1.00× [1.00–1.00]" and base[5:7] == ["—", "—"] and base[8] == "—"
    oracle = _row(md, "oracle", "0.50")  # load common to a round cancels: the interval collapses on the ratio
    assert oracle[4:7] == [f"{200 / 120:.2f}× [{200 / 120:.2f}–{200 / 120:.2f}]", "1.00× [1.00–1.00]", "1.00"]
    assert _row(md, "fastv", "0.50")[4] == "1.33× [1.33–1.33]"
    d = derive(records)
    assert d[3]["speedup_vs_oracle"]["median"] == pytest.approx(80 / 95)
    assert d[3]["speedup_vs_oracle"]["rounds"] == 3
    assert d[3]["ttft_vs_oracle"]["median"] == pytest.approx(95 / 80)
    assert d[3]["overhead_pct"]["median"] == pytest.approx(12.5)
    assert d[3]["vision_share_pct"]["median"] == pytest.approx(40.0)
    assert d[6]["speedup_vs_none"] == {"median": pytest.approx(200 / 90), "low": None, "high": None, "rounds": 0}
    assert d[6]["overhead_pct"] is None and d[6]["flops_exact_fraction"] is None
    assert "paired per round" in md and "bootstrap" in md


def test_rows_grouped_and_ordered(records):
    md = render_markdown(records, ENV, "cmd")
    lines = [x for x in md.splitlines() if x.startswith("| ") and " | 0." in x or x.startswith("| uncompressed")]
    order = [(x.split(" | ")[0][2:], x.split(" | ")[1]) for x in lines]
    assert order == [
        ("uncompressed", "1.00"),
        ("oracle", "0.50"),
        ("fastv", "0.50"),
        ("evs+fastv", "0.50"),
        ("oracle", "0.25"),
        ("fastv", "0.25"),
        ("evs+fastv", "0.25"),
    ]
    assert "| CUDA | 12.4 |" in md and "| dtype | — |" in md and "| Attention implementation | sdpa |" in md


def test_write_report_files(records, tmp_path):
    original = copy.deepcopy(records)
    written = write_report(records, ENV, tmp_path / "out", command="tokpress bench --ratios 0.5,0.25")
    assert records == original  # inputs untouched
    names = {"results.json", "results.csv", "report.md", "ttft_vs_retention.png", "stage_breakdown.png"}
    assert names | {"flops_vs_retention.png"} == set(written)
    assert all(p.is_file() for p in written.values())

    payload = json.loads(written["results.json"].read_text())
    assert [{k: v for k, v in r.items() if k != "derived"} for r in payload["records"]] == records
    assert payload["environment"] == ENV and "paired per round" in payload["speedups"]
    assert payload["command"] == "tokpress bench --ratios 0.5,0.25"
    fastv = payload["records"][3]["derived"]
    assert fastv["speedup_vs_none"]["median"] == pytest.approx(200 / 95)
    assert fastv["speedup_vs_none"]["low"] == pytest.approx(190 / 110) and fastv["ttft_vs_oracle"]["high"] > 1.19
    assert fastv["overhead_pct"]["median"] == pytest.approx(12.5) and fastv["vision_share_pct"]["rounds"] == 3

    with written["results.csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    for col in (
        "ttft_ms.median",
        "ttft_ms.max",
        "stages_ms.prefill",
        "stages_ms.compression",
        "derived.speedup_vs_oracle.median",
        "derived.speedup_vs_oracle.low",
        "derived.overhead_pct.median",
        "derived.vision_share_pct.median",
    ):
        assert col in rows[0]
    assert float(rows[3]["ttft_ms.median"]) == 100.0
    assert float(rows[3]["derived.speedup_vs_oracle.median"]) == pytest.approx(80 / 95)
    assert json.loads(rows[3]["rounds_ms.ttft"]) == [95.0, 110.0, 100.0]
    assert json.loads(rows[0]["tokens_per_layer"]) == [2088] * 4
    assert rows[6]["peak_memory_mb"] == "" and rows[6]["stages_ms.vision"] == "" and rows[6]["answer"] == ""

    assert "0.84× [0.69–0.88]" in written["report.md"].read_text()


def test_pngs_are_valid(records, tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    written = write_report(records, ENV, tmp_path, command="x")
    for name in ("ttft_vs_retention.png", "stage_breakdown.png", "flops_vs_retention.png"):
        data = written[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        image = matplotlib_image.imread(written[name])
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.01  # something was drawn


def test_minimal_and_multi_model(tmp_path):
    minimal = [
        {"model": "a", "method": "none", "ratio": 1.0, "ttft_ms": {"median": 10.0}},
        {"model": "a", "method": "fastv", "ratio": 0.5, "ttft_ms": {"median": 5.0}, "flops_fastv": float("nan")},
        {"model": "b", "method": "oracle", "ratio": 0.5, "ttft_ms": {"median": 4.0}},
        {"model": "b", "method": "fastv", "ratio": 0.5, "ttft_ms": {"median": 8.0}},
    ]
    written = write_report(minimal, {}, tmp_path, command="x")
    md = written["report.md"].read_text()
    assert "## a" in md and "## b" in md and "CPU" in md  # no device given: the CPU caution is shown
    assert json.loads(written["results.json"].read_text())["records"][1]["flops_fastv"] is None
    assert _row(md, "fastv", "0.50")[4] == "2.00×"
    assert [median_of(d["speedup_vs_oracle"]) for d in derive(minimal)] == [None, None, 1.0, 0.5]


def test_print_table(records):
    console = Console(record=True, width=200)
    print_table(records, console, title="bench")
    text = console.export_text()
    assert "bench" in text and "evs+fastv" in text and "uncompressed" in text
    assert "0.84× [0.69–0.88]" in text and "2.22×" in text and "25%" in text and "1.19" in text
    assert "model" not in text.splitlines()[2] and "batch" not in text.splitlines()[2]  # one model, one batch size
    assert "paired per round" in " ".join(text.split())  # the table says how speed-ups are computed


def test_batch_sweep_pairs_within_a_batch(records):
    # the same rows at batch 4, each round 3x slower for the uncompressed row only: 600/95, 570/110, 660/100
    # -> median 6.32 at batch 4, while batch 1 keeps 2.11; speed-ups never pair across batch sizes
    wide = copy.deepcopy(records[:5])
    for r in wide:
        r["batch"] = 4
    wide[0]["rounds_ms"]["ttft"] = [600.0, 570.0, 660.0]
    both = records[:5] + wide
    d = derive(both)
    assert d[3]["speedup_vs_none"]["median"] == pytest.approx(200 / 95)
    assert d[8]["speedup_vs_none"]["median"] == pytest.approx(600 / 95)
    assert d[8]["speedup_vs_oracle"]["median"] == pytest.approx(80 / 95)
    md = render_markdown(both, ENV, "cmd")
    assert "| method | batch | ratio |" in md
    assert "| fastv | 4 | 0.25 | 2048 → 512 | 100 [95.0–110] | 6.32× [5.18–6.60] |" in md
    console = Console(record=True, width=220)
    print_table(both, console)
    assert "batch" in console.export_text().splitlines()[2]
