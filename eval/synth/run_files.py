"""The files a synth training run writes: the checkpoint, the curve, the README and the resume state.

``OUT/`` holds the Hugging Face checkpoint (``save_pretrained`` of the model and the processor), :data:`CURVE_FILE`,
:data:`ARGS_FILE`, ``summary.json`` and ``README.md``; the training state for ``--resume`` is
``OUT.state/`` :data:`STATE_FILE` (:func:`state_dir_of`), not part of the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tokpress.eval.synth.train_config import TrainConfig

CURVE_FILE = "curve.jsonl"
ARGS_FILE = "training_args.json"
STATE_FILE = "state.pt"


def state_dir_of(out: Path) -> Path:
    return out.parent / f"{out.name}.state"


def save_checkpoint(model: Any, processor: Any, out: Path) -> None:
    """``save_pretrained`` of the model (safetensors) and the processor into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def format_accuracy(acc: dict[str, float] | None) -> str:
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
    evals = [r for r in read_curve(out / CURVE_FILE) if r.get("val_accuracy")]
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


def read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_curve(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
