"""The synthetic video benchmark and the small model trained on it (shipped in ``eval/models/``).

- :mod:`~tokpress.eval.synth.tasks`: the task families (clips, questions, answers) and :class:`SynthConfig`.
- :mod:`~tokpress.eval.synth.solvers`: reference solvers that read the answer off the clip.
- :mod:`~tokpress.eval.synth.model`: the synth model's config, word-level tokenizer and processor.
- :mod:`~tokpress.eval.synth.batches`, :mod:`~tokpress.eval.synth.heads`: training batches and task heads.
- :mod:`~tokpress.eval.synth.train`: ``python -m tokpress.eval.synth.train`` trains the shipped model.
"""
