"""The text of ``tokpress bench`` results: cell formatting and the Markdown of ``report.md``.

Records follow the schema of :mod:`~tokpress.eval.bench.records`; a missing number is shown as :data:`DASH`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tokpress.eval.bench.records import STAGES, _batch, _get, _method_label, _num, _ordered, batches, derive, median_of

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


# -------------------------------------------------------------------------------------------------- formatting


def _ms(value: Any) -> str:
    v = _num(value)
    if v is None:
        return DASH
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def _x(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}×"


def _x_ci(summary: dict[str, Any] | None) -> str:
    """A paired speed-up: ``"2.00× [1.85–2.10]"`` (median of per-round ratios, bootstrap interval) or ``"2.00×"``."""
    point = median_of(summary)
    if point is None:
        return DASH
    low, high = _num(summary.get("low")), _num(summary.get("high"))
    return f"{point:.2f}×" if low is None or high is None else f"{point:.2f}× [{low:.2f}–{high:.2f}]"


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


# -------------------------------------------------------------------------------------------------------- markdown


def _md_row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


MD_COLUMNS = (
    "method",
    "ratio",
    "video tokens → LLM",
    "TTFT ms median [min–max]",
    "speed-up vs uncompressed [95% CI]",
    "speed-up vs oracle [95% CI]",
    "TTFT / oracle",
    "stages ms: decode / preprocess / vision / compression / prefill / first decode",
    "overhead % of oracle TTFT",
    "vision % of TTFT",
    "FLOPs (FastV)",
    "FLOPs (exact)",
    "peak memory MB",
    "KV cache MB",
    "decode tok/s",
    "same answer",
)
SPEEDUP_NOTE = (
    "Rows run in interleaved rounds (each round measures every row once, in a fresh shuffled order), so a burst of "
    "load hits all rows alike. Speed-ups are paired per round: the median over rounds of TTFT(reference) / "
    "TTFT(row) in the same round, against the uncompressed row and the oracle of the same ratio (same batch size), "
    "with a 95 % bootstrap percentile interval over rounds; TTFT / oracle is the median of TTFT(row) / TTFT(oracle) "
    "(target <= 1.05). Overhead: the row's compression stage as % of the oracle's TTFT (paired per round); vision: "
    "the vision stage as % of the row's own TTFT."
)


def _columns(with_batch: bool) -> tuple[str, ...]:
    return (MD_COLUMNS[0], "batch", *MD_COLUMNS[1:]) if with_batch else MD_COLUMNS


def _pct(summary: dict[str, Any] | None, digits: int = 1) -> str:
    return _fixed(median_of(summary), digits)


def _ratio_to_oracle(summary: dict[str, Any] | None) -> str:
    return _fixed(median_of(summary), 2)


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
    with_batch = len(batches(records)) > 1
    columns = _columns(with_batch)
    for model, idx in _ordered(records).items():
        lines += ["", f"## {model or 'model'}", "", _md_row(columns), _md_row(["---"] * len(columns))]
        for i in idx:
            r, d = records[i], derived[i]
            cells = [
                _method_label(r),
                _fixed(r.get("ratio"), 2),
                _tokens(r),
                _ttft(r),
                _x_ci(d["speedup_vs_none"]),
                _x_ci(d["speedup_vs_oracle"]),
                _ratio_to_oracle(d["ttft_vs_oracle"]),
                _stages(r),
                _pct(d["overhead_pct"]),
                _pct(d["vision_share_pct"], 0),
                _flops(r.get("flops_fastv"), d["flops_fastv_fraction"]),
                _flops(r.get("flops_exact"), d["flops_exact_fraction"]),
                _fixed(r.get("peak_memory_mb")),
                _fixed(r.get("kv_cache_mb"), 1),
                _fixed(r.get("decode_tokens_per_s"), 1),
                _yes_no(r.get("same_answer")),
            ]
            if with_batch:
                cells.insert(1, str(_batch(r)))
            lines.append(_md_row(cells))
    lines += [
        "",
        SPEEDUP_NOTE + " The oracle is the unmodified model fed the same number of video tokens by a fixed index "
        "with zero selection cost. FLOPs are prefill FLOPs, in parentheses as a fraction of the uncompressed run. "
        "Stage times are medians over rounds and need not add up to the TTFT median.",
        "",
    ]
    return "\n".join(lines)
