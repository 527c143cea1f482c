"""The tokpress side of the lmms-eval wrappers, free of lmms-eval (unit-testable without it).

- :func:`split_args` takes the tokpress keys out of lmms-eval's ``--model_args`` (the wrapped class refuses keys it
  does not know); :func:`check_args` validates them against the checkpoint's config before any weight loads.
- :class:`PromptRecorder` applies tokpress for the length of one lmms-eval call (``generate_until`` /
  ``loglikelihood``), records every prompt's token counts and stage times, and on exit removes both its hooks and
  tokpress's: outside a call the model is exactly the model lmms-eval loaded.
- :func:`summarize` reduces the records to the numbers logged next to lmms-eval's own throughput metrics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tokpress
from tokpress.api import vision_encoder
from tokpress.config import build_config
from tokpress.errors import ConfigError, UnsupportedModelError

logger = logging.getLogger("tokpress")

#: ``--model_args`` keys that belong to tokpress (all others go to lmms-eval's wrapper)
APPLY_KEYS = ("method", "outer", "inner", "retain_ratio", "outer_ratio", "inner_ratio", "inner_layer")
OPTION_KEYS = ("outer_options", "inner_options")
LOG_KEY = "tokpress_log"  # a JSONL file receiving one record per prompt
OPTION_PREFIX = "tp_"  # tp_<name>=<value>: a policy option, routed like tokpress.apply(**options)


@dataclass
class TokpressArgs:
    """The tokpress part of ``--model_args``; :meth:`apply_kwargs` is what :func:`tokpress.apply` receives."""

    method: str | None = None
    outer: str | None = None
    inner: str | None = None
    retain_ratio: float | None = None
    outer_ratio: float | None = None
    inner_ratio: float | None = None
    inner_layer: int | None = None
    outer_options: dict[str, Any] | None = None
    inner_options: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    @property
    def active(self) -> bool:
        """False when no method or policy was named: the wrapper then runs the model uncompressed."""
        return any(v is not None for v in (self.method, self.outer, self.inner))

    def apply_kwargs(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in APPLY_KEYS + OPTION_KEYS if getattr(self, k) is not None}
        out.update(self.options)
        return out

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.apply_kwargs().items()) or "uncompressed"


def _as_options(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{key} must be a JSON object, e.g. {key}='{{\"alpha\": 0.5}}'; got {value!r}")
    return parsed


def split_args(kwargs: dict[str, Any]) -> tuple[TokpressArgs, dict[str, Any]]:
    """Split lmms-eval's parsed ``--model_args`` into tokpress's arguments and the wrapper's.

    lmms-eval has already turned ``"0.1"`` into ``0.1`` and ``"2"`` into ``2``; the ratios are made floats and
    ``inner_layer`` an int here, and any other type is left for :func:`tokpress.config.build_config` to refuse.
    """
    rest = dict(kwargs)
    args = TokpressArgs()
    for key in APPLY_KEYS:
        if key in rest:
            value = rest.pop(key)
            if key.endswith("ratio") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            setattr(args, key, value)
    for key in OPTION_KEYS:
        if key in rest:
            setattr(args, key, _as_options(key, rest.pop(key)))
    for key in [k for k in rest if k.startswith(OPTION_PREFIX)]:
        args.options[key[len(OPTION_PREFIX) :]] = rest.pop(key)
    if LOG_KEY in rest:
        args.log = str(rest.pop(LOG_KEY))
    return args, rest


def _num_layers(config: Any) -> int:
    text = getattr(config, "text_config", None) or getattr(config, "llm_config", None) or config
    return int(text.num_hidden_layers)


def check_args(args: TokpressArgs, pretrained: str, families: tuple[str, ...], model_id: str) -> None:
    """Refuse bad tokpress arguments before lmms-eval's wrapper loads any weight.

    Reads only ``pretrained``'s config (local folder or hub cache): its ``model_type`` must be one the wrapper
    loads, and the arguments must resolve for its decoder depth (:func:`tokpress.config.build_config`).

    Raises:
        UnsupportedModelError: the checkpoint's family is not one of ``families``, or tokpress has no adapter.
        ConfigError: a method, ratio, layer or option is invalid.
    """
    from transformers import AutoConfig

    from tokpress.registry import adapter_names

    config = AutoConfig.from_pretrained(pretrained)
    model_type = config.model_type
    if model_type not in families:
        from tokpress.integrations.lmms_eval.manifest import WRAPPERS

        fits = [w.model_id for w in WRAPPERS if model_type in w.families]
        hint = f"use --model {fits[0]}" if fits else f"tokpress supports {', '.join(adapter_names())}"
        raise UnsupportedModelError(
            f"{model_id} loads {', '.join(families)} checkpoints, {pretrained} is {model_type}: {hint}"
        )
    if args.active:
        built = build_config(
            args.method,
            num_layers=_num_layers(config),
            **{k: v for k, v in args.apply_kwargs().items() if k != "method"},
        )
        scorer = getattr(built.outer.options, "scorer", None) if built.outer else None
        if scorer in ("lvlm", "given"):
            raise ConfigError(
                f"framebudget scorer={scorer!r} (e.g. method=quota) needs each request's frame scores, which "
                "lmms-eval's model wrappers cannot hand over; run it with `tokpress eval --benchmark videomme "
                "--methods quota` (the pre-pass is timed into TTFT there), or use scorer=similarity here"
            )


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class PromptRecorder:
    """``with PromptRecorder(model, args) as rec:`` — tokpress applied and every prompt recorded until exit.

    A prompt is recorded when a forward call produced new statistics (``model.tokpress.last`` changed): the
    prefill of a ``generate()`` or a scoring forward. Each record holds, per sample of the batch, the video tokens
    in the prompt, after the outer stage and after each inner stage, the tokens each decoder layer saw, and the
    times: ``prefill_s`` (the forward call), ``vision_s`` (the vision encoder's calls since the previous prompt:
    ``generate()`` may encode the video before the forward), ``ttft_s`` (both, each counted once) and
    ``compression_s`` (tokpress's hooks). Times synchronise CUDA, so they cover the kernels launched.

    With ``args.active`` False nothing is applied and nothing is recorded (the uncompressed baseline).
    """

    def __init__(self, model: nn.Module, args: TokpressArgs) -> None:
        self.model = model
        self.args = args
        self.records: list[dict[str, Any]] = []
        self._handles: list[Any] = []
        self._ctx = None
        self._start = 0.0
        self._vision: list[tuple[float, float]] = []  # vision-encoder calls since the last record
        self._vision_start = 0.0
        self._seen: Any = None
        self._prompts = 0

    # ------------------------------------------------------------------------------------------------ hooks
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._start = _now(self._device())

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        engine = getattr(self.model, "tokpress", None)
        stats = getattr(engine, "last", None)
        if stats is None or stats is self._seen:
            return
        self._seen = stats
        elapsed = _now(self._device()) - self._start
        prompt, self._prompts = self._prompts, self._prompts + 1
        vision = sum(end - start for start, end in self._vision)
        outside = sum(end - start for start, end in self._vision if start < self._start)
        self._vision.clear()
        for b, video in enumerate(stats.video_tokens):
            self.records.append(
                {
                    "prompt": prompt,
                    "sample": b,
                    "video_tokens": video,
                    "after_outer": stats.after_outer[b],
                    "inner_layers": list(stats.inner_layers),
                    "after_inner": [counts[b] for counts in stats.after_inner],
                    "tokens_per_layer": stats.tokens_per_layer[b],
                    "video_tokens_per_layer": stats.video_tokens_per_layer[b],
                    "prefill_s": elapsed,
                    "vision_s": vision,
                    "ttft_s": elapsed + outside,
                    "compression_s": stats.compression_s,
                }
            )

    def _vision_pre(self, module: nn.Module, args: tuple) -> None:
        self._vision_start = _now(self._device())

    def _vision_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._vision.append((self._vision_start, _now(self._device())))

    # ------------------------------------------------------------------------------------------------ context
    def __enter__(self) -> PromptRecorder:
        if not self.args.active:
            return self
        self._ctx = tokpress.compressed(
            self.model, self.args.method, **{k: v for k, v in self.args.apply_kwargs().items() if k != "method"}
        )
        self._ctx.__enter__()
        self._seen = self.model.tokpress.last
        self._handles.append(self.model.register_forward_pre_hook(self._pre, with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(self._post, with_kwargs=True))
        vision = vision_encoder(self.model)
        self._handles.append(vision.register_forward_pre_hook(self._vision_pre))
        self._handles.append(vision.register_forward_hook(self._vision_post))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
            self._ctx = None
        if self.args.log and self.records:
            path = Path(self.args.log)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                for rec in self.records:
                    f.write(json.dumps({"config": self.args.describe(), **rec}) + "\n")


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the recorded samples, keyed ``tokpress_*`` (lmms-eval averages them again over calls)."""
    if not records:
        return {}
    n = len(records)

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in records) / n

    final = [r["after_inner"][-1] if r["after_inner"] else r["after_outer"] for r in records]
    per_prompt = {r["prompt"]: r for r in records}.values()  # times are per forward, not per sample
    return {
        "tokpress_samples": float(n),
        "tokpress_video_tokens": mean("video_tokens"),
        "tokpress_video_tokens_after_outer": mean("after_outer"),
        "tokpress_video_tokens_last_layer": sum(final) / n,
        "tokpress_mean_tokens_per_layer": sum(sum(r["tokens_per_layer"]) / len(r["tokens_per_layer"]) for r in records)
        / n,
        "tokpress_prefill_s": sum(r["prefill_s"] for r in per_prompt) / len(per_prompt),
        "tokpress_vision_s": sum(r["vision_s"] for r in per_prompt) / len(per_prompt),
        "tokpress_ttft_s": sum(r["ttft_s"] for r in per_prompt) / len(per_prompt),
        "tokpress_compression_s": sum(r["compression_s"] for r in per_prompt) / len(per_prompt),
    }


__all__ = ["TokpressArgs", "split_args", "check_args", "PromptRecorder", "summarize"]
