"""Result records of ``tokpress bench`` and the numbers derived from them (paired speed-ups, overhead, vision share,
FLOPs fractions), shared by the tables (:mod:`~tokpress.eval.bench.tables`), the files
(:mod:`~tokpress.eval.bench.report`) and the plots (:mod:`tokpress.eval.plots`).

A result record is a plain dict, one per model x method x ratio x batch. It holds::

    model, method ("none" | "oracle" | a method spec such as "fastv" or "evs+fastv"), ratio, batch, video_tokens,
    into_llm, tokens_per_layer, ttft_ms {median, min, max}, stages_ms {video_decode, preprocess, vision,
    compression, prefill, first_decode} (medians over rounds), rounds_ms {ttft, <stage>: [one value per round]},
    round_positions [place in each round's order], seed, ttft_clock, decode_tokens_per_s, peak_memory_mb,
    kv_cache_mb, flops_fastv, flops_exact, answer, same_answer, repeats (rounds)

Every field but ``model``, ``method``, ``ratio`` and ``ttft_ms`` may be missing or ``None`` (memory on a CPU, an
exact FLOPs count that was not computed, a record written before rounds existed, ...); it is then shown as "—" and
left out of the plots. A missing ``batch`` is 1.

Speed-ups are *paired per round*: rows of one run were measured in interleaved rounds (every row once per round), so
round ``k`` of a row is compared with round ``k`` of its reference — the uncompressed row (method ``"none"``) of the
same model and batch, and the oracle row of the same model, ratio and batch. The speed-up is the median over rounds
of ``TTFT_k(reference) / TTFT_k(row)`` with a seeded bootstrap percentile interval
(:mod:`~tokpress.eval.bench.paired`). Above 1 the row is faster; a speed-up vs the oracle below 1 is the cost of the
method's selection work (the oracle is fed the same number of tokens by a fixed index at zero cost). Records without
per-round values fall back to the ratio of the medians, with no interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokpress.eval.bench.paired import paired_ratios, point_only, summarise

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


def _batch(record: dict[str, Any] | None) -> int:
    value = _num((record or {}).get("batch"))
    return int(value) if value is not None else 1


def _rounds(record: dict[str, Any] | None, field: str) -> list[Any] | None:
    """The per-round values of ``field`` (``"ttft"`` or a stage), or ``None`` when the record has none."""
    values = _get(record or {}, f"rounds_ms.{field}")
    return list(values) if isinstance(values, (list, tuple)) and values else None


def _paired(
    num: dict[str, Any] | None, num_field: str, den: dict[str, Any] | None, den_field: str, scale: float = 1.0
) -> dict[str, Any] | None:
    """``scale * num[num_field] / den[den_field]`` paired per round (median, bootstrap interval); without per-round
    values in both records (or with different round counts), the ratio of their medians."""
    if num is None or den is None:
        return None
    a, b = _rounds(num, num_field), _rounds(den, den_field)
    if a is not None and b is not None and len(a) == len(b):
        seed = int(_num(den.get("seed")) or 0)
        return summarise(paired_ratios(a, b, scale), seed=seed)
    medians = [
        _num(_get(r, "ttft_ms.median" if f == "ttft" else f"stages_ms.{f}"))
        for r, f in ((num, num_field), (den, den_field))
    ]
    value = _ratio(*medians)
    return point_only(None if value is None else scale * value)


def derive(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per record (same order): paired speed-ups, TTFT vs the oracle, overhead, vision share and FLOPs fractions.

    Keys of each returned dict (``None`` where a number is missing); the first five are summaries
    ``{"median", "low", "high", "rounds"}`` of per-round values (:func:`~tokpress.eval.bench.paired.summarise`):

    * ``speedup_vs_none`` — ``TTFT(uncompressed) / TTFT(row)``, same model and batch;
    * ``speedup_vs_oracle`` — ``TTFT(oracle) / TTFT(row)``, same model, ratio and batch;
    * ``ttft_vs_oracle`` — ``TTFT(row) / TTFT(oracle)`` (the issue's target: <= 1.05);
    * ``overhead_pct`` — the row's compression stage as % of the oracle's TTFT;
    * ``vision_share_pct`` — the row's vision stage as % of its own TTFT;
    * ``flops_fastv_fraction``, ``flops_exact_fraction`` — of the uncompressed row (plain numbers).
    """
    base: dict[tuple[str, int], dict[str, Any]] = {}
    oracle: dict[tuple[str, float, int], dict[str, Any]] = {}
    for r in records:
        model = r.get("model", "")
        if r.get("method") == "none":
            base.setdefault((model, _batch(r)), r)
        elif r.get("method") == "oracle":
            oracle.setdefault((model, _ratio_key(r.get("ratio", 1.0)), _batch(r)), r)
    out = []
    for r in records:
        b = base.get((r.get("model", ""), _batch(r)))
        o = oracle.get((r.get("model", ""), _ratio_key(r.get("ratio", 1.0)), _batch(r)))
        out.append(
            {
                "speedup_vs_none": _paired(b, "ttft", r, "ttft"),
                "speedup_vs_oracle": _paired(o, "ttft", r, "ttft"),
                "ttft_vs_oracle": _paired(r, "ttft", o, "ttft"),
                "overhead_pct": _paired(r, "compression", o, "ttft", 100.0),
                "vision_share_pct": _paired(r, "vision", r, "ttft", 100.0),
                "flops_fastv_fraction": _ratio(_num(r.get("flops_fastv")), _num(b.get("flops_fastv")) if b else None),
                "flops_exact_fraction": _ratio(_num(r.get("flops_exact")), _num(b.get("flops_exact")) if b else None),
            }
        )
    return out


def median_of(summary: dict[str, Any] | None) -> float | None:
    """The point estimate of a :func:`derive` summary (``None`` for none)."""
    return None if summary is None else _num(summary.get("median"))


def batches(records: Sequence[dict[str, Any]]) -> list[int]:
    """The distinct batch sizes of ``records``, ascending."""
    return sorted({_batch(r) for r in records})


def _ordered(records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Record indices per model (first-seen order): by batch size, then uncompressed first, then by ratio
    descending, oracle first."""
    models: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        models.setdefault(str(r.get("model", "")), []).append(i)

    def key(i: int) -> tuple[int, int, float, int, int]:
        method = records[i].get("method")
        ratio = -_ratio_key(records[i].get("ratio", 1.0))
        return (_batch(records[i]), 0 if method == "none" else 1, ratio, method != "oracle", i)

    return {model: sorted(idx, key=key) for model, idx in models.items()}


def _method_label(record: dict[str, Any]) -> str:
    """The method as shown in tables and plots: ``"uncompressed"`` for ``"none"``."""
    method = str(record.get("method", "?"))
    return "uncompressed" if method == "none" else method
