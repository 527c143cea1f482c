"""Accuracy harness: ``tokpress eval``.

- :mod:`~tokpress.eval.accuracy.config`: :class:`EvalConfig`, its checks, the method x ratio plan.
- :mod:`~tokpress.eval.accuracy.runner`: samples of a benchmark, the method × ratio loop, ``evaluate``.
- :mod:`~tokpress.eval.accuracy.runs`: one method x ratio run of a batch and its per-sample records.
- :mod:`~tokpress.eval.accuracy.stream`: ``samples.jsonl`` streaming and resume.
- :mod:`~tokpress.eval.accuracy.parallel`: data parallel (shard the samples, gather the records on the main process).
- :mod:`~tokpress.eval.accuracy.workload`: the model scored (a checkpoint, the shipped synth model, the tiny one).
- :mod:`~tokpress.eval.accuracy.data`: :class:`EvalSample`, the synth and local-folder samples, prompts and answers.
- :mod:`~tokpress.eval.accuracy.benchmarks`: Video-MME, MVBench, LongVideoBench, EgoSchema from their releases.
- :mod:`~tokpress.eval.accuracy.scoring`: option log-likelihoods (one prefill, options as continuations), generation.
- :mod:`~tokpress.eval.accuracy.stats` / :mod:`~tokpress.eval.accuracy.summary`: bootstrap intervals, McNemar,
  agreement; the summary records.
- :mod:`~tokpress.eval.accuracy.report`, :mod:`~tokpress.eval.accuracy.tables`, :mod:`~tokpress.eval.accuracy.figures`:
  JSON / CSV / Markdown, tables and the accuracy plots.
"""
