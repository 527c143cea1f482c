"""Plotting conventions shared by the figures of ``tokpress bench`` (:mod:`tokpress.eval.bench.figures`) and
``tokpress eval`` (:mod:`tokpress.eval.accuracy.figures`): matplotlib on an Agg canvas, pyplot and the global
backend untouched.

Reading rules shared by every figure (through :func:`method_styles`, :func:`outside_legend` and the axis helpers):

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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


def plot_kwargs(style: dict[str, Any]) -> dict[str, Any]:
    """A style of :func:`method_styles` as keyword arguments of ``plot`` / ``Line2D`` (``stage`` left out)."""
    return {k: v for k, v in style.items() if k != "stage"}


def legend_entries(styles: dict[str, dict[str, Any]], references: Sequence[tuple[Any, str]] = ()):
    """``(handles, labels)`` for a figure legend: the references first, then the methods under one header per
    stage (a header is an invisible handle with the stage's name and line style)."""
    from matplotlib.lines import Line2D

    handles, labels = [h for h, _ in references], [lab for _, lab in references]
    if "oracle" in styles:
        handles.append(Line2D([], [], **plot_kwargs(styles["oracle"])))
        labels.append("oracle (same tokens, no selection)")
    for stage, title in STAGE_TITLES.items():
        members = [m for m, s in styles.items() if s["stage"] == stage]
        if not members:
            continue
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(title)
        for m in members:
            handles.append(Line2D([], [], **plot_kwargs(styles[m])))
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


def pct_label(percent: float) -> str:
    """A retention in percent as a tick label (``12.5`` -> ``"12.5%"``)."""
    return f"{percent:.4g}%"


def ratio_axis(ax: Any, ratios: Sequence[float], label: str = "video tokens kept (retention)") -> None:
    """x axis in % of video tokens kept: a tick at each ratio run, limits = data range + 8 % of it each side."""
    pct = sorted({round(100 * r, 6) for r in ratios})
    if not pct:
        return
    lo, hi = pct[0], pct[-1]
    margin = 0.08 * (hi - lo) if hi > lo else max(2.0, 0.1 * hi)
    ax.set_xlim(lo - margin - _dodge_span(pct) / 2, hi + margin + _dodge_span(pct) / 2)
    ax.set_xticks(pct, [pct_label(p) for p in pct])
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


# ----------------------------------------------------------------------------------------------------------- saving


def save_figure(fig: Any, path: Path) -> None:
    """Render ``fig`` on the Agg canvas into ``path`` (PNG)."""
    fig.savefig(path, dpi=DPI)
