"""The frame-scoring pre-pass of ``framebudget`` with ``scorer="lvlm"`` (the ``quota`` preset) in ``tokpress eval``.

After a method is applied, :func:`needs_frame_scores` tells whether its outer policy wants a request's frame scores;
:func:`frame_prepass` then scores every grid frame of every sample of the batch with the same model
(:func:`tokpress.score_frames`, tokpress's hooks off), timed on the run's clock: the runner adds that time to the
sample's TTFT (``prepass_ms``), since a user pays it before the first token. :func:`scores_for_rows` hands the
scores to the policy for a batch whose rows repeat samples (the option rows of the logits scoring).

What the model is asked: with ``answer_format="word"`` (the synth model, which knows only its task vocabulary and
cannot answer a yes/no question) the sample's own question-and-options prompt, read as the largest probability of
an option's first token (``readout="options"``); with letters (real benchmarks) QuoTA's own pipeline: the question
decoupled into entities by a greedy text-only generation, then the yes/no prompt read at "A" (both timed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from tokpress.eval.accuracy.config import EvalConfig
from tokpress.eval.accuracy.data import format_prompt
from tokpress.eval.accuracy.scoring import Prepared
from tokpress.eval.bench.timing import Clock
from tokpress.frame_relevance import decouple_query, frame_scores, score_frames


def needs_frame_scores(model: torch.nn.Module) -> bool:
    """Whether the patched ``model``'s outer policy is ``framebudget`` with ``scorer="lvlm"``."""
    from tokpress.policies.outer.framebudget import FrameBudgetPolicy

    policy = getattr(model.__dict__.get("tokpress"), "outer", None)
    return isinstance(policy, FrameBudgetPolicy) and policy.config.scorer == "lvlm"


def _score_sample(model: torch.nn.Module, processor: Any, p: Prepared, config: EvalConfig) -> torch.Tensor:
    s = p.sample
    if config.answer_format == "word":
        text = s.prompt if s.prompt is not None and config.prompt is None else None
        text = text or format_prompt(s.question, s.options, config.answer_format, config.prompt)
        return score_frames(
            model, processor, p.frames, s.question, readout="options", options=s.options, prompt=text, fps=p.fps
        )
    entities = decouple_query(model, processor, s.question)
    return score_frames(model, processor, p.frames, s.question, entities=entities, fps=p.fps)


def frame_prepass(
    model: torch.nn.Module, processor: Any, prepared: Sequence[Prepared], config: EvalConfig, clock: Clock
) -> tuple[list[torch.Tensor], float]:
    """Per sample, the ``[T]`` relevance of its grid frames; and the seconds the pre-pass took (all samples)."""
    start = clock.now()
    scores = [_score_sample(model, processor, p, config) for p in prepared]
    return scores, clock.now() - start


def scores_for_rows(model: torch.nn.Module, scores: list[torch.Tensor] | None, counts: Sequence[int]):
    """A context manager giving row ``r`` of the next forwards its sample's scores (sample ``i`` fills ``counts[i]``
    consecutive rows); nothing to do when ``scores`` is None."""
    if scores is None:
        return contextlib.nullcontext()
    return frame_scores(model, [[s] for s, k in zip(scores, counts) for _ in range(k)])
