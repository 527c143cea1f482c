r"""Train a small real ``Qwen2_5_VLForConditionalGeneration`` from scratch on the synth video-QA generator.

Run as ``python -m tokpress.eval.synth.train --out DIR [--steps N] [--batch B] [--device cuda|cpu] ...``. ``DIR``
becomes a Hugging Face checkpoint directory (``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``, ``processor_config.json``, ``chat_template.jinja``) that
``AutoModelForImageTextToText.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)`` load offline, plus
``curve.jsonl`` (the training curve), ``training_args.json`` and a ``README.md`` (command, seed, steps, time, final
per-task accuracy). The training state for ``--resume`` (weights, AdamW moments, step, curriculum) lives beside it
in ``DIR.state/`` and is not part of the checkpoint.

How the shipped model was trained (2 CPU cores, no GPU; the exact commands, curves and timings are in
``eval/results/train-synth-cpu/`` and ``eval/results/train-synth-cpu-finetune/``): from scratch (118 min), then a
fine-tune of that checkpoint with a fresh optimizer (72 min), which took the needle's shape question from 0.52 to
1.00::

    python -m tokpress.eval.synth.train --out out/phase1 --device cpu --threads 2 --workers 1 --steps 5750 \
        --batch 16 --lr 1e-3 --warmup 150 --token-drop 0.3 --drop-start 1500 --eval-every 250 --val-n 250 \
        --test-n 500 --aux-weight 0.5 --aux-layer 1 --evidence-weight 1.0
    python -m tokpress.eval.synth.train --out out/tokpress-synth-qwen2.5-vl --device cpu --threads 2 --workers 1 \
        --steps 3000 --batch 16 --lr 5e-4 --warmup 100 --token-drop 0.3 --drop-start 0 --eval-every 250 \
        --val-n 400 --test-n 500 --aux-weight 0.5 --aux-layer 1 --evidence-weight 1.0 --init-from out/phase1
    # then copy out/tokpress-synth-qwen2.5-vl (not the sibling .state directory) to
    # eval/models/tokpress-synth-qwen2.5-vl, where ``tokpress eval`` and ``tokpress bench`` look for it

(The first phase as recorded was resumed while its design changed, so the first command is its final recipe,
not a replay of it.)

Each call may stop cleanly after ``--time-limit`` seconds (state saved); the same command with ``--resume``
continues (``--steps`` fixes the cosine schedule, keep it). On a GPU add ``--device cuda --workers 12`` and a
larger ``--batch``. On 2 CPU cores a step of 16 videos takes about 1.0-1.2 s (packed rows of ~170-240 tokens,
data built in one worker process).

Design decisions (``/work/shared/reference/synthetic-training.md`` records the first trial that motivated them;
``eval/results/train-synth-cpu-trial/`` the second):

**Model and tokenizer.** :mod:`tokpress.eval.synth.model`: a real ``Qwen2_5_VLConfig`` (vision 2 x 96, text
4 x 192, ~3.1 M parameters, 12.5 MB in fp32; 16 frames of 112x112 -> ``[8, 8, 8]`` patches -> **128 video
tokens**), small RoPE bases, ``tokens_per_second = 1``, and a *word-level* tokenizer that keeps the special ids
of :mod:`tokpress.eval.tiny.processor`: every option is one token, a prompt is ~35 text tokens. The second trial
used the character tokenizer: its mean per-token loss fell to 0.29 while option accuracy stayed at chance,
because the easy continuation characters dominated the loss and the prompts were ~190 tokens long.

**Prompt and answer, exactly as** :mod:`tokpress.eval.accuracy.runner` **scores them.** The first turn of every row is
``chat_prompt(processor, format_prompt(question, options, "word"))`` followed by the answer word and
``<|im_end|>``; the loss is cross-entropy on the answer tokens only. Eval scores every option by the mean
log-likelihood of the same tokens, so the training target is the scoring rule.

**Several questions per video, one row (``--no-pack`` turns it off).** A video carries 1-3 questions (start and
end colour, needle shape and colour, one per quadrant visited); they are shuffled and packed as turns of one
chat: the first is exactly the single-question eval prompt, each further one a text-only user turn followed by
its answer. One vision pass and one LLM pass per video instead of one per question (about 1.8x fewer LLM tokens).

**Auxiliary per-token targets (``--aux-weight``, ``--aux-layer``, ``--no-aux-words``).** :class:`AuxHeads`
puts linear probes on every video token: colour and shape from the vision tower's merged features; slot, row,
column, colour, shape and "changed since slot 0" from decoder layer ``aux_layer``'s output; and (word probes)
the colour and shape *words* from the final hidden state through the model's own LM head. The probes are
training-only (not saved); the model must make these facts linearly readable, which is exactly what the
questions need. Without them the first trial saw position, direction, counting and the needle stay at chance for
2,500 steps; with the position probes direction and counting were learned within 750-1,000 steps here.

**Evidence head (``--evidence-weight``, ``--evidence-layer``).** :class:`EvidenceAttention` asks head 0 of one
decoder layer (default: the last) to put its attention, from the token that predicts each answer, on the video
tokens that hold the answer (:func:`evidence_tokens`: the asked phase of the square, the needle, the lit lamp, the
square in the asked colour); the loss is ``-log`` of that attention mass. Questions that need *one* token out of 128
(the needle, a colour at a place) stayed at chance for 2,750 steps with the probes alone: the answer's gradient
through a softmax over 128 near-identical tokens is tiny until the selection exists. Side effect, for readers of
the benchmark: one head of the last layer attends to the evidence by construction. No method in tokpress reads
that layer: every attention-scored cut (FastV, PyramidDrop, FrameFusion, HoliTom, PruneVid, DyCoke's decode stage)
uses the layer before its cut, at most layer 2 of the 4, whose attention is not supervised.

**Task mix (curriculum).** Each video's task is drawn per block of ``--eval-every`` steps; with
``--task-mix adaptive`` (default) the weights are half uniform, half proportional to each task's validation error
at the start of the block (error floored at 0.05), so tasks still at chance get more videos and learned ones are
kept. Optionally ``--easy-until S`` renders a linearly shrinking share of the videos (100 % at step 0, 0 % at S)
without distractors and texture. Weights are decided only at eval boundaries, so the data of a step depends on
the seed and the step, never on worker count, prefetch or timing.

**Video-token drop augmentation (equivalent on the inputs, not through the tokpress hooks).** From step
``--drop-start`` on, each row is, with probability ``--token-drop``, given a random keep ratio
``r ~ U[--min-keep, 1)`` and keeps ``round(r * 128)`` of its video tokens, chosen by one of ``--drop-patterns``:
``random`` (a uniform subset: what ``tokpress.apply(model, outer="random")`` keeps), ``frames`` (whole temporal
grids) or ``cells`` (the same spatial cells in every temporal grid). The drop is applied the way tokpress's outer
stage applies it: the kept rows of ``inputs_embeds`` and of the 3-row M-RoPE ``position_ids`` are gathered, so
kept tokens keep their original positions, and the sequence is shortened (the LLM never sees the dropped tokens).
It is done in this script's forward rather than through ``tokpress.apply`` because the augmentation needs a
different ratio and subset per row inside one batch (a tokpress patch has one ratio and re-seeds its ``random``
policy identically for every video), and because tokpress's hooks are written for inference.
``tests/test_train_synth.py`` checks that this path gives the same logits as ``model(...)`` unpatched and as the
model patched with ``tokpress.apply(outer="random")`` for the same kept set.

**Validation and selection.** Every ``--eval-every`` steps the model scores ``--val-n`` videos of the val split (one
question each, tasks in turn, as ``tokpress eval`` draws the test split) with
:func:`~tokpress.eval.accuracy.scoring.prepare` and :func:`~tokpress.eval.accuracy.scoring.option_logprobs` (mean
log-likelihood, the eval default), optionally also under
``tokpress.apply(outer="random")`` at ``--val-ratios``. The checkpoint with the best mean per-task accuracy (ties:
the later one) is saved. At the end the best checkpoint is scored on ``--test-n`` test videos (the split
``tokpress eval`` uses) and the README records it.

**Optimiser.** AdamW (β = 0.9 / 0.98, weight decay 0.05 on matrices only), gradient clipping at 1.0, linear warmup
then cosine decay to 10 % of ``--lr``. TF32 matmuls on CUDA; ``--bf16`` autocast optional.

**Determinism.** The model is initialised under ``torch.manual_seed(seed)``; batch ``s`` is a pure function of
``(seed, s, block weights)`` (tasks, train offsets, drop subsets from ``numpy`` seed sequences) and is built in
worker processes or inline with identical results. On CPU two runs with the same arguments give identical curves
and weights; resuming at a saved state continues the same run.

**Not done here:** per-task difficulty schedules beyond ``--easy-until``; training through tokpress's own hooks.

**Modules.** This one holds the configuration, the forward pass and losses, the loop and the command line; the batches
(rendering, encoding, per-token labels, evidence) are :mod:`tokpress.eval.synth.batches`, the training-only probes
and the evidence head :mod:`tokpress.eval.synth.heads`, the model and tokenizer :mod:`tokpress.eval.synth.model`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokpress.errors import ConfigError
from tokpress.eval.synth.batches import BatchSpec, iterate_batches
from tokpress.eval.synth.heads import AuxHeads, EvidenceAttention, answer_word_ids
from tokpress.eval.synth.model import FAMILY, MICRO, ModelSize, build_model, build_processor, synth_model_config
from tokpress.eval.synth.tasks import SYNTH_FPS, TASKS, SynthConfig, make_split

__all__ = ["FAMILY", "MICRO", "ModelSize", "build_model", "build_processor", "synth_model_config", "train", "main"]

logger = logging.getLogger(__name__)

#: Video-token drop patterns of the augmentation (see the module doc).
DROP_PATTERNS = ("random", "frames", "cells")
CURVE_FILE = "curve.jsonl"
ARGS_FILE = "training_args.json"
STATE_FILE = "state.pt"


# ------------------------------------------------------------------------------------------------------ config


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


# ----------------------------------------------------------------------------------------------------- forward


class RopeCache:
    """M-RoPE position ids of a row, from the model's own ``get_rope_index``, cached by row layout."""

    def __init__(self, model: Any) -> None:
        self.model, self.cache = model, {}

    def positions(self, batch: dict[str, torch.Tensor], video_id: int) -> torch.Tensor:
        """``[3, R, L]`` position ids of the (right-padded) rows of ``batch`` (padding: 0)."""
        ids, lengths = batch["input_ids"], batch["lengths"]
        out = torch.zeros((3, *ids.shape), dtype=torch.long)
        for r in range(ids.shape[0]):
            n = int(lengths[r])
            row = ids[r, :n]
            is_video = row == video_id
            first = int(is_video.nonzero()[0, 0])
            v = int(batch["row_video"][r])
            grid = batch["video_grid_thw"][v]
            spg = float(batch["second_per_grid_ts"][v])
            key = (n, first, int(is_video.sum()), tuple(grid.tolist()), spg)
            if key not in self.cache:
                types = is_video.long()[None] * 2
                pos, _ = self.model.model.get_rope_index(
                    row[None], types, video_grid_thw=grid[None], second_per_grid_ts=torch.tensor([spg])
                )
                self.cache[key] = pos[:, 0]
            out[:, r, :n] = self.cache[key]
        return out


def forward_rows(
    model: Any,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    capture: dict[str, Any] | None = None,
    capture_layer: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the rows of ``batch`` through the model with one vision pass per video and video tokens dropped.

    Equivalent to ``model(input_ids, attention_mask, mm_token_type_ids, pixel_values_videos, video_grid_thw,
    second_per_grid_ts)`` per row, except that the tokens where ``keep`` is False are removed before the first
    decoder layer, kept tokens keeping their original M-RoPE positions (what tokpress's outer stage does).

    Returns:
        ``hidden`` [R, K, D] (final-norm hidden states of the kept tokens, right-padded), ``index`` [R, K] (the
        original position of each kept token) and ``valid`` [R, K]. A ``capture`` dict receives what
        :class:`AuxHeads` reads: ``video_features`` [V * N, D], ``layer_hidden`` [R, K, D] (output of decoder layer
        ``capture_layer``), ``video_ordinal`` [R, K] (which video token each kept token is; -1: text),
        ``video_kept`` [R, K] and ``row_video`` [R].
    """
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    keep = (batch["keep"] if keep is None else keep).to(device)
    video_id = model.config.video_token_id
    embeds = model.get_input_embeddings()(ids)
    pixels = batch["pixel_values_videos"].to(device, model.model.visual.dtype)
    grid = batch["video_grid_thw"].to(device)
    feats = model.model.get_video_features(pixels, grid, return_dict=True).pooler_output
    row_video = batch["row_video"].tolist()
    row_feats = torch.cat([feats[v] for v in row_video]).to(embeds.dtype)
    embeds = embeds.masked_scatter((ids == video_id)[..., None], row_feats)
    counts = keep.sum(1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    width = int(counts.max())
    index = order[:, :width]
    valid = torch.arange(width, device=device)[None] < counts[:, None]
    embeds = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
    pos = positions.to(device).gather(2, index[None].expand(3, -1, -1))
    out = model.model.language_model(
        inputs_embeds=embeds,
        attention_mask=valid.long(),
        position_ids=pos,
        use_cache=False,
        output_hidden_states=capture is not None,
    )
    if capture is not None:
        is_video = ids == video_id
        ordinal = torch.where(is_video, is_video.long().cumsum(1) - 1, -1).gather(1, index)
        capture.update(
            video_features=torch.cat(list(feats)),
            layer_hidden=out.hidden_states[capture_layer + 1],
            layer_hidden_next=out.hidden_states[capture_layer + 2]
            if capture_layer + 2 < len(out.hidden_states)
            else None,
            video_ordinal=ordinal,
            video_kept=(ordinal >= 0) & valid,
            row_video=batch["row_video"].to(device),
            index=index,
            valid=valid,
        )
    return out.last_hidden_state, index, valid


def answer_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    first_weight: float = 1.0,
    capture: dict[str, Any] | None = None,
    capture_layer: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over rows of the per-row weighted mean cross-entropy of the answer tokens (the first answer token
    weighted ``first_weight``, the rest 1); also the per-row losses (detached).

    With character-level answers the first token carries the decision and the rest are nearly free: a CPU trial
    (eval/results/train-synth-cpu-trial) saw the plain mean fall to 0.29 with option accuracy at chance.
    """
    hidden, index, valid = forward_rows(
        model, batch, positions, keep=keep, capture=capture, capture_layer=capture_layer
    )
    if capture is not None and "word_ids" in capture:  # answer-word logits at the kept video tokens
        video = hidden[capture["video_kept"]]
        weight = model.lm_head.weight
        capture["word_logits"] = {name: video @ weight[ids].T for name, ids in capture["word_ids"].items()}
    device = hidden.device
    ids = batch["input_ids"].to(device).gather(1, index)
    is_answer = batch["answer_mask"].to(device).gather(1, index) & valid
    target = is_answer[:, 1:]  # token j + 1 is predicted from hidden state j
    logits = model.lm_head(hidden[:, :-1][target]).float()
    ce = torch.nn.functional.cross_entropy(logits, ids[:, 1:][target], reduction="none")
    rows = torch.arange(ids.shape[0], device=device)[:, None].expand_as(target)[target]
    first = batch["answer_first"].to(device).gather(1, index)[:, 1:][target]
    weight = torch.where(first, torch.full_like(ce, first_weight), torch.ones_like(ce))
    per_row = torch.zeros(ids.shape[0], device=device).index_add(0, rows, ce * weight)
    per_row = per_row / torch.zeros(ids.shape[0], device=device).index_add(0, rows, weight).clamp(min=1e-6)
    return per_row.mean(), per_row.detach()


# -------------------------------------------------------------------------------------------------- evaluation


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


# ------------------------------------------------------------------------------------------------------ training


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


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine from ``lr`` to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    positions: torch.Tensor,
    *,
    lr: float,
    clip: float = 1.0,
    bf16: bool = False,
    first_weight: float = 1.0,
    aux: AuxHeads | None = None,
    aux_weight: float = 0.0,
    aux_layer: int = 1,
    word_ids: dict[str, torch.Tensor] | None = None,
    evidence: EvidenceAttention | None = None,
    evidence_weight: float = 0.0,
    stats: dict[str, float] | None = None,
) -> tuple[float, torch.Tensor]:
    """One optimiser step on ``batch``; returns the answer loss and the per-row losses.

    With ``aux`` (and ``aux_weight > 0``) the step minimises ``answer + aux_weight * aux`` (the optimizer must
    hold the heads' parameters too); ``stats`` receives the auxiliary losses and accuracies. ``word_ids``
    (``{"color": [8], "shape": [6], "position": [4]}`` token ids of the answer words) adds the word probes of
    :meth:`AuxHeads._word_loss` through the model's own LM head. ``evidence`` (with ``evidence_weight > 0``) adds
    ``evidence_weight *`` :meth:`EvidenceAttention.loss`.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = next(model.parameters()).device
    use_aux = aux is not None and aux_weight > 0
    use_evidence = evidence is not None and evidence_weight > 0
    capture: dict[str, Any] | None = {} if use_aux or use_evidence else None
    if use_aux and word_ids:
        capture["word_ids"] = {k: v.to(device) for k, v in word_ids.items()}
    if use_evidence:
        evidence.capture.active = True
    with torch.enable_grad():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            try:
                loss, per_row = answer_loss(
                    model, batch, positions, first_weight=first_weight, capture=capture, capture_layer=aux_layer
                )
            finally:
                if use_evidence:
                    evidence.capture.active = False
            total = loss
            if use_evidence:
                ev_loss, ev_mass = evidence.loss(batch, capture)
                total = total + evidence_weight * ev_loss
                if stats is not None:
                    stats.update(evidence=float(ev_loss.detach()), evidence_mass=float(ev_mass))
            if use_aux:
                aux_loss, aux_stats = aux(capture, batch["labels"].to(device), batch)
                total = total + aux_weight * aux_loss
                if stats is not None:
                    stats.update({k: float(v.detach()) for k, v in aux_stats.items()}, aux=float(aux_loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if clip > 0:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
    return float(loss.detach()), per_row.cpu()


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    if device.type == "cpu":
        return 1 if cpus >= 3 else 0
    return max(0, min(12, cpus - 2))


def _state_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.state"


def save_checkpoint(model: Any, processor: Any, out: Path) -> None:
    """``save_pretrained`` of the model (safetensors) and the processor into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def _fmt(acc: dict[str, float] | None) -> str:
    if not acc:
        return "-"
    return " ".join(f"{k}={v:.3f}" for k, v in acc.items())


def write_readme(out: Path, cfg: TrainConfig, summary: dict[str, Any]) -> None:
    """The checkpoint's ``README.md``: what it is, how it was trained, how it scores."""
    n_params = summary.get("parameters", 0)
    start = f"initialised from `{cfg.init_from}` and then trained" if cfg.init_from else "trained from scratch"
    lines = [
        "# tokpress synth model: a tiny Qwen2.5-VL trained on procedural video QA",
        "",
        f"A `Qwen2_5_VLForConditionalGeneration` ({n_params / 1e6:.2f} M parameters) {start} by "
        "`tokpress.eval.synth.train` on the train split of `tokpress.eval.synth.tasks` "
        "(16 frames of 112x112 -> 128 video "
        "tokens). It answers with the option word followed by `<|im_end|>`, in the prompt format of "
        "`tokpress eval` (`tokpress.eval.accuracy.data.WORD_PROMPT`).",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "model = AutoModelForImageTextToText.from_pretrained(path)",
        "processor = AutoProcessor.from_pretrained(path)",
        "```",
        "",
        "## Training",
        "",
        f"- command: `{cfg.command or 'python -m tokpress.eval.synth.train'}`",
        f"- seed {cfg.seed}; steps run {summary.get('steps_done')} of {cfg.steps}; batch {cfg.batch} videos "
        f"({summary.get('rows_seen', 0)} question rows, {summary.get('videos_seen', 0)} videos in all)",
        f"- lr {cfg.lr} (warmup {cfg.warmup}, cosine to {cfg.min_lr_ratio:g}x); token drop p={cfg.token_drop} from "
        f"step {cfg.drop_start}, keep ratio U[{cfg.min_keep}, 1), patterns {', '.join(cfg.drop_patterns)}; "
        f"task mix {cfg.task_mix}",
        f"- device {summary.get('device')}; training time {summary.get('train_s', 0.0) / 60:.1f} min "
        f"(wall, evaluations included); torch {torch.__version__}, transformers {summary.get('transformers')}",
        f"- best checkpoint: step {summary.get('best_step')} (mean val accuracy {summary.get('best_val', 0.0):.3f})",
        f"- status: {summary.get('status')}",
        "- training curve: `curve.jsonl` (one JSON object per log line: step, loss, lr, elapsed_s; evaluation lines "
        "add val_accuracy per task)",
        "",
        "## Accuracy (all 128 video tokens, option log-likelihood, chance 0.25)",
        "",
        "| split | n | " + " | ".join(cfg.tasks) + " | mean |",
        "|---|---|" + "---|" * (len(cfg.tasks) + 1),
    ]
    for split, key, n in (("val", "best_val_accuracy", cfg.val_n), ("test", "test_accuracy", cfg.test_n)):
        acc = summary.get(key)
        if acc:
            cells = " | ".join(f"{acc.get(t, float('nan')):.3f}" for t in cfg.tasks)
            lines.append(f"| {split} | {n} | {cells} | {acc['mean']:.3f} |")
    by_question = summary.get("test_accuracy_by_question")
    if by_question:
        kinds = sorted(k for k in by_question if k != "mean")
        lines += [
            "",
            f"Every question of the {cfg.test_n} test videos, per kind of question:",
            "",
            "| " + " | ".join(kinds) + " |",
            "|" + "---|" * len(kinds),
            "| " + " | ".join(f"{by_question[k]:.3f}" for k in kinds) + " |",
        ]
    evals = [r for r in _read_curve(out / CURVE_FILE) if r.get("val_accuracy")]
    if evals:
        lines += [
            "",
            "## Validation curve (all video tokens; full curve with train loss per task in `curve.jsonl`)",
            "",
            "| step | minutes | " + " | ".join(cfg.tasks) + " | mean |",
            "|---|---|" + "---|" * (len(cfg.tasks) + 1),
        ]
        for r in evals:
            acc = r["val_accuracy"]
            cells = " | ".join(f"{acc.get(t, float('nan')):.2f}" for t in cfg.tasks)
            lines.append(f"| {r['step']} | {r['elapsed_s'] / 60:.1f} | {cells} | {acc['mean']:.3f} |")
    lines.append("")
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_curve(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or continue, with ``cfg.resume``) a training run; returns the run summary (also in the README)."""
    import transformers

    cfg.validate()
    out = Path(cfg.out)
    state_dir = _state_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    device = _resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = _default_workers(device) if cfg.workers is None else cfg.workers
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    processor = build_processor()
    model = build_model(cfg.size, seed=cfg.seed, attn=cfg.attn).to(device)
    synth = SynthConfig()
    aux = AuxHeads(cfg.size.text_hidden, synth.slots, synth.grid).to(device) if cfg.aux_weight > 0 else None
    optimizer = make_optimizer(model if aux is None else torch.nn.ModuleList([model, aux]), cfg)
    n_params = sum(p.numel() for p in model.parameters())
    curve = out / CURVE_FILE
    state: dict[str, Any] = {
        "step": 0,
        "elapsed": 0.0,
        "val": None,
        "best": -1.0,
        "best_step": None,
        "best_val": None,
        "rows": 0,
        "videos": 0,
    }
    if cfg.init_from and not (cfg.resume and (state_dir / STATE_FILE).is_file()):
        from transformers import AutoModelForImageTextToText

        model.load_state_dict(AutoModelForImageTextToText.from_pretrained(cfg.init_from).state_dict())
        logger.info("initialised from %s", cfg.init_from)
    if cfg.resume and (state_dir / STATE_FILE).is_file():
        saved = torch.load(state_dir / STATE_FILE, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        if aux is not None:
            aux.load_state_dict(saved["aux"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["run"])
        logger.info("resumed from %s at step %d", state_dir, state["step"])
    else:
        curve.write_text("", encoding="utf-8")
    (out / ARGS_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2), encoding="utf-8")
    logger.info(
        "synth model: %.2f M parameters on %s, %d data workers, batch %d videos",
        n_params / 1e6,
        device,
        workers,
        cfg.batch,
    )
    val = val_samples(cfg.val_n, cfg.tasks)
    prepared = prepare_samples(model, processor, val)
    rope = RopeCache(model)
    video_id = model.config.video_token_id
    word_ids = answer_word_ids(processor) if cfg.aux_words else None
    evidence = None
    if cfg.evidence_weight > 0:
        layer = cfg.size.text_layers - 1 if cfg.evidence_layer is None else cfg.evidence_layer
        evidence = EvidenceAttention(model, layer)
    call_start = time.perf_counter()  # --time-limit counts from here (this call), elapsed_s over the whole run
    t0 = call_start - state["elapsed"]
    stopped = False

    def evaluate_and_save(step: int) -> None:
        acc = accuracy_by_task(model, processor, prepared, batch=cfg.eval_batch)
        record: dict[str, Any] = {
            "step": step,
            "loss": None,
            "lr": lr_at(cfg, max(step - 1, 0)),
            "elapsed_s": round(time.perf_counter() - t0, 2),
            "videos_seen": state["videos"],
            "val_accuracy": acc,
        }
        for ratio in cfg.val_ratios:
            record.setdefault("val_accuracy_drop", {})[f"{ratio:g}"] = accuracy_by_task(
                model, processor, prepared, batch=cfg.eval_batch, ratio=ratio, seed=cfg.seed
            )
        _append_curve(curve, record)
        logger.info("step %d  val %s", step, _fmt(acc))
        state["val"] = acc
        if acc["mean"] >= state["best"]:
            state.update(best=acc["mean"], best_step=step, best_val=acc)
            save_checkpoint(model, processor, out)
        state["elapsed"] = time.perf_counter() - t0
        state_dir.mkdir(parents=True, exist_ok=True)
        run = dict(state, step=step)
        saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "run": run}
        if aux is not None:
            saved["aux"] = aux.state_dict()
        torch.save(saved, state_dir / STATE_FILE)

    if state["best_step"] is None:
        evaluate_and_save(0)
    step = state["step"]
    window: list[float] = []
    task_loss: dict[str, list[float]] = {}
    aux_window: dict[str, list[float]] = {}
    while step < cfg.steps and not stopped:
        block_end = min(cfg.steps, (step // cfg.eval_every + 1) * cfg.eval_every)
        specs = block_specs(cfg, step, block_end, task_weights(cfg.tasks, state["val"], cfg.task_mix))
        for batch in iterate_batches(specs, synth, workers, cfg.prefetch):
            positions = rope.positions(batch, video_id)
            loss, per_row = train_step(
                model,
                optimizer,
                batch,
                positions,
                lr=lr_at(cfg, step),
                clip=cfg.clip,
                bf16=cfg.bf16,
                first_weight=cfg.first_token_weight,
                aux=aux,
                aux_weight=cfg.aux_weight,
                aux_layer=cfg.aux_layer,
                word_ids=word_ids,
                evidence=evidence,
                evidence_weight=cfg.evidence_weight,
                stats=(stats := {}),
            )
            for k, v in stats.items():
                aux_window.setdefault(k, []).append(v)
            step += 1
            state["rows"] += int(batch["input_ids"].shape[0])
            state["videos"] += int(batch["video_grid_thw"].shape[0])
            window.append(loss)
            for t, value in zip(batch["row_task"].tolist(), per_row.tolist()):
                task_loss.setdefault(TASKS[t], []).append(value)
            over = cfg.time_limit is not None and time.perf_counter() - call_start > cfg.time_limit
            stopped = over and step < block_end
            if step % cfg.log_every == 0 or step == block_end or stopped:
                record = {
                    "step": step,
                    "loss": float(np.mean(window)),
                    "lr": lr_at(cfg, step - 1),
                    "elapsed_s": round(time.perf_counter() - t0, 2),
                    "videos_seen": state["videos"],
                    "task_loss": {t: float(np.mean(v)) for t, v in task_loss.items()},
                }
                if aux_window:
                    record["aux"] = {k: round(float(np.mean(v)), 4) for k, v in aux_window.items()}
                _append_curve(curve, record)
                logger.info("step %d  loss %.4f  (%.1f s)", step, record["loss"], record["elapsed_s"])
                window, task_loss, aux_window = [], {}, {}
            if stopped:
                break
        evaluate_and_save(step)  # at the block's end, or mid-block when stopped (state saved for --resume)
    if stopped:
        logger.warning("time limit: stopped at step %d; --resume continues (a new block starts there)", step)
    summary: dict[str, Any] = {
        "status": "finished" if step >= cfg.steps else f"stopped by --time-limit at step {step} (continue: --resume)",
        "steps_done": step,
        "train_s": time.perf_counter() - t0,
        "best_step": state["best_step"],
        "best_val": state["best"],
        "best_val_accuracy": state["best_val"],
        "videos_seen": state["videos"],
        "rows_seen": state["rows"],
        "parameters": n_params,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "transformers": transformers.__version__,
    }
    if step >= cfg.steps and cfg.test_n > 0:
        summary["test_accuracy"] = evaluate_checkpoint(
            out, cfg.test_n, tasks=cfg.tasks, device=device, batch=cfg.eval_batch
        )
        logger.info("test (best checkpoint, %d videos): %s", cfg.test_n, _fmt(summary["test_accuracy"]))
        summary["test_accuracy_by_question"] = evaluate_checkpoint(
            out, cfg.test_n, tasks=cfg.tasks, device=device, batch=cfg.eval_batch, by_question=True
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_readme(out, cfg, summary)
    return summary


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


# ------------------------------------------------------------------------------------------------------- command


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of a command line."""
    d = TrainConfig()
    s = ModelSize()
    p = argparse.ArgumentParser(prog="python -m tokpress.eval.synth.train", description=__doc__.split("\n")[0])
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry: parse, log to stderr, train."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
