"""Selection and formatting of ``tokpress eval`` summary records, and the compact tables: ``table.md``
(:func:`render_task_table`) and the terminal one (:func:`print_eval_table`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokpress.eval.bench.records import _num, _ratio_key
from tokpress.eval.bench.tables import DASH, _fixed, _md_row, _si

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
    """Task families of the summary records, in first-seen order (without ``"all"`` and facet rows)."""
    return list(
        dict.fromkeys(
            r["task"] for r in records if r.get("kind") == "summary" and r.get("task") != "all" and not r.get("facet")
        )
    )


def facets_of(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Facet -> its rows' ``task`` values (e.g. ``{"duration": ["duration=short", ...]}``), first-seen order."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r.get("kind") == "summary" and r.get("facet"):
            values = out.setdefault(r["facet"], [])
            if r["task"] not in values:
                values.append(r["task"])
    return out


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
