"""Speed benchmark: ``tokpress bench`` (TTFT, stage times, FLOPs, memory).

- :mod:`~tokpress.eval.bench.runner`: :class:`BenchConfig` and the method × ratio loop.
- :mod:`~tokpress.eval.bench.workloads`: what is run (tiny model, shipped model, ``--arch`` at random weights).
- :mod:`~tokpress.eval.bench.inputs`: processor-shaped inputs for an architecture at a frame count.
- :mod:`~tokpress.eval.bench.archs`: published architectures (``archs/*.json``) and their shapes.
- :mod:`~tokpress.eval.bench.flops_exact`: FLOPs in the exact and the FastV conventions.
- :mod:`~tokpress.eval.bench.timing`: clocks (CUDA events on GPU) and stage timings.
- :mod:`~tokpress.eval.bench.report`: JSON / CSV / Markdown and the speed plots.
"""
