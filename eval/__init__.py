"""Evaluation, benchmarking and demo tooling (installed as ``tokpress.eval``).

    from tokpress.eval import run_benchmark
    records = run_benchmark(methods=("none", "evs", "fastv"), ratios=(0.25,), repeats=3)

Heavy modules (transformers, matplotlib, video decoders) load only when a function is called.
"""

from __future__ import annotations

from typing import Any


def run_benchmark(out: str | None = None, **config: Any) -> list[dict[str, Any]]:
    """``tokpress bench`` from Python: keyword arguments are :class:`~tokpress.eval.bench.runner.BenchConfig` fields.

    Returns the result records; with ``out`` also writes the report files there.
    """
    from tokpress.eval.bench.runner import BenchConfig, run_bench
    from tokpress.eval.bench.workloads import make_workload

    bench_config = BenchConfig(**config)
    work = make_workload(bench_config)
    records = run_bench(bench_config, work)
    if out is not None:
        from tokpress.eval.bench.report import write_report

        write_report(records, work.environment, out)
    return records


__all__ = ["run_benchmark"]
