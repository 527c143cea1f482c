"""Speed benchmark: ``tokpress bench`` (TTFT, stage times, FLOPs, memory).

- :mod:`~tokpress.eval.bench.runner`: :class:`BenchConfig` and the method × ratio loop.
- :mod:`~tokpress.eval.bench.measure`: one row: a method applied, its requests timed by stage, its record.
- :mod:`~tokpress.eval.bench.rounds`: interleaved rounds (seeded shuffled orders), rebatching one prompt's inputs.
- :mod:`~tokpress.eval.bench.paired`: paired per-round ratios and their bootstrap interval.
- :mod:`~tokpress.eval.bench.overhead`: each policy's selection alone at real sizes, no model.
- :mod:`~tokpress.eval.bench.workloads`: what is run (tiny model, shipped model, ``--arch`` at random weights).
- :mod:`~tokpress.eval.bench.inputs`: processor-shaped inputs for an architecture at a frame count.
- :mod:`~tokpress.eval.bench.archs`: published architectures (``archs/*.json``), their shapes and random-weight
  models.
- :mod:`~tokpress.eval.bench.vision_shapes`: the vision-tower half of an architecture's shape.
- :mod:`~tokpress.eval.bench.weight_init`: seeded parameters and recomputed buffers of a model built on ``meta``.
- :mod:`~tokpress.eval.bench.flops_exact`: FLOPs in the exact and the FastV conventions.
- :mod:`~tokpress.eval.bench.macs`: MACs of each kind of decoder layer and vision tower.
- :mod:`~tokpress.eval.bench.timing`: clocks (CUDA events on GPU) and stage timings.
- :mod:`~tokpress.eval.bench.records`: the result record and the numbers derived from it (speed-ups, fractions).
- :mod:`~tokpress.eval.bench.tables`: cell formatting and the Markdown of ``report.md``.
- :mod:`~tokpress.eval.bench.report`: JSON / CSV / ``report.md`` files and the terminal table.
- :mod:`~tokpress.eval.bench.figures`: the speed plots (styles from :mod:`tokpress.eval.plots`).
"""
