"""``kind="summary"`` records of ``tokpress eval``: accuracy with CIs, the paired statistics against the
uncompressed model and the cost, per method x ratio x task family (plus ``"all"``), and per facet value (e.g.
Video-MME's video duration)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from tokpress.eval.accuracy.stats import EXACT_BELOW, agreement, bootstrap_ci, mcnemar, mcnemar_test_name


def _mean(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _median(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return statistics.median(got) if got else None


def facet_task(facet: str, value: str) -> str:
    """The ``task`` of a facet summary row: ``"duration=short"``."""
    return f"{facet}={value}"


def summarize(
    samples: Sequence[dict[str, Any]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    exact_below: int = EXACT_BELOW,
) -> list[dict[str, Any]]:
    """``kind="summary"`` records per (model, method, ratio) x (each task family, then ``"all"``), then one per
    value of every facet the samples carry (``groups``: ``task="duration=short"``, ``facet="duration"``).

    Fields: ``n, correct, accuracy, ci_low, ci_high`` (percentile bootstrap, ``seed``), ``chance`` (mean of
    1 / options), and — where the uncompressed run of the same samples exists — ``agreement`` (same choice as it),
    ``delta`` (accuracy − its accuracy) with ``delta_ci_low/high`` (paired bootstrap of the per-sample
    differences), McNemar's ``mcnemar_b01`` (it wrong, this right), ``mcnemar_b10``, ``mcnemar_statistic``,
    ``mcnemar_p`` and ``mcnemar_test`` (``"exact"`` / ``"chi2"``); cost: ``flops_fastv`` (mean per sample),
    ``flops_fraction`` (of the uncompressed mean), ``ttft_ms`` (median), ``ttft_ms_mean``, ``speedup`` (its TTFT
    median / this one), ``video_tokens`` and ``into_llm`` (means). ``task="all"`` adds ``accuracy_macro``, the
    mean of the per-task accuracies. With ``scoring="both"``: ``accuracy_generate`` with
    ``generate_ci_low/high`` (the generated letter, extracted) and ``unmatched_generate`` (no letter found).
    """
    rows = [r for r in samples if r.get("kind", "sample") == "sample"]
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"] != "all"))  # "all": the pooled row only
    facets: dict[str, list[str]] = {}
    for r in rows:
        for facet, value in (r.get("groups") or {}).items():
            facets.setdefault(facet, [])
            if str(value) not in facets[facet]:
                facets[facet].append(str(value))
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], float(r["ratio"])), []).append(r)
    ref = {(r["model"], r["sample_id"]): r for r in rows if r["method"] == "none"}
    out = []
    stats = (ref, n_boot, seed, alpha, exact_below)
    for (model, method, ratio), group in groups.items():
        per_task = {}
        for task in [*tasks, "all"]:
            sel = group if task == "all" else [r for r in group if r["task"] == task]
            if not sel:
                continue
            summary = _summary(model, method, ratio, task, sel, *stats)
            if task != "all":
                per_task[task] = summary["accuracy"]
            elif len(per_task) > 1:
                summary["accuracy_macro"] = sum(per_task.values()) / len(per_task)
            out.append(summary)
        for facet, values in facets.items():
            for value in values:
                sel = [r for r in group if str((r.get("groups") or {}).get(facet)) == value]
                if sel:
                    summary = _summary(model, method, ratio, facet_task(facet, value), sel, *stats)
                    out.append({**summary, "facet": facet})
    return out


def _summary(model, method, ratio, task, sel, ref, n_boot, seed, alpha, exact_below) -> dict[str, Any]:
    correct = np.array([bool(r["correct"]) for r in sel], dtype=np.float64)
    low, high = bootstrap_ci(correct, n_boot=n_boot, seed=seed, alpha=alpha)
    summary: dict[str, Any] = {
        "kind": "summary",
        "model": model,
        "method": method,
        "ratio": ratio,
        "task": task,
        "n": len(sel),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci_low": low,
        "ci_high": high,
        "chance": float(np.mean([1.0 / r["n_options"] for r in sel])),
        "flops_fastv": _mean([r.get("flops_fastv") for r in sel]),
        "ttft_ms": _median([r.get("ttft_ms") for r in sel]),
        "ttft_ms_mean": _mean([r.get("ttft_ms") for r in sel]),
        "video_tokens": _mean([r.get("video_tokens") for r in sel]),
        "into_llm": _mean([r.get("into_llm") for r in sel]),
    }
    if all(r.get("correct_generate") is not None for r in sel):
        gen = np.array([bool(r["correct_generate"]) for r in sel], dtype=np.float64)
        g_low, g_high = bootstrap_ci(gen, n_boot=n_boot, seed=seed, alpha=alpha)
        summary.update(
            accuracy_generate=float(gen.mean()),
            generate_ci_low=g_low,
            generate_ci_high=g_high,
            unmatched_generate=sum(r.get("chosen_generate") == -1 for r in sel),
        )
    refs = [ref.get((model, r["sample_id"])) for r in sel]
    if all(x is not None for x in refs):
        base = np.array([bool(x["correct"]) for x in refs], dtype=np.float64)
        test = mcnemar(base, correct, exact_below=exact_below)
        d_low, d_high = bootstrap_ci(correct - base, n_boot=n_boot, seed=seed, alpha=alpha)
        base_flops = _mean([x.get("flops_fastv") for x in refs])
        base_ttft = _median([x.get("ttft_ms") for x in refs])
        summary.update(
            agreement=agreement([r["chosen"] for r in sel], [x["chosen"] for x in refs]),
            delta=float(correct.mean() - base.mean()),
            delta_ci_low=d_low,
            delta_ci_high=d_high,
            mcnemar_b01=test.b01,
            mcnemar_b10=test.b10,
            mcnemar_statistic=test.statistic,
            mcnemar_p=test.p_value,
            mcnemar_test=mcnemar_test_name(test.b01, test.b10, exact_below),
            flops_fraction=summary["flops_fastv"] / base_flops if base_flops and summary["flops_fastv"] else None,
            speedup=base_ttft / summary["ttft_ms"] if base_ttft and summary["ttft_ms"] else None,
        )
    return summary
