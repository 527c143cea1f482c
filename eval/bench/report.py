"""Outputs of ``tokpress bench``: ``results.json``, ``results.csv``, ``report.md``, PNG plots and a terminal table.

Input is a list of result records (plain dicts, one per model x method x ratio; schema and derived numbers in
:mod:`~tokpress.eval.bench.records`) and a free-form environment dict. The Markdown and the cell formatting come
from :mod:`~tokpress.eval.bench.tables`, the plots from :mod:`tokpress.eval.plots`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokpress.eval.bench.records import _batch, _get, _method_label, _ordered, batches, derive
from tokpress.eval.bench.tables import (
    SPEEDUP_NOTE,
    _fixed,
    _ms,
    _pct,
    _ratio_to_oracle,
    _si,
    _tokens,
    _x_ci,
    _yes_no,
    render_markdown,
)

logger = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/inf become ``None``, numpy/torch scalars and paths become numbers/strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    return str(value)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dicts flattened with dotted names; lists kept as one JSON string cell; ``None`` as an empty cell."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = "" if value is None else value
    return out


def write_json(path: Path, records: Sequence[dict[str, Any]], environment: dict[str, Any], command: str) -> None:
    """``results.json``: ``{"command", "created", "environment", "speedups", "records"}``; each record carries its
    :func:`~tokpress.eval.bench.records.derive` numbers under ``"derived"`` (paired speed-ups with their intervals,
    TTFT vs the oracle, overhead, vision share, FLOPs fractions); ``"speedups"`` says how they were computed."""
    payload = {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "speedups": SPEEDUP_NOTE,
        "records": [dict(r) | {"derived": d} for r, d in zip(records, derive(records))],
    }
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """``results.csv``: one row per record, nested fields as dotted columns plus ``derived.*`` columns."""
    rows = [_flatten(_jsonable(r)) | _flatten(_jsonable(d), "derived.") for r, d in zip(records, derive(records))]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_report(
    records: Sequence[dict[str, Any]],
    environment: dict[str, Any],
    out_dir: str | Path,
    *,
    command: str | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``report.md`` and (with matplotlib) the PNG plots into ``out_dir``.

    Args:
        records: result records (schema in the module docstring).
        environment: free-form strings (device, driver, cuda, torch, transformers, attn, dtype, model, video, ...).
        out_dir: created if missing; existing files of the same names are overwritten.
        command: the command line to record; default: this process's ``sys.argv``.
        plots: also write ``ttft_vs_retention.png``, ``stage_breakdown.png`` and ``flops_vs_retention.png``.

    Returns:
        Name -> path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command if command is not None else shlex.join(sys.argv)
    written = {name: out / name for name in ("results.json", "results.csv", "report.md")}
    write_json(written["results.json"], records, environment, command)
    write_csv(written["results.csv"], records)
    written["report.md"].write_text(render_markdown(records, environment, command), encoding="utf-8")
    if plots:
        try:
            from tokpress.eval.bench.figures import write_plots

            written.update(write_plots(records, out))
        except ImportError:
            logger.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
    logger.info("report written to %s", out)
    return written


def print_table(records: Sequence[dict[str, Any]], console: Any, title: str | None = None) -> None:
    """A compact rich table of ``records`` on ``console`` (a ``rich.console.Console``)."""
    from rich.table import Table

    derived = derive(records)
    groups = _ordered(records)
    with_batch = len(batches(records)) > 1
    table = Table(title=title or "tokpress bench", title_justify="left", caption=SPEEDUP_NOTE, caption_justify="left")
    columns = [
        "method",
        "ratio",
        "tokens",
        "TTFT ms",
        "× none [95% CI]",
        "× oracle [95% CI]",
        "/ oracle",
        "ovh %",
        "vis %",
        "FLOPs",
        "mem MB",
        "tok/s",
        "same",
    ]
    if with_batch:
        columns.insert(1, "batch")
    if len(groups) > 1:
        columns.insert(0, "model")
    for col in columns:
        table.add_column(col, justify="left" if col in ("model", "method") else "right", no_wrap=True)
    for model, idx in groups.items():
        for i in idx:
            r, d = records[i], derived[i]
            frac = d["flops_fastv_fraction"]
            row = [
                _method_label(r),
                _fixed(r.get("ratio"), 2),
                _tokens(r),
                _ms(_get(r, "ttft_ms.median")),
                _x_ci(d["speedup_vs_none"]),
                _x_ci(d["speedup_vs_oracle"]),
                _ratio_to_oracle(d["ttft_vs_oracle"]),
                _pct(d["overhead_pct"]),
                _pct(d["vision_share_pct"], 0),
                f"{frac:.0%}" if frac is not None else _si(r.get("flops_fastv")),
                _fixed(r.get("peak_memory_mb")),
                _fixed(r.get("decode_tokens_per_s"), 1),
                _yes_no(r.get("same_answer")),
            ]
            if with_batch:
                row.insert(1, str(_batch(r)))
            table.add_row(*([model] if len(groups) > 1 else []), *row)
        if len(groups) > 1:
            table.add_section()
    console.print(table)
