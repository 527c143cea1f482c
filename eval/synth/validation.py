"""Validation of the synth model during training, and the test score of a saved checkpoint.

**Validation and selection.** Every ``--eval-every`` steps the model scores ``--val-n`` videos of the val split (one
question each, tasks in turn, as ``tokpress eval`` draws the test split) with
:func:`~tokpress.eval.accuracy.scoring.prepare` and :func:`~tokpress.eval.accuracy.scoring.option_logprobs` (mean
log-likelihood, the eval default), optionally also under
``tokpress.apply(outer="random")`` at ``--val-ratios``. The checkpoint with the best mean per-task accuracy (ties:
the later one) is saved. At the end the best checkpoint is scored on ``--test-n`` test videos (the split
``tokpress eval`` uses) and the README records it.

"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokpress.eval.synth.tasks import SYNTH_FPS, TASKS, SynthConfig, make_split


def val_samples(
    n: int,
    tasks: Sequence[str],
    config: SynthConfig | None = None,
    split: str = "val",
    *,
    by_question: bool = False,
) -> list[Any]:
    """``n`` videos of ``split`` (one question each, tasks in turn) as
    :class:`~tokpress.eval.accuracy.data.EvalSample`.

    ``by_question``: every question of each video instead, with ``task`` set to ``"<task>/<variant>"`` (e.g.
    ``needle/shape``, ``color_extremes/end``; position questions are all ``position/colour``), so
    :func:`accuracy_by_task` reports per kind of question.
    """
    from tokpress.eval.accuracy.data import EvalSample

    out = []
    for s in make_split(split, n, config, tasks, all_questions=by_question):  # type: ignore[arg-type]
        variant = s.metadata["variant"]  # position: the asked colour, one question per colour
        task = f"{s.task}/{'colour' if s.task == 'position' else variant}" if by_question else s.task
        qid = f"{s.video_id}_{variant}" if by_question else f"{s.video_id}_q0"
        out.append(EvalSample(qid, task, s.question, list(s.options), s.answer, frames=s.frames, fps=SYNTH_FPS))
    return out


@torch.no_grad()
def accuracy_by_task(
    model: Any, processor: Any, prepared: Sequence[Any], *, batch: int = 16, ratio: float = 1.0, seed: int = 0
) -> dict[str, float]:
    """Per-task accuracy of option scoring as ``tokpress eval`` does it (mean log-likelihood, word answers).

    ``ratio < 1`` scores under ``tokpress.apply(model, outer="random", retain_ratio=ratio)``. Returns per task and
    ``"mean"`` (mean of the per-task accuracies).
    """
    import tokpress
    from tokpress.eval.accuracy.scoring import choose, option_logprobs

    was_training = model.training
    model.eval()
    pad_id = processor.tokenizer.pad_token_id or 0
    correct: dict[str, list[bool]] = {}
    try:
        if ratio < 1:
            tokpress.apply(model, outer="random", retain_ratio=ratio, outer_options={"seed": seed})
        for start in range(0, len(prepared), batch):
            chunk = prepared[start : start + batch]
            scored, _ = option_logprobs(model, chunk, pad_id)
            for p, per in zip(chunk, scored):
                result = choose([lp for lp, _ in per], [t for _, t in per], "mean")
                correct.setdefault(p.sample.task, []).append(result.chosen == p.sample.answer)
    finally:
        tokpress.remove(model)
        model.train(was_training)
    out = {task: float(np.mean(v)) for task, v in correct.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def prepare_samples(model: Any, processor: Any, samples: Sequence[Any]) -> list[Any]:
    """:func:`tokpress.eval.accuracy.scoring.prepare` for every sample (word answers, end-of-turn appended)."""
    from tokpress.eval.accuracy.scoring import prepare

    return [prepare(model, processor, s, answer_format="word") for s in samples]


def evaluate_checkpoint(
    path: str | Path,
    n: int,
    *,
    tasks: Sequence[str] = TASKS,
    device: torch.device | str = "cpu",
    batch: int = 16,
    by_question: bool = False,
) -> dict[str, float]:
    """Per-task accuracy of a saved checkpoint on the first ``n`` test videos (the split ``tokpress eval`` uses).

    ``by_question``: every question of those videos, per kind of question (:func:`val_samples`); this is what
    showed the first shipped model's needle gap to be the shape question alone (colour 1.00, shape 0.52).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    prepared = prepare_samples(model, processor, val_samples(n, tasks, split="test", by_question=by_question))
    return accuracy_by_task(model, processor, prepared, batch=batch)
