"""A batch sweep from the command line: every row at each batch size, speed-ups paired within a size."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tokpress.cli import app


def test_batch_sweep_measures_every_row_at_each_size(tmp_path):
    args = ["bench", "--methods", "none,uniform", "--ratios", "0.5", "--batch", "1,2", "--repeats", "2"]
    args += ["--warmup", "0", "--max-new-tokens", "2", "--seed", "3", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [(r["method"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2) for m in ("none", "oracle", "uniform")]
    for r in rows:
        assert r["seed"] == 3 and len(r["rounds_ms"]["ttft"]) == 2
        assert r["into_llm"] == (128 if r["method"] == "none" else 64)  # per prompt, at either size
    for k in range(2):  # one round holds all six rows, both batch sizes interleaved
        assert sorted(r["round_positions"][k] for r in rows) == list(range(6))
    assert rows[1]["same_answer"] is not None and rows[4]["same_answer"] is not None
    # pairing stays within a batch size: uniform at batch 2 against the uncompressed row at batch 2, round by round
    none2, uniform2 = rows[3]["rounds_ms"]["ttft"], rows[5]["rounds_ms"]["ttft"]
    ratios = sorted(a / b for a, b in zip(none2, uniform2))
    assert rows[5]["derived"]["speedup_vs_none"]["median"] == (ratios[0] + ratios[1]) / 2
    report = (tmp_path / "report.md").read_text()
    assert "| method | batch | ratio |" in report and "| uniform | 2 | 0.50 |" in report
    assert "batch" in result.output and "paired per round" in " ".join(result.output.split())


def test_batch_list_is_checked_before_loading(tmp_path):
    for text, needle in (("1,x", "comma-separated integers"), ("1,0", ">= 1"), ("2,2", "give each once")):
        result = CliRunner().invoke(app, ["bench", "--batch", text, "--out", str(tmp_path)])
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert "--batch" in result.output and needle in result.output and len(result.output.splitlines()) == 1
