"""What each training step of :mod:`tokpress.eval.synth.train` holds: the task mix and the batch specs.

**Task mix (curriculum).** Each video's task is drawn per block of ``--eval-every`` steps; with
``--task-mix adaptive`` (default) the weights are half uniform, half proportional to each task's validation error
at the start of the block (error floored at 0.05), so tasks still at chance get more videos and learned ones are
kept. Optionally ``--easy-until S`` renders a linearly shrinking share of the videos (100 % at step 0, 0 % at S)
without distractors and texture. Weights are decided only at eval boundaries, so the data of a step depends on
the seed and the step, never on worker count, prefetch or timing.


**Determinism.** The model is initialised under ``torch.manual_seed(seed)``; batch ``s`` is a pure function of
``(seed, s, block weights)`` (tasks, train offsets, drop subsets from ``numpy`` seed sequences) and is built in
worker processes or inline with identical results. On CPU two runs with the same arguments give identical curves
and weights; resuming at a saved state continues the same run.

"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tokpress.eval.synth.batches import BatchSpec
from tokpress.eval.synth.train_config import TrainConfig


def task_weights(tasks: Sequence[str], val: dict[str, float] | None, mix: str) -> list[float]:
    """Sampling weights of ``tasks``: uniform, or half uniform + half proportional to validation error."""
    uniform = [1 / len(tasks)] * len(tasks)
    if mix == "uniform" or not val:
        return uniform
    err = [max(1.0 - val.get(t, 0.0), 0.05) for t in tasks]
    return [0.5 * u + 0.5 * e / sum(err) for u, e in zip(uniform, err)]


def block_specs(cfg: TrainConfig, start: int, stop: int, weights: Sequence[float]) -> list[BatchSpec]:
    """Specs of steps ``[start, stop)``; a pure function of the arguments (train offsets: ``step * batch + v``)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, start, 3]))
    specs = []
    for step in range(start, stop):
        picks = rng.choice(len(cfg.tasks), size=cfg.batch, p=np.asarray(weights) / np.sum(weights))
        easy_share = max(0.0, 1.0 - step / cfg.easy_until) if cfg.easy_until > 0 else 0.0
        easy = rng.random(cfg.batch) < easy_share
        videos = tuple((cfg.tasks[int(t)], step * cfg.batch + v, bool(e)) for v, (t, e) in enumerate(zip(picks, easy)))
        drop = cfg.token_drop if step >= cfg.drop_start else 0.0
        specs.append(BatchSpec(step, cfg.seed, videos, drop, cfg.min_keep, tuple(cfg.drop_patterns), cfg.pack))
    return specs
