"""Reports of ``tokpress eval``: ``results.json``, ``results.csv`` (summary rows), ``samples.csv`` (per-sample rows),
``report.md`` and PNG plots — accuracy vs retention per method, and the Pareto views accuracy vs FLOPs and vs TTFT.

Input is the record list of :func:`tokpress.eval.accuracy.runner.run_eval`: ``kind="summary"`` records (one per model x
method x ratio x task family, plus ``task="all"``) and ``kind="sample"`` records. Missing numbers show as "—" and are
left out of the plots. Plots use matplotlib's object API on the Agg canvas (no pyplot, the global backend untouched).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokpress.eval import plots
from tokpress.eval.bench.report import (
    DASH,
    _fixed,
    _flatten,
    _jsonable,
    _md_row,
    _num,
    _ratio_key,
    _si,
    environment_lines,
)

logger = logging.getLogger(__name__)

PLOT_FILES = ("accuracy_vs_retention.png", "accuracy_vs_flops.png", "accuracy_vs_ttft.png")
MAX_TASK_COLUMNS = 6  # more task families than this: per-task accuracies only in the long table


# ---------------------------------------------------------------------------------------------- selection


def summaries(records: Sequence[dict[str, Any]], task: str | None = "all") -> list[dict[str, Any]]:
    """Summary records (of one ``task``, or all when ``task`` is None), uncompressed first, then by ratio
    descending, in run order within a ratio."""
    rows = [r for r in records if r.get("kind") == "summary" and (task is None or r.get("task") == task)]
    order = {id(r): i for i, r in enumerate(rows)}

    def key(r: dict[str, Any]) -> tuple[str, int, float, int]:
        return (str(r.get("model", "")), r.get("method") != "none", -_ratio_key(r.get("ratio")), order[id(r)])

    return sorted(rows, key=key)


def tasks_of(records: Sequence[dict[str, Any]]) -> list[str]:
    """Task families of the summary records, in first-seen order (without ``"all"``)."""
    return list(dict.fromkeys(r["task"] for r in records if r.get("kind") == "summary" and r.get("task") != "all"))


def samples_of(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "sample"]


# ---------------------------------------------------------------------------------------------- formatting


def _pct(value: Any, digits: int = 1) -> str:
    v = _num(value)
    return DASH if v is None else f"{100 * v:.{digits}f}"


def _pct_ci(value: Any, low: Any, high: Any, signed: bool = False) -> str:
    v, lo, hi = _num(value), _num(low), _num(high)
    if v is None:
        return DASH
    sign = "+" if signed else ""
    text = f"{100 * v:{sign}.1f}"
    return text if lo is None or hi is None else f"{text} [{100 * lo:{sign}.1f}, {100 * hi:{sign}.1f}]"


def _p(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _mcnemar(r: dict[str, Any]) -> str:
    if _num(r.get("mcnemar_p")) is None:
        return DASH
    return f"{_p(r['mcnemar_p'])} ({r.get('mcnemar_b01', 0)} / {r.get('mcnemar_b10', 0)})"


def _flops(r: dict[str, Any]) -> str:
    text = _si(r.get("flops_fastv"))
    frac = _num(r.get("flops_fraction"))
    return text if frac is None or text == DASH else f"{text} ({frac:.0%})"


def _tokens(r: dict[str, Any]) -> str:
    video, into = _num(r.get("video_tokens")), _num(r.get("into_llm"))
    if video is None:
        return DASH
    return f"{video:.0f}" if into is None else f"{video:.0f} → {into:.0f}"


def _label(r: dict[str, Any]) -> str:
    method = str(r.get("method", "?"))
    return "uncompressed" if method == "none" else method


def _speedup(r: dict[str, Any]) -> str:
    v = _num(r.get("speedup"))
    return DASH if v is None else f"{v:.2f}×"


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
    columns = [
        "method",
        "ratio",
        "video tokens → LLM",
        "accuracy % [95 % CI]",
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
        long_cols = [
            "task",
            "method",
            "ratio",
            "n",
            "accuracy % [95 % CI]",
            "Δ pts",
            "McNemar p (b01 / b10)",
            "agreement %",
        ]
        lines += ["", "## By task family", "", _md_row(long_cols), _md_row(["---"] * len(long_cols))]
        for task in tasks:
            for r in summaries(records, task):
                lines.append(
                    _md_row(
                        [
                            task,
                            _label(r),
                            _fixed(r.get("ratio"), 2),
                            r.get("n", DASH),
                            _pct_ci(r.get("accuracy"), r.get("ci_low"), r.get("ci_high")),
                            f"{100 * r['delta']:+.1f}" if _num(r.get("delta")) is not None else DASH,
                            _mcnemar(r) if r.get("method") != "none" else DASH,
                            _pct(r.get("agreement"), 0),
                        ]
                    )
                )
    lines += ["", "## How to read this", "", *_rules(config), ""]
    return "\n".join(lines)


def _rules(config: Any) -> list[str]:
    get = (lambda k, d: getattr(config, k, d)) if config is not None else (lambda k, d: d)  # noqa: E731
    scoring = get("scoring", "logits")
    if scoring == "logits":
        rule = (
            f"Answers are scored from the model's logits: each option's {get('answer_format', 'word')} (with the "
            f"end-of-turn token for words) is scored by its teacher-forced log-likelihood after the prompt, "
            f"{'averaged per token' if get('normalize', 'mean') == 'mean' else 'summed over its tokens'}; the "
            "highest-scoring option is the answer. The video is compressed while the prompt is prefilled, "
            "exactly as in generation, and the options continue that cache."
        )
    else:
        rule = "Answers are generated greedily and matched to the options; an unmatched answer counts as wrong."
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


# ---------------------------------------------------------------------------------------------- plots


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher accuracy), by cost ascending."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _yerr(rows: Sequence[dict[str, Any]]) -> list[list[float]] | None:
    """CI half-widths in percentage points (``None`` unless every row has its CI)."""
    accs = [r["accuracy"] for r in rows]
    lows, highs = [_num(r.get("ci_low")) for r in rows], [_num(r.get("ci_high")) for r in rows]
    if any(v is None for v in lows + highs):
        return None
    return [
        [100 * max(a - lo, 0.0) for a, lo in zip(accs, lows)],
        [100 * max(hi - a, 0.0) for a, hi in zip(accs, highs)],
    ]


def _accuracy_axes(ax: Any, title: str) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.set_ylabel("accuracy")
    ax.set_ylim(-2, 102)
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def _reference_lines(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    base = next((r for r in rows if r.get("method") == "none"), None)
    if base is not None and _num(base.get("accuracy")) is not None:
        ax.axhline(100 * base["accuracy"], color=plots.UNCOMPRESSED_COLOR, linestyle=":")
        lo, hi = _num(base.get("ci_low")), _num(base.get("ci_high"))
        if lo is not None and hi is not None:
            ax.axhspan(100 * lo, 100 * hi, color=plots.UNCOMPRESSED_COLOR, alpha=0.12)
    chance = _num(rows[0].get("chance")) if rows else None
    if chance is not None:
        ax.axhline(100 * chance, color="firebrick", linestyle="--", linewidth=0.8)


def _references() -> list[tuple[Any, str]]:
    """Legend entries of the reference lines every panel may draw."""
    from matplotlib.lines import Line2D

    return [
        (Line2D([], [], color=plots.UNCOMPRESSED_COLOR, linestyle=":"), "uncompressed (95 % CI band)"),
        (Line2D([], [], color="firebrick", linestyle="--", linewidth=0.8), "chance"),
    ]


def _retention_panel(ax: Any, rows: Sequence[dict[str, Any]], styles: dict[str, dict], title: str) -> None:
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("method") != "none" and _num(r.get("accuracy")) is not None:
            series.setdefault(str(r["method"]), []).append(r)
    ratios = [_ratio_key(r["ratio"]) for pts in series.values() for r in pts]
    offsets = plots.dodge_offsets(list(series), [100 * x for x in ratios])
    for method, pts in series.items():
        pts = sorted(pts, key=lambda r: _ratio_key(r["ratio"]))
        xs = [100 * _ratio_key(r["ratio"]) + offsets[method] for r in pts]
        style = {k: v for k, v in styles[method].items() if k != "stage"}
        ax.errorbar(xs, [100 * r["accuracy"] for r in pts], yerr=_yerr(pts), capsize=2, elinewidth=0.8, **style)
    _reference_lines(ax, rows)
    plots.ratio_axis(ax, ratios)
    _accuracy_axes(ax, title)


def _cost_panel(ax: Any, rows: Sequence[dict[str, Any]], styles: dict[str, dict], field: str, xlabel: str) -> None:
    """Accuracy vs a cost per (method, ratio), CI bars, lines per method, the uncompressed point and the Pareto
    front over every point; each point is labelled with its retention in %."""
    scale = 100.0 if field == "flops_fraction" else 1.0
    usable = [r for r in rows if _num(r.get(field)) is not None and _num(r.get("accuracy")) is not None]
    if not usable:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
        _accuracy_axes(ax, "")
        return
    series: dict[str, list[dict[str, Any]]] = {}
    for r in usable:
        series.setdefault(str(r["method"]), []).append(r)
    for method, pts in series.items():
        pts = sorted(pts, key=lambda r: float(r[field]))
        xs, ys = [scale * float(r[field]) for r in pts], [100 * r["accuracy"] for r in pts]
        if method == "none":
            ax.errorbar(xs, ys, yerr=_yerr(pts), color="black", marker="*", markersize=11, linestyle="none", capsize=3)
            continue
        style = {k: v for k, v in styles[method].items() if k != "stage"}
        ax.errorbar(xs, ys, yerr=_yerr(pts), capsize=2, elinewidth=0.8, alpha=0.85, **style)
        for x, y, r in zip(xs, ys, pts):
            label = f"{100 * _ratio_key(r['ratio']):.4g}%"
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6, color=style["color"])
    points = [(scale * float(r[field]), 100 * float(r["accuracy"])) for r in usable]
    front = pareto_front(points)
    if len(front) > 1:
        ax.step(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            where="post",
            color="grey",
            linewidth=3,
            alpha=0.35,
            zorder=0,
        )
    chance = _num(usable[0].get("chance"))
    if chance is not None:
        ax.axhline(100 * chance, color="firebrick", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    if field == "flops_fraction":  # a fraction reads from 0; TTFTs autoscale (near-equal CPU times would bunch up)
        from matplotlib.ticker import PercentFormatter

        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    _accuracy_axes(ax, "")


def write_plots(records: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``accuracy_vs_retention.png`` (overall and per task family), ``accuracy_vs_flops.png`` and
    ``accuracy_vs_ttft.png`` (one row of panels per model), in %, styled as the bench plots
    (:func:`tokpress.eval.plots.method_styles`: colour + marker per method, line style per stage), the legend
    right of the panels. Raises ImportError without matplotlib."""
    out = Path(out_dir)
    paths = {name: out / name for name in PLOT_FILES}
    overall = summaries(records)
    models = list(dict.fromkeys(str(r.get("model", "")) for r in overall)) or [""]
    styles = plots.method_styles(str(r.get("method")) for r in overall)
    legend = plots.legend_entries(styles, _references())
    tasks = tasks_of(records)

    panels = ["all", *tasks] if len(tasks) > 1 else ["all"]
    cols = min(3, len(panels))
    per_model_rows = math.ceil(len(panels) / cols)
    fig = plots.new_figure(4.6 * cols + 2.2, 3.6 * per_model_rows * len(models))
    axes = fig.subplots(per_model_rows * len(models), cols, squeeze=False)
    for m, model in enumerate(models):
        for k in range(per_model_rows * cols):
            ax = axes[m * per_model_rows + k // cols, k % cols]
            if k >= len(panels):
                ax.set_axis_off()
                continue
            rows = [r for r in summaries(records, panels[k]) if str(r.get("model", "")) == model]
            title = "all tasks" if panels[k] == "all" else panels[k]
            _retention_panel(ax, rows, styles, f"{title} — {model}" if len(models) > 1 else title)
    plots.outside_legend(fig, *legend)
    plots.thin_tick_labels(fig, axes.flat)
    plots.save_figure(fig, paths["accuracy_vs_retention.png"])

    for name, field, xlabel in (
        ("accuracy_vs_flops.png", "flops_fraction", "prefill FLOPs (FastV convention), % of uncompressed"),
        ("accuracy_vs_ttft.png", "ttft_ms", "TTFT ms (median prompt prefill)"),
    ):
        fig = plots.new_figure(9.0, 4.6 * len(models))
        for ax, model in zip(fig.subplots(len(models), 1, squeeze=False)[:, 0], models):
            rows = [r for r in overall if str(r.get("model", "")) == model]
            _cost_panel(ax, rows, styles, field, xlabel)
            ax.set_title(f"accuracy vs {'FLOPs' if 'flops' in field else 'TTFT'} — {model}", fontsize=10)
        plots.outside_legend(fig, *legend)
        plots.save_figure(fig, paths[name])
    return paths


def render_task_table(records: Sequence[dict[str, Any]]) -> str:
    """A compact markdown table (``table.md``, the README's): per method, per ratio, the mean of the per-task
    accuracies, the pooled accuracy with its 95 % CI, and the accuracy of every task family, in %.

    Rows are grouped by method (uncompressed first, then methods in run order, ratios descending), so each group
    reads as accuracy vs retention.
    """
    tasks = tasks_of(records)
    by_task = {(r["model"], r["method"], _ratio_key(r["ratio"]), r["task"]): r for r in summaries(records, None)}
    overall = summaries(records)
    methods = list(dict.fromkeys(_label(r) for r in overall))
    rows = sorted(overall, key=lambda r: (str(r.get("model", "")), methods.index(_label(r)), -_ratio_key(r["ratio"])))
    columns = ["method", "retained", "mean of tasks", "all [95 % CI]", *tasks]
    lines = [_md_row(columns), _md_row(["---"] * len(columns))]
    for r in rows:
        key = (r["model"], r["method"], _ratio_key(r["ratio"]))
        cells = [
            _label(r),
            _fixed(r.get("ratio"), 2),
            _pct(r.get("accuracy_macro")),
            _pct_ci(r.get("accuracy"), r.get("ci_low"), r.get("ci_high")),
        ]
        lines.append(_md_row(cells + [_pct(by_task.get((*key, t), {}).get("accuracy")) for t in tasks]))
    return "\n".join(lines) + "\n"


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


def print_eval_table(records: Sequence[dict[str, Any]], console: Any, title: str | None = None) -> None:
    """A compact rich table of the overall summaries on ``console`` (a ``rich.console.Console``)."""
    from rich.table import Table

    table = Table(title=title or "tokpress eval", title_justify="left")
    columns = ["method", "ratio", "tokens", "acc %", "95 % CI", "Δ pts", "McNemar p", "agree %", "FLOPs", "TTFT ms"]
    for col in columns:
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for r in summaries(records):
        frac = _num(r.get("flops_fraction"))
        lo, hi = _num(r.get("ci_low")), _num(r.get("ci_high"))
        table.add_row(
            _label(r),
            _fixed(r.get("ratio"), 2),
            _tokens(r),
            _pct(r.get("accuracy")),
            DASH if lo is None or hi is None else f"{100 * lo:.0f}–{100 * hi:.0f}",
            DASH if r.get("method") == "none" or _num(r.get("delta")) is None else f"{100 * r['delta']:+.1f}",
            DASH if r.get("method") == "none" else _p(r.get("mcnemar_p")),
            _pct(r.get("agreement"), 0),
            f"{frac:.0%}" if frac is not None else _si(r.get("flops_fastv")),
            _fixed(r.get("ttft_ms"), 1),
        )
    console.print(table)
