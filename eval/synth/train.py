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

**Not done here:** per-task difficulty schedules beyond ``--easy-until``; training through tokpress's own hooks.

**Modules.** This one holds the training loop and the entry point; the options are
:mod:`tokpress.eval.synth.train_config`; the forward pass with token drop and the answer loss
:mod:`tokpress.eval.synth.forward`; the task mix and batch specs :mod:`tokpress.eval.synth.curriculum`; the
schedule, optimiser and step :mod:`tokpress.eval.synth.optim`; validation and the test score
:mod:`tokpress.eval.synth.validation`; what a run writes :mod:`tokpress.eval.synth.run_files`. The batches
(rendering, encoding, per-token labels, evidence) are :mod:`tokpress.eval.synth.batches`, the training-only probes
and the evidence head :mod:`tokpress.eval.synth.heads`, the model and tokenizer :mod:`tokpress.eval.synth.model`.
The auxiliary probes, the evidence head, the task mix, token drop, validation, optimiser and determinism are
documented in the modules that implement them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokpress.eval.synth.batches import iterate_batches
from tokpress.eval.synth.curriculum import block_specs, task_weights
from tokpress.eval.synth.forward import RopeCache
from tokpress.eval.synth.heads import AuxHeads, EvidenceAttention, answer_word_ids
from tokpress.eval.synth.model import FAMILY, MICRO, ModelSize, build_model, build_processor, synth_model_config
from tokpress.eval.synth.optim import lr_at, make_optimizer, train_step
from tokpress.eval.synth.run_files import (
    ARGS_FILE,
    CURVE_FILE,
    STATE_FILE,
    append_curve,
    format_accuracy,
    save_checkpoint,
    state_dir_of,
    write_readme,
)
from tokpress.eval.synth.tasks import TASKS, SynthConfig
from tokpress.eval.synth.train_config import TrainConfig, default_workers, parse_args, resolve_device
from tokpress.eval.synth.validation import accuracy_by_task, evaluate_checkpoint, prepare_samples, val_samples

__all__ = ["FAMILY", "MICRO", "ModelSize", "build_model", "build_processor", "synth_model_config", "train", "main"]

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or continue, with ``cfg.resume``) a training run; returns the run summary (also in the README)."""
    import transformers

    cfg.validate()
    out = Path(cfg.out)
    state_dir = state_dir_of(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = default_workers(device) if cfg.workers is None else cfg.workers
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
        append_curve(curve, record)
        logger.info("step %d  val %s", step, format_accuracy(acc))
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
                append_curve(curve, record)
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
        logger.info("test (best checkpoint, %d videos): %s", cfg.test_n, format_accuracy(summary["test_accuracy"]))
        summary["test_accuracy_by_question"] = evaluate_checkpoint(
            out, cfg.test_n, tasks=cfg.tasks, device=device, batch=cfg.eval_batch, by_question=True
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_readme(out, cfg, summary)
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry: parse, log to stderr, train."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
