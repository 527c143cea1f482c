"""Result records of ``tokpress bench`` and the numbers derived from them (speed-ups, overhead, FLOPs fractions),
shared by the tables (:mod:`~tokpress.eval.bench.tables`), the files (:mod:`~tokpress.eval.bench.report`) and the
plots (:mod:`tokpress.eval.plots`).

A result record is a plain dict, one per model x method x ratio. It holds::

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

import math
from collections.abc import Sequence
from typing import Any

STAGES = ("video_decode", "preprocess", "vision", "compression", "prefill", "first_decode")
STAGE_LABELS = {
    "video_decode": "video decode",
    "preprocess": "preprocess",
    "vision": "vision",
    "compression": "compression",
    "prefill": "prefill",
    "first_decode": "first decode",
}


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


def _method_label(record: dict[str, Any]) -> str:
    """The method as shown in tables and plots: ``"uncompressed"`` for ``"none"``."""
    method = str(record.get("method", "?"))
    return "uncompressed" if method == "none" else method
