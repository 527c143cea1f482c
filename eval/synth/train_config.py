"""The configuration of a synth training run (:class:`TrainConfig`) and its command line (:func:`parse_args`).

Every option of ``python -m tokpress.eval.synth.train`` is a field of :class:`TrainConfig`; what the options do and
why is in the doc of :mod:`tokpress.eval.synth.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tokpress.errors import ConfigError
from tokpress.eval.synth.model import MICRO, ModelSize
from tokpress.eval.synth.tasks import TASKS

#: Video-token drop patterns of the augmentation (see :mod:`tokpress.eval.synth.forward`).
DROP_PATTERNS = ("random", "frames", "cells")
#: The command's description (``--help``): the first line of the doc of :mod:`tokpress.eval.synth.train`.
DESCRIPTION = "Train a small real ``Qwen2_5_VLForConditionalGeneration`` from scratch on the synth video-QA generator."


@dataclass
class TrainConfig:
    """Everything a run depends on (the command line's options)."""

    out: str = "out/tokpress-synth-qwen2.5-vl"
    steps: int = 6000
    batch: int = 32  # videos per step (each carries 1-3 question rows)
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.05
    clip: float = 1.0
    seed: int = 0
    device: str | None = None  # None: cuda if available, else cpu
    bf16: bool = False
    attn: str = "sdpa"
    threads: int | None = None  # torch CPU threads (None: leave as is)
    workers: int | None = None  # data worker processes (None: by CPU count; 0: inline)
    prefetch: int = 4  # batches in flight per worker
    token_drop: float = 0.3  # probability that a row has video tokens dropped
    first_token_weight: float = 1.0  # loss weight of the first answer token (the decision); the rest weigh 1
    aux_weight: float = 0.5  # weight of the auxiliary per-video-token targets (0: off; see AuxHeads)
    aux_layer: int = 1  # decoder layer whose output the LLM-side auxiliary heads read
    pack: bool = True  # a video's questions as turns of one row (False: one row per question)
    aux_words: bool = True  # with aux: also name each video token's colour / shape with the LM head's words
    evidence_weight: float = 0.0  # weight of the evidence-head loss (EvidenceAttention; 0: off)
    evidence_layer: int | None = None  # its decoder layer (None: the last)
    min_keep: float = 0.1
    drop_start: int = 0
    drop_patterns: tuple[str, ...] = DROP_PATTERNS
    task_mix: str = "adaptive"  # "adaptive" or "uniform"
    tasks: tuple[str, ...] = TASKS
    easy_until: int = 0
    eval_every: int = 250
    log_every: int = 25
    val_n: int = 250  # val videos (one question each, tasks in turn)
    val_ratios: tuple[float, ...] = ()  # extra val runs under tokpress outer="random" at these keep ratios
    eval_batch: int = 16
    test_n: int = 1000  # test videos scored with the best checkpoint at the end (0: skip)
    time_limit: float | None = None  # seconds of this call; stop cleanly (state saved) after this
    resume: bool = False
    init_from: str | None = None  # start from this checkpoint's weights (fresh optimizer, step 0 of this run)
    size: ModelSize = field(default_factory=ModelSize)
    command: str = ""

    def validate(self) -> None:
        """Raise :class:`~tokpress.errors.ConfigError` naming the bad option."""
        if self.steps < 1 or self.batch < 1 or self.eval_every < 1 or self.log_every < 1:
            raise ConfigError("steps, batch, eval_every and log_every must be >= 1")
        if not 0 <= self.token_drop <= 1 or not 0 < self.min_keep <= 1:
            raise ConfigError(
                f"need 0 <= token_drop <= 1 and 0 < min_keep <= 1, got {self.token_drop}, {self.min_keep}"
            )
        if not self.drop_patterns or any(p not in DROP_PATTERNS for p in self.drop_patterns):
            raise ConfigError(f"drop_patterns must be a non-empty subset of {DROP_PATTERNS}, got {self.drop_patterns}")
        if self.aux_weight < 0 or not 0 <= self.aux_layer < self.size.text_layers:
            raise ConfigError(
                f"need aux_weight >= 0 and 0 <= aux_layer < text_layers ({self.size.text_layers}), "
                f"got {self.aux_weight}, {self.aux_layer}"
            )
        if self.task_mix not in ("adaptive", "uniform"):
            raise ConfigError(f"task_mix must be 'adaptive' or 'uniform', got {self.task_mix!r}")
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise ConfigError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.val_n < len(self.tasks):
            raise ConfigError(f"val_n must be >= the number of tasks ({len(self.tasks)}), got {self.val_n}")
        if any(not 0 < r < 1 for r in self.val_ratios):
            raise ConfigError(f"val_ratios must be in (0, 1), got {self.val_ratios}")


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    if device.type == "cpu":
        return 1 if cpus >= 3 else 0
    return max(0, min(12, cpus - 2))


# ------------------------------------------------------------------------------------------------------- command


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line."""
    d = TrainConfig()
    s = ModelSize()
    p = argparse.ArgumentParser(prog="python -m tokpress.eval.synth.train", description=DESCRIPTION)
    p.add_argument("--out", required=True, help="checkpoint directory (curve, README; state in OUT.state/)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch, help="videos per step (1-3 question rows each)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--attn", default=d.attn)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=None, help="data worker processes (0: inline)")
    p.add_argument("--token-drop", type=float, default=d.token_drop, help="probability a row drops video tokens")
    p.add_argument("--min-keep", type=float, default=d.min_keep, help="lowest keep ratio of a dropping row")
    p.add_argument(
        "--first-token-weight",
        type=float,
        default=d.first_token_weight,
        help="loss weight of the answer's first token (the decision between options)",
    )
    p.add_argument("--aux-weight", type=float, default=d.aux_weight, help="weight of the per-token probes (0: off)")
    p.add_argument("--aux-layer", type=int, default=d.aux_layer, help="decoder layer the LLM-side probes read")
    p.add_argument("--no-aux-words", action="store_true", help="no colour/shape word probes through the LM head")
    p.add_argument("--evidence-weight", type=float, default=d.evidence_weight, help="evidence-head loss weight")
    p.add_argument("--evidence-layer", type=int, default=None, help="decoder layer of the evidence head (last)")
    p.add_argument("--no-pack", action="store_true", help="one row per question instead of one multi-turn row")
    p.add_argument("--drop-start", type=int, default=d.drop_start, help="first step with token drop")
    p.add_argument("--drop-patterns", type=_words, default=d.drop_patterns, help=f"subset of {DROP_PATTERNS}")
    p.add_argument("--task-mix", choices=("adaptive", "uniform"), default=d.task_mix)
    p.add_argument("--tasks", type=_words, default=d.tasks)
    p.add_argument(
        "--easy-until", type=int, default=d.easy_until, help="easy-scene share falls 1 -> 0 until this step"
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-n", type=int, default=d.val_n)
    p.add_argument("--val-ratios", type=_floats, default=d.val_ratios, help="also validate at these keep ratios")
    p.add_argument("--test-n", type=int, default=d.test_n)
    p.add_argument("--time-limit", type=float, default=None, help="seconds; stop cleanly and save the state")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state/ if it exists")
    p.add_argument("--init-from", default=None, help="a checkpoint directory whose weights start the run")
    p.add_argument("--micro", action="store_true", help="a micro model (smoke tests)")
    for name, value in dataclasses.asdict(s).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    a = p.parse_args(argv)
    size = MICRO if a.micro else s
    size = dataclasses.replace(size, **{k: getattr(a, k) for k in dataclasses.asdict(s) if getattr(a, k) is not None})
    command = "python -m tokpress.eval.synth.train " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    return TrainConfig(
        out=a.out,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        warmup=min(a.warmup, max(1, a.steps // 10)),
        weight_decay=a.weight_decay,
        seed=a.seed,
        device=a.device,
        bf16=a.bf16,
        attn=a.attn,
        threads=a.threads,
        workers=a.workers,
        token_drop=a.token_drop,
        min_keep=a.min_keep,
        first_token_weight=a.first_token_weight,
        aux_weight=a.aux_weight,
        aux_layer=a.aux_layer,
        pack=not a.no_pack,
        aux_words=not a.no_aux_words,
        evidence_weight=a.evidence_weight,
        evidence_layer=a.evidence_layer,
        drop_start=a.drop_start,
        drop_patterns=a.drop_patterns,
        task_mix=a.task_mix,
        tasks=a.tasks,
        easy_until=a.easy_until,
        eval_every=a.eval_every,
        log_every=a.log_every,
        val_n=a.val_n,
        val_ratios=a.val_ratios,
        test_n=a.test_n,
        time_limit=a.time_limit,
        resume=a.resume,
        init_from=a.init_from,
        size=size,
        command=command,
    )
