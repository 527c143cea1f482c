"""Reports of ``tokpress bench``: ``results.json``, ``results.csv``, ``report.md``, PNG plots and a terminal table.

Input is a list of result records (plain dicts, one per model x method x ratio) and a free-form environment dict.
A record holds::

    model, method ("none" | "oracle" | a method spec such as "fastv" or "evs+fastv"), ratio, video_tokens, into_llm,
    tokens_per_layer, ttft_ms {median, min, max}, stages_ms {video_decode, preprocess, vision, compression, prefill,
    first_decode}, decode_tokens_per_s, peak_memory_mb, kv_cache_mb, flops_fastv, flops_exact, answer, same_answer,
    repeats

Every field but ``model``, ``method``, ``ratio`` and ``ttft_ms`` may be missing or ``None`` (memory on a CPU, an
exact FLOPs count that was not computed, ...); it is then shown as "—" and left out of the plots.

Speed-ups follow one rule: the speed-up of a row vs a reference row is ``TTFT(reference) / TTFT(row)`` on the
medians, against the uncompressed row (method ``"none"``) of the same model and the oracle row of the same model
and ratio. Above 1 the row is faster; a speed-up vs the oracle below 1 is the cost of the method's selection work
(the oracle is fed the same number of tokens by a fixed index at zero cost).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = ("video_decode", "preprocess", "vision", "compression", "prefill", "first_decode")
STAGE_LABELS = {
    "video_decode": "video decode",
    "preprocess": "preprocess",
    "vision": "vision",
    "compression": "compression",
    "prefill": "prefill",
    "first_decode": "first decode",
}
ENV_FIELDS = (  # (label, keys tried in order)
    ("Device", ("device",)),
    ("Driver", ("driver",)),
    ("CUDA", ("cuda", "cuda_version")),
    ("torch", ("torch",)),
    ("transformers", ("transformers",)),
    ("Attention implementation", ("attn", "attn_implementation", "attention")),
    ("dtype", ("dtype",)),
    ("Model", ("model",)),
    ("Video", ("video",)),
    ("Frames", ("frames",)),
)
DASH = "—"


# ---------------------------------------------------------------------------------------------- derived numbers


def _get(record: dict[str, Any], dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``; ``None`` where any level is missing or not a dict."""
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _num(value: Any) -> float | None:
    """``value`` as a finite float, else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _ratio_key(ratio: Any) -> float:
    return round(float(ratio if ratio is not None else 1.0), 6)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def derive(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per record (same order): speed-ups vs the uncompressed and the oracle rows, overhead % and FLOPs fractions.

    Keys of each returned dict (``None`` where a number is missing): ``speedup_vs_none``, ``speedup_vs_oracle``,
    ``compression_overhead_pct``, ``flops_fastv_fraction``, ``flops_exact_fraction``.
    """
    base: dict[str, dict[str, Any]] = {}
    oracle: dict[tuple[str, float], dict[str, Any]] = {}
    for r in records:
        if r.get("method") == "none":
            base.setdefault(r.get("model", ""), r)
        elif r.get("method") == "oracle":
            oracle.setdefault((r.get("model", ""), _ratio_key(r.get("ratio", 1.0))), r)
    out = []
    for r in records:
        ttft = _num(_get(r, "ttft_ms.median"))
        b = base.get(r.get("model", ""))
        o = oracle.get((r.get("model", ""), _ratio_key(r.get("ratio", 1.0))))
        compression = _num(_get(r, "stages_ms.compression"))
        out.append(
            {
                "speedup_vs_none": _ratio(_num(_get(b, "ttft_ms.median")) if b else None, ttft),
                "speedup_vs_oracle": _ratio(_num(_get(o, "ttft_ms.median")) if o else None, ttft),
                "compression_overhead_pct": None if compression is None or not ttft else 100.0 * compression / ttft,
                "flops_fastv_fraction": _ratio(_num(r.get("flops_fastv")), _num(b.get("flops_fastv")) if b else None),
                "flops_exact_fraction": _ratio(_num(r.get("flops_exact")), _num(b.get("flops_exact")) if b else None),
            }
        )
    return out


def _ordered(records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Record indices per model (first-seen order): uncompressed first, then by ratio descending, oracle first."""
    models: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        models.setdefault(str(r.get("model", "")), []).append(i)

    def key(i: int) -> tuple[int, float, int, int]:
        method = records[i].get("method")
        return (0 if method == "none" else 1, -_ratio_key(records[i].get("ratio", 1.0)), method != "oracle", i)

    return {model: sorted(idx, key=key) for model, idx in models.items()}


# -------------------------------------------------------------------------------------------------- formatting


def _ms(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _x(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}×"


def _si(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f}"


def _flops(value: Any, fraction: float | None) -> str:
    text = _si(value)
    return text if fraction is None or text == DASH else f"{text} ({fraction:.0%})"


def _fixed(value: Any, digits: int = 0) -> str:
    v = _num(value)
    return DASH if v is None else f"{v:.{digits}f}"


def _yes_no(value: Any) -> str:
    return DASH if value is None else "yes" if value else "no"


def _ttft(record: dict[str, Any]) -> str:
    median, lo, hi = (_get(record, f"ttft_ms.{k}") for k in ("median", "min", "max"))
    if _num(lo) is None or _num(hi) is None:
        return _ms(median)
    return f"{_ms(median)} [{_ms(lo)}–{_ms(hi)}]"


def _tokens(record: dict[str, Any]) -> str:
    video, into = record.get("video_tokens"), record.get("into_llm")
    if into is None:
        return DASH if video is None else str(video)
    return str(into) if video is None else f"{video} → {into}"


def _stages(record: dict[str, Any]) -> str:
    return " / ".join(_ms(_get(record, f"stages_ms.{s}")) for s in STAGES)


def _method_label(record: dict[str, Any]) -> str:
    method = str(record.get("method", "?"))
    return "uncompressed" if method == "none" else method


# ------------------------------------------------------------------------------------------------------ files


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
    """``results.json``: ``{"command", "created", "environment", "records"}``."""
    payload = {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "records": list(records),
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


def _md_row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


MD_COLUMNS = (
    "method",
    "ratio",
    "video tokens → LLM",
    "TTFT ms median [min–max]",
    "speed-up vs uncompressed",
    "speed-up vs oracle",
    "stages ms: decode / preprocess / vision / compression / prefill / first decode",
    "compression % of TTFT",
    "FLOPs (FastV)",
    "FLOPs (exact)",
    "peak memory MB",
    "KV cache MB",
    "decode tok/s",
    "same answer",
)


_FRAMES_IN_TEXT = re.compile(r"\b(\d+) frames?\b")


def frames_of(environment: dict[str, Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """The frame count a run used when the environment has no ``frames`` entry: ``num_frames`` there, else the
    records' ``frames`` (or ``num_frames``) field, else an "N frames" in the video's description; else "—"."""
    if environment.get("num_frames") not in (None, ""):
        return str(environment["num_frames"])
    counts = {str(r.get(k)) for r in records for k in ("frames", "num_frames") if _num(r.get(k)) is not None}
    if counts:
        return ", ".join(sorted(counts, key=float))
    match = _FRAMES_IN_TEXT.search(str(environment.get("video") or ""))
    return match.group(1) if match else DASH


def environment_lines(
    environment: dict[str, Any], cpu_prefix: str, records: Sequence[dict[str, Any]] = ()
) -> list[str]:
    """The ``## Environment`` section: known fields first, then the rest; a caveat when timed on a CPU.

    ``records``: the run's result records, read for the frame count when the environment lacks one."""
    lines = ["## Environment", "", "| | |", "|---|---|"]
    used: set[str] = set()
    for label, keys in ENV_FIELDS:
        value = next((environment[k] for k in keys if environment.get(k) not in (None, "")), DASH)
        if label == "Frames" and value == DASH:
            value = frames_of(environment, records)
        used.update(keys)
        lines.append(_md_row([label, value]))
    lines += [_md_row([k, v]) for k, v in environment.items() if k not in used]
    device = str(environment.get("device", "")).lower()
    if not device or "cpu" in device:
        lines += ["", f"> {cpu_prefix} a CPU: compare rows of this run as ratios; absolute times need a GPU."]
    return lines


def render_markdown(records: Sequence[dict[str, Any]], environment: dict[str, Any], command: str) -> str:
    """The text of ``report.md``: an environment table, then one results table per model."""
    lines = ["# tokpress bench", "", f"Command: `{command}`", ""]
    lines += environment_lines(environment, "Timings come from", records)
    derived = derive(records)
    for model, idx in _ordered(records).items():
        lines += ["", f"## {model or 'model'}", "", _md_row(MD_COLUMNS), _md_row(["---"] * len(MD_COLUMNS))]
        for i in idx:
            r, d = records[i], derived[i]
            lines.append(
                _md_row(
                    [
                        _method_label(r),
                        _fixed(r.get("ratio"), 2),
                        _tokens(r),
                        _ttft(r),
                        _x(d["speedup_vs_none"]),
                        _x(d["speedup_vs_oracle"]),
                        _stages(r),
                        _fixed(d["compression_overhead_pct"], 1),
                        _flops(r.get("flops_fastv"), d["flops_fastv_fraction"]),
                        _flops(r.get("flops_exact"), d["flops_exact_fraction"]),
                        _fixed(r.get("peak_memory_mb")),
                        _fixed(r.get("kv_cache_mb"), 1),
                        _fixed(r.get("decode_tokens_per_s"), 1),
                        _yes_no(r.get("same_answer")),
                    ]
                )
            )
    lines += [
        "",
        "Speed-up of a row vs a reference = TTFT(reference) / TTFT(row), medians; the oracle is the unmodified model "
        "fed the same number of video tokens by a fixed index with zero selection cost. FLOPs are prefill FLOPs, "
        "in parentheses as a fraction of the uncompressed run. Stage times are medians and need not add up to the "
        "TTFT median.",
        "",
    ]
    return "\n".join(lines)


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
            from tokpress.eval.plots import write_plots

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
    table = Table(title=title or "tokpress bench", title_justify="left")
    columns = [
        "method",
        "ratio",
        "tokens",
        "TTFT ms",
        "× none",
        "× oracle",
        "cmp %",
        "FLOPs",
        "mem MB",
        "tok/s",
        "same",
    ]
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
                _x(d["speedup_vs_none"]),
                _x(d["speedup_vs_oracle"]),
                _fixed(d["compression_overhead_pct"], 1),
                f"{frac:.0%}" if frac is not None else _si(r.get("flops_fastv")),
                _fixed(r.get("peak_memory_mb")),
                _fixed(r.get("decode_tokens_per_s"), 1),
                _yes_no(r.get("same_answer")),
            ]
            table.add_row(*([model] if len(groups) > 1 else []), *row)
        if len(groups) > 1:
            table.add_section()
    console.print(table)
