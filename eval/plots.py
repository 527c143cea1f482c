"""PNG plots of ``tokpress bench`` results (matplotlib, Agg canvas; pyplot and the global backend are untouched):
TTFT vs retention with the oracle, the stage breakdown, FLOPs vs retention."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokpress.eval.report import (
    STAGE_LABELS,
    STAGES,
    _fixed,
    _get,
    _method_label,
    _num,
    _ordered,
    _ratio_key,
)

logger = logging.getLogger(__name__)


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


def _method_colors(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One colour per compression method, the same in every panel and figure."""
    from matplotlib import colormaps

    methods = dict.fromkeys(str(r.get("method")) for r in records if r.get("method") not in ("none", "oracle"))
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)} | {"oracle": "black"}


def _line_panel(ax: Any, records: Sequence[dict[str, Any]], idx: list[int], field: str, ylabel: str, title: str):
    """Value vs retention per method; oracle dashed; the uncompressed value as a horizontal line."""
    colors = _method_colors(records)
    series = _series(records, idx, field)
    for method, points in series.items():
        xs = [p[0] for p in points]
        ys = [_num(_get(records[i], field)) for _, i in points]
        style = dict(color=colors[method], linestyle="--" if method == "oracle" else "-")
        style["marker"] = "s" if method == "oracle" else "o"
        if field == "ttft_ms.median":
            lo = [_num(_get(records[i], "ttft_ms.min")) for _, i in points]
            hi = [_num(_get(records[i], "ttft_ms.max")) for _, i in points]
            if all(v is not None for v in lo + hi):
                err = [[max(y - a, 0.0) for y, a in zip(ys, lo)], [max(b - y, 0.0) for y, b in zip(ys, hi)]]
                ax.errorbar(xs, ys, yerr=err, capsize=3, label=method, **style)
                continue
        ax.plot(xs, ys, label=method, **style)
    base = _baseline(records, idx, field)
    if base is not None:
        ax.axhline(base, color="grey", linestyle=":", label="uncompressed")
    if not series and base is None:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    if field.startswith("flops"):
        from matplotlib.ticker import EngFormatter

        ax.yaxis.set_major_formatter(EngFormatter(unit="FLOPs"))
    ax.set_xlabel("retention ratio (video tokens kept)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1.05)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _stage_panel(ax: Any, records: Sequence[dict[str, Any]], idx: list[int], title: str) -> None:
    """Stacked bars of the stage medians per (method, ratio), with the TTFT median as a black tick."""
    labels = [
        _method_label(records[i])
        if records[i].get("method") == "none"
        else f"{records[i].get('method')}\n@{_fixed(records[i].get('ratio'), 2)}"
        for i in idx
    ]
    xs = list(range(len(idx)))
    bottom = [0.0] * len(idx)
    colors = ("#8c8c8c", "#c7a76c", "#4c72b0", "#dd8452", "#55a868", "#8172b3")
    for stage, color in zip(STAGES, colors):
        heights = [_num(_get(records[i], f"stages_ms.{stage}")) or 0.0 for i in idx]
        ax.bar(xs, heights, bottom=bottom, color=color, label=STAGE_LABELS[stage], width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ttft = [_num(_get(records[i], "ttft_ms.median")) for i in idx]
    pts = [(x, t) for x, t in zip(xs, ttft) if t is not None]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="_", s=400, color="black", label="TTFT median")
    ax.set_xticks(xs, labels, fontsize=7, rotation=45 if len(idx) > 8 else 0)
    ax.set_ylabel("ms")
    ax.set_ylim(0, max([*bottom, *(t for t in ttft if t is not None), 1e-9]) * 1.3)  # headroom for the legend
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4)


def write_plots(records: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """``ttft_vs_retention.png``, ``stage_breakdown.png`` and ``flops_vs_retention.png`` (one row per model).

    Uses matplotlib's object API on the Agg canvas: no pyplot, no window, the global backend is left alone.
    Raises ImportError without matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    groups = _ordered(records)
    rows = max(len(groups), 1)
    paths = {name: out / name for name in ("ttft_vs_retention.png", "stage_breakdown.png", "flops_vs_retention.png")}

    def save(fig: Figure, path: Path) -> None:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    fig = Figure(figsize=(6.5, 4.2 * rows))
    for ax, (model, idx) in zip(fig.subplots(rows, 1, squeeze=False)[:, 0], groups.items()):
        _line_panel(ax, records, idx, "ttft_ms.median", "TTFT ms (median, min–max)", f"TTFT — {model}")
    save(fig, paths["ttft_vs_retention.png"])

    widest = max((len(idx) for idx in groups.values()), default=1)
    fig = Figure(figsize=(max(6.5, 0.8 * widest + 2), 4.5 * rows))
    for ax, (model, idx) in zip(fig.subplots(rows, 1, squeeze=False)[:, 0], groups.items()):
        _stage_panel(ax, records, idx, f"TTFT stages — {model}")
    save(fig, paths["stage_breakdown.png"])

    fig = Figure(figsize=(11, 4.2 * rows))
    for axes, (model, idx) in zip(fig.subplots(rows, 2, squeeze=False), groups.items()):
        _line_panel(axes[0], records, idx, "flops_fastv", "prefill FLOPs", f"FLOPs, FastV convention — {model}")
        _line_panel(axes[1], records, idx, "flops_exact", "prefill FLOPs", f"FLOPs, exact count — {model}")
    save(fig, paths["flops_vs_retention.png"])
    return paths


# ------------------------------------------------------------------------------------------------------ terminal
