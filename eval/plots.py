"""PNG plots of ``tokpress bench`` results (matplotlib, Agg canvas; pyplot and the global backend are untouched):
TTFT vs retention with the oracle, the stage breakdown, FLOPs vs retention.

Reading rules shared by every figure (also used by the eval plots through :func:`method_styles`):

* one style per method — colour, marker and line style together are unique; the line style says the stage
  (outer solid, inner dashed, outer+inner dash-dot), the oracle is black dotted with squares;
* the legend sits outside the data area (right of the panels), grouped by stage;
* retention axes are in % with a tick at each ratio that was run, limits fitted to the data; tick labels that
  would overlap are thinned after layout;
* points of different methods are offset sideways around their ratio, so identical values (e.g. the equal
  FLOPs of every outer method at a ratio) stay visible; the panel title says when values are identical;
* the stage breakdown is horizontal bars, one panel per ratio, its height growing with the rows up to a cap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokpress.eval.bench.report import STAGE_LABELS, STAGES, _get, _method_label, _num, _ordered, _ratio_key

logger = logging.getLogger(__name__)

#: Nine strong, mutually distinct hues (matplotlib's tab10 without its grey, which marks the uncompressed run).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
#: Ten marker shapes: 9 colours x 10 markers repeat only after 90 methods (9 and 10 are coprime).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
STAGE_LINESTYLES = {"outer": "-", "inner": "--", "outer+inner": "-.", "other": (0, (1, 1))}
STAGE_TITLES = {
    "outer": "outer (solid)",
    "inner": "inner (dashed)",
    "outer+inner": "outer + inner (dash-dot)",
    "other": "other",
}
ORACLE_STYLE = {"color": "black", "marker": "s", "linestyle": ":", "markerfacecolor": "white"}
UNCOMPRESSED_COLOR = "#7f7f7f"
STAGE_COLORS = ("#8c8c8c", "#c7a76c", "#4c72b0", "#dd8452", "#55a868", "#8172b3")  # one per STAGES entry
MAX_FIG_HEIGHT_IN = 22.0  # the stage breakdown stops growing here
DPI = 110


# ----------------------------------------------------------------------------------------------------- styles


def new_figure(width: float, height: float) -> Any:
    """A constrained-layout Figure on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def method_stage(method: str) -> str:
    """``"outer"``, ``"inner"``, ``"outer+inner"`` or ``"other"`` for a method spec (``"fastv"``, ``"evs+fastv"``,
    a preset name); ``"reference"`` for ``"none"`` and ``"oracle"``."""
    if method in ("none", "oracle"):
        return "reference"
    if "+" in method:
        return "outer+inner"
    try:
        from tokpress.registry import get_preset

        preset = get_preset(method)
    except Exception:  # an unknown or unloadable name still gets a style
        return "other"
    if preset.outer and preset.inner:
        return "outer+inner"
    return "outer" if preset.outer else "inner" if preset.inner else "other"


def method_styles(methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Method -> ``{color, marker, linestyle, stage}``; unique (colour, marker, line style) per method.

    Methods are ordered by stage (outer, inner, outer+inner, other; first-seen order inside a stage) and take
    colour ``i % 9`` and marker ``i % 10`` of that order; the line style is the stage's. ``"oracle"`` is black
    dotted with hollow squares; ``"none"`` is left out (it is drawn as a grey reference line).
    """
    names = [m for m in dict.fromkeys(str(m) for m in methods) if m != "none"]
    stages = {m: method_stage(m) for m in names}
    order = [m for s in STAGE_LINESTYLES for m in names if stages[m] == s]
    out: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(order):
        style = {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}
        out[m] = style | {"linestyle": STAGE_LINESTYLES[stages[m]], "stage": stages[m]}
    if "oracle" in names:
        out["oracle"] = ORACLE_STYLE | {"stage": "reference"}
    return out


def _plot_kw(style: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in style.items() if k != "stage"}


def legend_entries(styles: dict[str, dict[str, Any]], references: Sequence[tuple[Any, str]] = ()):
    """``(handles, labels)`` for a figure legend: the references first, then the methods under one header per
    stage (a header is an invisible handle with the stage's name and line style)."""
    from matplotlib.lines import Line2D

    handles, labels = [h for h, _ in references], [lab for _, lab in references]
    if "oracle" in styles:
        handles.append(Line2D([], [], **_plot_kw(styles["oracle"])))
        labels.append("oracle (same tokens, no selection)")
    for stage, title in STAGE_TITLES.items():
        members = [m for m, s in styles.items() if s["stage"] == stage]
        if not members:
            continue
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(title)
        for m in members:
            handles.append(Line2D([], [], **_plot_kw(styles[m])))
            labels.append(m)
    return handles, labels


def outside_legend(fig: Any, handles: list, labels: list) -> Any:
    """A legend right of every panel (constrained layout makes room for it); stage headers in bold."""
    if not handles:
        return None
    ncol = 1 if len(handles) <= 24 else 2
    legend = fig.legend(handles, labels, loc="outside right upper", fontsize=8, ncol=ncol, frameon=False)
    for text in legend.get_texts():
        if text.get_text() in STAGE_TITLES.values():
            text.set_fontweight("bold")
    return legend


# ------------------------------------------------------------------------------------------------------- axes


def _pct_label(percent: float) -> str:
    return f"{percent:.4g}%"


def ratio_axis(ax: Any, ratios: Sequence[float], label: str = "video tokens kept (retention)") -> None:
    """x axis in % of video tokens kept: a tick at each ratio run, limits = data range + 8 % of it each side."""
    pct = sorted({round(100 * r, 6) for r in ratios})
    if not pct:
        return
    lo, hi = pct[0], pct[-1]
    margin = 0.08 * (hi - lo) if hi > lo else max(2.0, 0.1 * hi)
    ax.set_xlim(lo - margin - _dodge_span(pct) / 2, hi + margin + _dodge_span(pct) / 2)
    ax.set_xticks(pct, [_pct_label(p) for p in pct])
    ax.set_xlabel(label)


def _dodge_span(pct: Sequence[float]) -> float:
    """Total sideways spread (in x units) of the points at one ratio: 40 % of the smallest gap between ratios."""
    gaps = [b - a for a, b in zip(pct, pct[1:]) if b - a > 1e-9]
    return 0.4 * min(gaps) if gaps else 0.04 * max(pct[-1], 1.0) if pct else 0.0


def dodge_offsets(methods: Sequence[str], pct: Sequence[float]) -> dict[str, float]:
    """Method -> x offset, spread symmetrically over :func:`_dodge_span` (0 for a single method)."""
    n = len(methods)
    if n <= 1:
        return dict.fromkeys(methods, 0.0)
    step = _dodge_span(sorted(set(pct))) / (n - 1)
    return {m: (k - (n - 1) / 2) * step for k, m in enumerate(methods)}


def thin_tick_labels(fig: Any, axes: Iterable[Any]) -> None:
    """Hide x tick labels that would overlap a label already kept (left to right), after a draw of ``fig``."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        kept = None
        for text in sorted(ax.get_xticklabels(), key=lambda t: t.get_position()[0]):
            if not text.get_visible() or not text.get_text():
                continue
            box = text.get_window_extent(renderer)
            if kept is not None and box.x0 < kept.x1 + 2:
                text.set_visible(False)
            else:
                kept = box


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
        kw = _plot_kw(styles[method]) | {"markersize": 6, "linewidth": 1.4, "alpha": 0.9}
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
    return [(f"{_pct_label(100 * r)} of video tokens kept", base + rows) for r, rows in by_ratio.items()]


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


def save_figure(fig: Any, path: Path) -> None:
    """Render ``fig`` on the Agg canvas into ``path`` (PNG)."""
    fig.savefig(path, dpi=DPI)


def write_plots(records: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``ttft_vs_retention.png``, ``stage_breakdown.png`` and ``flops_vs_retention.png`` (panels per model).

    Uses matplotlib's object API on the Agg canvas: no pyplot, no window, the global backend is left alone.
    Raises ImportError without matplotlib.
    """
    import matplotlib  # noqa: F401  (ImportError without it)

    out = Path(out_dir)
    paths = {name: out / name for name in ("ttft_vs_retention.png", "stage_breakdown.png", "flops_vs_retention.png")}
    for name, build in (
        ("ttft_vs_retention.png", ttft_figure),
        ("stage_breakdown.png", stage_figure),
        ("flops_vs_retention.png", flops_figure),
    ):
        save_figure(build(records), paths[name])
    return paths
