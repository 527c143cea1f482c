"""The speed plots of ``tokpress bench`` (PNG, through :mod:`tokpress.eval.plots`): TTFT vs retention with the
oracle, the stage breakdown, FLOPs vs retention; the reading rules are in :mod:`tokpress.eval.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokpress.eval.bench.records import (
    STAGE_LABELS,
    STAGES,
    _batch,
    _get,
    _method_label,
    _num,
    _ordered,
    _ratio_key,
    batches,
)
from tokpress.eval.plots import (
    UNCOMPRESSED_COLOR,
    dodge_offsets,
    legend_entries,
    method_styles,
    new_figure,
    outside_legend,
    pct_label,
    plot_kwargs,
    ratio_axis,
    save_figure,
    thin_tick_labels,
)

STAGE_COLORS = ("#8c8c8c", "#c7a76c", "#4c72b0", "#dd8452", "#55a868", "#8172b3")  # one per STAGES entry
MAX_FIG_HEIGHT_IN = 22.0  # the stage breakdown stops growing here


def _identical_groups(values: dict[str, list[tuple[float, float]]]) -> list[list[str]]:
    """Sets of >= 2 methods whose (x, y) points all look equal (y to 3 significant digits)."""
    seen: dict[tuple, list[str]] = {}
    for m, pts in values.items():
        key = tuple((round(x, 6), float(f"{y:.3g}")) for x, y in sorted(pts))
        seen.setdefault(key, []).append(m)
    return [ms for ms in seen.values() if len(ms) > 1]


# ----------------------------------------------------------------------------------------------- line panels


def _series(records: Sequence[dict[str, Any]], idx: list[int], field: str) -> dict[str, list[tuple[float, int]]]:
    """Method -> [(ratio, record index)] sorted by ratio, for rows other than "none" with a numeric ``field``."""
    out: dict[str, list[tuple[float, int]]] = {}
    for i in idx:
        r = records[i]
        if r.get("method") != "none" and _num(_get(r, field)) is not None:
            out.setdefault(str(r.get("method")), []).append((_ratio_key(r.get("ratio")), i))
    return {m: sorted(v) for m, v in out.items()}


def _baseline(records: Sequence[dict[str, Any]], idx: list[int], field: str) -> float | None:
    return next((_num(_get(records[i], field)) for i in idx if records[i].get("method") == "none"), None)


def _line_panel(
    ax: Any,
    records: Sequence[dict[str, Any]],
    idx: list[int],
    field: str,
    ylabel: str,
    title: str,
    styles: dict[str, dict[str, Any]],
    percent_of_baseline: bool = False,
) -> None:
    """Value vs retention (%) per method, dodged sideways; the uncompressed value as a grey horizontal line.

    ``percent_of_baseline``: plot values as % of the uncompressed row's value (when it has one).
    """
    series = _series(records, idx, field)
    base = _baseline(records, idx, field)
    scale = 100.0 / base if percent_of_baseline and base else None
    pct = sorted({round(100 * x, 6) for pts in series.values() for x, _ in pts})
    order = [m for m in styles if m in series]
    offsets = dodge_offsets(order, pct)
    plotted: dict[str, list[tuple[float, float]]] = {}
    hi_all: list[float] = []
    for method in order:
        points = series[method]
        xs = [100 * x + offsets[method] for x, _ in points]
        ys = [_num(_get(records[i], field)) * (scale or 1.0) for _, i in points]
        plotted[method] = [(x, y) for (x, _), y in zip(points, ys)]
        kw = plot_kwargs(styles[method]) | {"markersize": 6, "linewidth": 1.4, "alpha": 0.9}
        lo = [_num(_get(records[i], field.replace("median", "min"))) for _, i in points]
        hi = [_num(_get(records[i], field.replace("median", "max"))) for _, i in points]
        if field.endswith(".median") and all(v is not None for v in lo + hi):
            err = [[max(y - a, 0.0) for y, a in zip(ys, lo)], [max(b - y, 0.0) for y, b in zip(ys, hi)]]
            bars = ax.errorbar(xs, ys, yerr=err, capsize=2, elinewidth=0.7, **kw)
            for part in (*bars[1], *bars[2]):
                part.set_alpha(0.45)
            hi_all.extend(hi)
        else:
            ax.plot(xs, ys, **kw)
    if base is not None:
        ax.axhline(base * (scale or 1.0), color=UNCOMPRESSED_COLOR, linestyle=(0, (2, 2)), linewidth=1.2)
    if not series and base is None:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    ratio_axis(ax, [p / 100 for p in pct])
    if scale:
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    elif field.startswith("flops"):
        from matplotlib.ticker import EngFormatter

        ax.yaxis.set_major_formatter(EngFormatter(unit="FLOPs"))
    ax.set_ylabel(ylabel)
    top = max([base * (scale or 1.0) if base else 0.0, *(y for p in plotted.values() for _, y in p), *hi_all, 1e-9])
    ax.set_ylim(0, top * 1.08)
    same = [g for g in ([m for m in grp if m != "oracle"] for grp in _identical_groups(plotted)) if len(g) > 1]
    if same:
        first = same[0]
        more = f" +{len(first) - 2}" if len(first) > 2 else ""
        title += f"\nidentical: {', '.join(first[:2])}{more} (offset sideways)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def _references(base_label: str) -> list[tuple[Any, str]]:
    from matplotlib.lines import Line2D

    line = Line2D([], [], color=UNCOMPRESSED_COLOR, linestyle=(0, (2, 2)), linewidth=1.2)
    return [(line, base_label)]


def ttft_figure(records: Sequence[dict[str, Any]]) -> Any:
    """TTFT median (min–max bars) vs retention, one panel per model, legend at the right."""
    groups = _ordered(records)
    styles = method_styles(str(r.get("method")) for r in records)
    fig = new_figure(9.5, 4.4 * max(len(groups), 1))
    axes = fig.subplots(max(len(groups), 1), 1, squeeze=False)[:, 0]
    for ax, (model, idx) in zip(axes, groups.items()):
        _line_panel(ax, records, idx, "ttft_ms.median", "TTFT ms (median; bars min–max)", f"TTFT — {model}", styles)
    outside_legend(fig, *legend_entries(styles, _references("uncompressed")))
    thin_tick_labels(fig, axes)
    return fig


def flops_figure(records: Sequence[dict[str, Any]]) -> Any:
    """Prefill FLOPs (FastV convention and exact) as % of the uncompressed run vs retention, per model."""
    groups = _ordered(records)
    styles = method_styles(str(r.get("method")) for r in records)
    fig = new_figure(13, 4.4 * max(len(groups), 1))
    grid = fig.subplots(max(len(groups), 1), 2, squeeze=False)
    for axes, (model, idx) in zip(grid, groups.items()):
        for ax, field, name in ((axes[0], "flops_fastv", "FastV convention"), (axes[1], "flops_exact", "exact count")):
            has_base = _baseline(records, idx, field) is not None
            ylabel = "prefill FLOPs, % of uncompressed" if has_base else "prefill FLOPs"
            _line_panel(ax, records, idx, field, ylabel, f"FLOPs, {name} — {model}", styles, True)
    outside_legend(fig, *legend_entries(styles, _references("uncompressed (100 %)")))
    thin_tick_labels(fig, grid.ravel())
    return fig


# ------------------------------------------------------------------------------------------- stage breakdown


def _breakdown_panels(records: Sequence[dict[str, Any]], idx: list[int]) -> list[tuple[str, list[int]]]:
    """``[(panel title, record indices)]``: one panel per compressed ratio (descending), each led by the
    uncompressed row, then the oracle, then the methods; only the uncompressed row when nothing else ran."""
    base = [i for i in idx if records[i].get("method") == "none"]
    by_ratio: dict[float, list[int]] = {}
    for i in idx:
        if records[i].get("method") != "none":
            by_ratio.setdefault(_ratio_key(records[i].get("ratio")), []).append(i)
    if not by_ratio:
        return [("uncompressed", base)]
    return [(f"{pct_label(100 * r)} of video tokens kept", base + rows) for r, rows in by_ratio.items()]


def _stage_panel(ax: Any, records: Sequence[dict[str, Any]], rows: list[int], title: str, xmax: float) -> None:
    """Horizontal stacked bars of the stage medians, one row per record (top to bottom), the TTFT median as a
    black tick."""
    ys = list(range(len(rows)))
    left = [0.0] * len(rows)
    for stage, color in zip(STAGES, STAGE_COLORS):
        widths = [_num(_get(records[i], f"stages_ms.{stage}")) or 0.0 for i in rows]
        ax.barh(ys, widths, left=left, color=color, height=0.72)
        left = [a + w for a, w in zip(left, widths)]
    ttft = [(y, _num(_get(records[i], "ttft_ms.median"))) for y, i in zip(ys, rows)]
    pts = [(y, t) for y, t in ttft if t is not None]
    if pts:
        ax.scatter([t for _, t in pts], [y for y, _ in pts], marker="|", s=160, linewidths=2, color="black", zorder=3)
    ax.set_yticks(ys, [_method_label(records[i]) for i in rows], fontsize=8)
    for label, i in zip(ax.get_yticklabels(), rows):
        if records[i].get("method") in ("none", "oracle"):
            label.set_fontstyle("italic")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    ax.set_xlim(0, xmax)
    ax.set_xlabel("ms")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def stage_figure(records: Sequence[dict[str, Any]]) -> Any:
    """Stage breakdown: per model a row of panels, one per ratio (at most 3 a row), horizontal bars; the height
    grows with the rows of the tallest panel, capped at :data:`MAX_FIG_HEIGHT_IN`."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups = _ordered(records) or {"": []}
    layout = [(model, _breakdown_panels(records, idx)) for model, idx in groups.items()]
    cols = min(3, max(len(panels) for _, panels in layout))
    grid_rows = [math.ceil(len(panels) / cols) for _, panels in layout]
    tallest = max((len(rows) for _, panels in layout for _, rows in panels), default=1)
    height = min(MAX_FIG_HEIGHT_IN, sum(grid_rows) * (0.9 + 0.22 * tallest) + 0.8)
    fig = new_figure(3.9 * cols + 0.6, height)
    axes = fig.subplots(sum(grid_rows), cols, squeeze=False)
    row0 = 0
    for (model, panels), n_rows in zip(layout, grid_rows):
        totals = [
            max(
                sum(_num(_get(records[i], f"stages_ms.{s}")) or 0.0 for s in STAGES),
                _num(_get(records[i], "ttft_ms.median")) or 0.0,
            )
            for _, rows in panels
            for i in rows
        ]
        xmax = max([*totals, 1e-9]) * 1.05
        for k in range(n_rows * cols):
            ax = axes[row0 + k // cols, k % cols]
            if k >= len(panels):
                ax.set_axis_off()
                continue
            title, rows = panels[k]
            _stage_panel(ax, records, rows, f"{model} — {title}" if model else title, xmax)
        row0 += n_rows
    handles = [Patch(color=c) for c in STAGE_COLORS]
    handles.append(Line2D([], [], marker="|", color="black", linestyle="none", markersize=10, markeredgewidth=2))
    labels = [STAGE_LABELS[s] for s in STAGES] + ["TTFT median"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("TTFT by stage (medians, ms)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------- writing


def write_plots(records: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``ttft_vs_retention.png``, ``stage_breakdown.png`` and ``flops_vs_retention.png`` (panels per model).

    Uses matplotlib's object API on the Agg canvas: no pyplot, no window, the global backend is left alone.
    Raises ImportError without matplotlib. A batch sweep is plotted at its smallest batch size (the tables have
    every size).
    """
    import matplotlib  # noqa: F401  (ImportError without it)

    sizes = batches(records)
    if len(sizes) > 1:
        records = [r for r in records if _batch(r) == sizes[0]]

    out = Path(out_dir)
    paths = {name: out / name for name in ("ttft_vs_retention.png", "stage_breakdown.png", "flops_vs_retention.png")}
    for name, build in (
        ("ttft_vs_retention.png", ttft_figure),
        ("stage_breakdown.png", stage_figure),
        ("flops_vs_retention.png", flops_figure),
    ):
        save_figure(build(records), paths[name])
    return paths
