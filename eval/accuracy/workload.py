"""The model ``tokpress eval`` scores: a checkpoint, the shipped synth model, or the built-in tiny one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokpress.eval.accuracy.config import DEFAULT_N, TINY_MODEL, EvalConfig

logger = logging.getLogger("tokpress")

#: Where the trained synth model ships; used when no model is given and it exists.
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "tokpress-synth-qwen2.5-vl"
RANDOM_WEIGHTS_NOTE = (
    "The model has RANDOM weights (built-in tiny Qwen2.5-VL; the trained synth model is not installed): accuracies "
    "are chance-level noise. This run checks the machinery, not the methods."
)


@dataclass
class EvalWorkload:
    """A model, its processor and a description of the environment."""

    name: str
    model: torch.nn.Module
    processor: Any
    environment: dict[str, str]
    random_weights: bool = False


def make_eval_workload(config: EvalConfig) -> EvalWorkload:
    """The model to evaluate: ``config.model`` (``"tiny"``: the built-in one), else the shipped synth model when it
    is installed, else the built-in tiny random-weight Qwen2.5-VL (the report then says so)."""
    from tokpress.eval.bench.workloads import device_map_arg, environment, resolve_device

    config.validate()
    device, dtype = resolve_device(config)  # reads .device and .dtype only
    path = config.model
    if path is None and (SHIPPED_MODEL / "config.json").is_file():
        path = str(SHIPPED_MODEL)
    if path is None or path == TINY_MODEL:
        from tokpress.eval.tiny.families import tiny_model
        from tokpress.eval.tiny.processor import tiny_processor

        if path is None:
            logger.warning("tokpress eval: %s not found; using the built-in random-weight model", SHIPPED_MODEL)
        model = tiny_model("qwen2_5_vl", attn=config.attn, dtype=dtype).to(device)
        env = environment(model, device, dtype, config.attn)
        env["model"] = "built-in tiny Qwen2.5-VL (RANDOM weights, 4 layers, hidden 64)"
        work = EvalWorkload("tiny-qwen2.5-vl", model, tiny_processor("qwen2_5_vl"), env, random_weights=True)
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=dtype, attn_implementation=config.attn, device_map=device_map_arg(config, device)
        ).eval()
        env = environment(model, device, dtype, config.attn)
        env["model"] = path
        work = EvalWorkload(Path(path).name, model, AutoProcessor.from_pretrained(path), env)
    if config.benchmark == "synth":
        env["benchmark"] = f"synth test split, {config.n or DEFAULT_N} videos (namespace {config.synth.seed})"
    elif config.real:
        subs = ", with subtitles" if config.subtitles else ""
        env["benchmark"] = f"{config.benchmark} ({config.data}{subs}; lmms-eval 0.7.3 prompt and extraction)"
    else:
        env["benchmark"] = str(config.benchmark)
    env["scoring"] = (
        f"{config.scoring}: {config.answer_format}s"
        + {
            "logits": f", {config.normalize} log-likelihood",
            "generate": ", greedy decoding",
            "both": f", {config.normalize} log-likelihood and greedy decoding ({config.max_new_tokens} tokens)",
        }[config.scoring]
    )
    return work
