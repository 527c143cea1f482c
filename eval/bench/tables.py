"""The text of ``tokpress bench`` results: cell formatting and the Markdown of ``report.md``.

Records follow the schema of :mod:`~tokpress.eval.bench.records`; a missing number is shown as :data:`DASH`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tokpress.eval.bench.records import STAGES, _get, _method_label, _num, _ordered, derive

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
