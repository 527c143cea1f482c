"""Reports of ``tokpress eval``: ``results.json``, ``results.csv`` (summary rows), ``samples.csv`` (per-sample rows),
``report.md``, ``table.md`` and the PNG plots of :mod:`~tokpress.eval.accuracy.figures`.

Input is the record list of :func:`tokpress.eval.accuracy.runner.run_eval`: ``kind="summary"`` records (one per model x
method x ratio x task family, plus ``task="all"``) and ``kind="sample"`` records. Missing numbers show as "—" and are
left out of the plots. Facet rows (``facet``, e.g. Video-MME's duration) get their own sections; with
``scoring="both"`` the generated-letter accuracy is shown beside the log-likelihood one.
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokpress.eval.accuracy.figures import write_plots
from tokpress.eval.accuracy.tables import (
    _flops,
    _label,
    _mcnemar,
    _pct,
    _pct_ci,
    _speedup,
    _tokens,
    facets_of,
    render_task_table,
    samples_of,
    summaries,
    tasks_of,
)
from tokpress.eval.bench.records import _num, _ratio_key
from tokpress.eval.bench.report import _flatten, _jsonable
from tokpress.eval.bench.tables import DASH, _fixed, _md_row, environment_lines

logger = logging.getLogger(__name__)

MAX_TASK_COLUMNS = 6  # more task families than this: per-task accuracies only in the long table

# ---------------------------------------------------------------------------------------------- files


def write_json(
    path: Path,
    records: Sequence[dict[str, Any]],
    environment: dict[str, Any],
    command: str,
    config: Any = None,
    notes: Sequence[str] = (),
) -> None:
    """``results.json``: ``{"command", "created", "environment", "config", "notes", "summary", "samples"}``."""
    payload = {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "config": asdict(config) if is_dataclass(config) else config,
        "notes": list(notes),
        "summary": [r for r in records if r.get("kind") == "summary"],
        "samples": samples_of(records),
    }
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One CSV row per record; nested fields as dotted columns, lists as JSON strings, ``None`` as empty cells."""
    flat = [_flatten(_jsonable(r)) for r in rows]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(flat)


def render_markdown(
    records: Sequence[dict[str, Any]],
    environment: dict[str, Any],
    command: str,
    notes: Sequence[str] = (),
    config: Any = None,
) -> str:
    """The text of ``report.md``: notes, environment, the accuracy-vs-cost table, the per-task table, the rules."""
    lines = ["# tokpress eval", ""]
    lines += [f"> **Note.** {note}" for note in notes] + ([""] if notes else [])
    lines += [f"Command: `{command}`", ""]
    lines += environment_lines(environment, "TTFT comes from")

    tasks = tasks_of(records)
    wide = 1 < len(tasks) <= MAX_TASK_COLUMNS
    by_task = {(r["model"], r["method"], _ratio_key(r["ratio"]), r["task"]): r for r in summaries(records, None)}
    overall = summaries(records)
    models = list(dict.fromkeys(str(r.get("model", "")) for r in overall))
    gen = any(_num(r.get("accuracy_generate")) is not None for r in overall)
    columns = [
        "method",
        "ratio",
        "video tokens → LLM",
        "accuracy % [95 % CI]",
        *(["generated letter % [95 % CI]"] if gen else []),
        "Δ vs uncompressed, pts [95 % CI]",
        "McNemar p (b01 / b10)",
        "agreement %",
        "FLOPs (FastV, % of uncompressed)",
        "TTFT ms (median)",
        "speed-up",
    ]
    if wide:
        columns += [*tasks, "mean of tasks"]
    for model in models:
        rows = [r for r in overall if str(r.get("model", "")) == model]
        n = rows[0].get("n") if rows else None
        lines += ["", f"## Accuracy vs cost — {model or 'model'} (n = {n})", "", _md_row(columns)]
        lines.append(_md_row(["---"] * len(columns)))
        for r in rows:
            cells = [
                _label(r),
                _fixed(r.get("ratio"), 2),
                _tokens(r),
                _pct_ci(r.get("accuracy"), r.get("ci_low"), r.get("ci_high")),
                *([_generated(r)] if gen else []),
                _pct_ci(r.get("delta"), r.get("delta_ci_low"), r.get("delta_ci_high"), signed=True)
                if r.get("method") != "none"
                else DASH,
                _mcnemar(r) if r.get("method") != "none" else DASH,
                _pct(r.get("agreement"), 0),
                _flops(r),
                _fixed(r.get("ttft_ms"), 1),
                _speedup(r),
            ]
            if wide:
                key = (r["model"], r["method"], _ratio_key(r["ratio"]))
                cells += [_pct(by_task.get((*key, t), {}).get("accuracy")) for t in tasks]
                cells.append(_pct(r.get("accuracy_macro")))
            lines.append(_md_row(cells))
        chance = _num(rows[0].get("chance")) if rows else None
        if chance is not None:
            lines += ["", f"Chance accuracy (uniform guessing): {100 * chance:.1f} %."]

    if tasks:
        lines += _long_table(records, "By task family", "task", tasks, gen)
    for facet, values in facets_of(records).items():
        lines += _long_table(records, f"By {facet}", facet, values, gen)
    lines += ["", "## How to read this", "", *_rules(config), ""]
    return "\n".join(lines)


def _generated(r: dict[str, Any]) -> str:
    """Accuracy of the generated letters with its CI (and how many answers had no letter)."""
    text = _pct_ci(r.get("accuracy_generate"), r.get("generate_ci_low"), r.get("generate_ci_high"))
    missed = r.get("unmatched_generate")
    return f"{text}, {missed} unparsed" if missed else text


def _long_table(
    records: Sequence[dict[str, Any]], title: str, label: str, groups: Sequence[str], gen: bool
) -> list[str]:
    """A section with one row per group (task family or facet value) x method x ratio."""
    cols = [label, "method", "ratio", "n", "accuracy % [95 % CI]", *(["generated letter %"] if gen else [])]
    cols += ["Δ pts", "McNemar p (b01 / b10)", "agreement %"]
    lines = ["", f"## {title}", "", _md_row(cols), _md_row(["---"] * len(cols))]
    for group in groups:
        for r in summaries(records, group):
            cells = [group.split("=", 1)[-1] if r.get("facet") else group, _label(r), _fixed(r.get("ratio"), 2)]
            cells += [r.get("n", DASH), _pct_ci(r.get("accuracy"), r.get("ci_low"), r.get("ci_high"))]
            cells += [_pct(r.get("accuracy_generate"))] if gen else []
            cells.append(f"{100 * r['delta']:+.1f}" if _num(r.get("delta")) is not None else DASH)
            cells += [_mcnemar(r) if r.get("method") != "none" else DASH, _pct(r.get("agreement"), 0)]
            lines.append(_md_row(cells))
    return lines


def _rules(config: Any) -> list[str]:
    get = (lambda k, d: getattr(config, k, d)) if config is not None else (lambda k, d: d)  # noqa: E731
    scoring = get("scoring", "logits")
    matched = "matched to the options"
    if get("benchmark", "synth") in ("videomme", "mvbench", "longvideobench", "egoschema"):
        matched = "read by the benchmark's lmms-eval 0.7.3 answer extraction (no letter found: wrong)"
    if scoring in ("logits", "both"):
        rule = (
            f"Answers are scored from the model's logits: each option's {get('answer_format', 'word')} (with the "
            f"end-of-turn token for words) is scored by its teacher-forced log-likelihood after the prompt, "
            f"{'averaged per token' if get('normalize', 'mean') == 'mean' else 'summed over its tokens'}; the "
            "highest-scoring option is the answer. The video is compressed while the prompt is prefilled, "
            "exactly as in generation, and the options continue that cache."
        )
        if scoring == "both":
            rule += (
                " The 'generated letter' column scores the same prompts by greedy generation "
                f"({get('max_new_tokens', 8)} new tokens), the answer {matched}."
            )
    else:
        rule = f"Answers are generated greedily and {matched}; an unmatched answer counts as wrong."
    return [
        f"- {rule}",
        f"- Accuracy CIs: percentile bootstrap over samples ({get('n_boot', 2000)} resamples, seed "
        f"{get('seed', 0)}); Δ is the accuracy change against the uncompressed model on the same samples, its CI "
        "a paired bootstrap of the per-sample differences.",
        f"- McNemar's paired test against the uncompressed model: b01 = samples it got wrong and the method right, "
        f"b10 = the reverse; exact binomial test when b01 + b10 < {get('exact_below', 25)}, else chi-square with "
        "continuity correction. Agreement = share of samples with the same chosen option as the uncompressed model.",
        "- FLOPs: prefill FLOPs per sample in the FastV convention (mean), in parentheses as a fraction of the "
        "uncompressed run. TTFT: median over samples of the timed prompt prefill (vision encoder, compression, "
        "LLM prefill; video decoding and preprocessing excluded, they do not depend on the method); speed-up = "
        "uncompressed TTFT / this TTFT.",
    ]


# ---------------------------------------------------------------------------------------------- entry points


def write_eval_report(
    records: Sequence[dict[str, Any]],
    environment: dict[str, Any],
    out_dir: str | Path,
    *,
    command: str | None = None,
    notes: Sequence[str] = (),
    config: Any = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``samples.csv``, ``report.md``, ``table.md`` (the compact per-task
    table of :func:`render_task_table`) and the PNG plots into ``out_dir``.

    Args:
        records: from :func:`~tokpress.eval.accuracy.runner.run_eval`.
        environment: free-form strings (device, torch, transformers, model, benchmark, scoring, ...).
        out_dir: created if missing; files of the same names are overwritten.
        command: the command line to record; default: this process's ``sys.argv``.
        notes: shown at the top of the report (e.g. that the weights are random) and stored in the JSON.
        config: the :class:`~tokpress.eval.accuracy.runner.EvalConfig`, stored in the JSON and used for the rules text.
        plots: also write the PNGs (needs matplotlib).

    Returns:
        Name -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command if command is not None else shlex.join(sys.argv)
    names = ("results.json", "results.csv", "samples.csv", "report.md", "table.md")
    written = {name: out / name for name in names}
    write_json(written["results.json"], records, environment, command, config, notes)
    write_csv(written["results.csv"], summaries(records, None))
    write_csv(written["samples.csv"], samples_of(records))
    written["report.md"].write_text(render_markdown(records, environment, command, notes, config), encoding="utf-8")
    written["table.md"].write_text(render_task_table(records), encoding="utf-8")
    if plots:
        try:
            written.update(write_plots(records, out))
        except ImportError:
            logger.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
    logger.info("eval report written to %s", out)
    return written
