"""PNG plots of ``tokpress eval``: accuracy vs retention per method (overall and per task family), and the Pareto
views accuracy vs FLOPs and vs TTFT. matplotlib's object API on the Agg canvas (no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokpress.eval import plots
from tokpress.eval.accuracy.tables import summaries, tasks_of
from tokpress.eval.bench.records import _num, _ratio_key

PLOT_FILES = ("accuracy_vs_retention.png", "accuracy_vs_flops.png", "accuracy_vs_ttft.png")


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
