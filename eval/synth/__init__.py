"""The synthetic video benchmark and the small model trained on it (shipped in ``eval/models/``).

- :mod:`~tokpress.eval.synth.tasks`: the task families (clips, questions, answers), :class:`SynthConfig` and splits.
- :mod:`~tokpress.eval.synth.scene`, :mod:`~tokpress.eval.synth.questions`: the clip canvas and the five task
  builders (what each family paints and asks).
- :mod:`~tokpress.eval.synth.export`: a split exported as mp4 videos + ``annotations.jsonl``, and its reader.
- :mod:`~tokpress.eval.synth.solvers`: reference solvers that read the answer off the clip.
- :mod:`~tokpress.eval.synth.model`: the synth model's config, word-level tokenizer and processor.
- :mod:`~tokpress.eval.synth.batches`, :mod:`~tokpress.eval.synth.heads`: training batches and task heads.
- :mod:`~tokpress.eval.synth.train`: ``python -m tokpress.eval.synth.train`` trains the shipped model (the loop);
  its options are :mod:`~tokpress.eval.synth.train_config`, the forward pass :mod:`~tokpress.eval.synth.forward`,
  the task mix :mod:`~tokpress.eval.synth.curriculum`, the optimiser :mod:`~tokpress.eval.synth.optim`,
  validation :mod:`~tokpress.eval.synth.validation` and the files a run writes :mod:`~tokpress.eval.synth.run_files`.
"""
