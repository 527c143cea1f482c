"""Accuracy harness: ``tokpress eval``.

- :mod:`~tokpress.eval.accuracy.runner`: :class:`EvalConfig`, the method × ratio loop, streamed and resumable records.
- :mod:`~tokpress.eval.accuracy.data`: :class:`EvalSample`, the synth and local-folder samples, prompts and answers.
- :mod:`~tokpress.eval.accuracy.scoring`: option log-likelihoods (one prefill, options as continuations).
- :mod:`~tokpress.eval.accuracy.stats`: bootstrap intervals, McNemar, agreement with the uncompressed model.
- :mod:`~tokpress.eval.accuracy.report`: tables, JSON / CSV / Markdown and the accuracy plots.
"""
