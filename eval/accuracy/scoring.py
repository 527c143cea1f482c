"""Scoring multiple-choice answers on a (compressed) video prompt: option log-likelihoods on the cached prefill, or
greedy generation matched to the options."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tokpress.errors import InputError
from tokpress.eval.accuracy.data import (
    EvalSample,
    answer_texts,
    chat_prompt,
    choice_of,
    encode_answers,
    format_prompt,
)
from tokpress.patches.cache_arg import CACHE_KWARG, output_cache

logger = logging.getLogger("tokpress")


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


@dataclass
class OptionScores:
    """Per option: ``logprobs`` (sum over its tokens), ``tokens`` (count), ``scores`` (by the rule) and the argmax."""

    logprobs: list[float]
    tokens: list[int]
    scores: list[float]
    chosen: int


def choose(logprobs: Sequence[float], tokens: Sequence[int], normalize: str = "mean") -> OptionScores:
    """Apply the scoring rule: mean (per-token) or summed log-likelihood; argmax, first on ties."""
    scores = [lp / t if normalize == "mean" else lp for lp, t in zip(logprobs, tokens)]
    return OptionScores(list(logprobs), list(tokens), scores, int(np.argmax(scores)))


# -------------------------------------------------------------------------------------------------- tensors


@dataclass
class Prepared:
    """A sample ready for the model: its processed single-prompt inputs and its options' token ids."""

    sample: EvalSample
    inputs: dict[str, torch.Tensor]  # batch of one, on the model's device
    options: list[list[int]]
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    frames: np.ndarray | None = None  # [T, H, W, 3] uint8, the frames given to the processor (frame-scoring pre-pass)
    fps: float | None = None  # their frame rate


def _device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def prepare(
    model: torch.nn.Module,
    processor: Any,
    sample: EvalSample,
    *,
    answer_format: str = "word",
    append_eos: bool | None = None,
    prompt: str | None = None,
    frames: int | None = None,
    fps: float | None = None,
) -> Prepared:
    """Decode the sample's video if needed, run the processor on its prompt, encode its options."""
    from tokpress.eval.video import video_metadata_kwargs

    start = time.perf_counter()
    multiple = 2 if getattr(model.config, "model_type", "").startswith("qwen") else 1
    video, video_fps = _frames_of(sample, frames, fps, multiple)
    decode_ms = (time.perf_counter() - start) * 1e3 if sample.frames is None else 0.0
    if sample.prompt is not None and prompt is None:
        text = chat_prompt(processor, sample.prompt)
    else:
        text = chat_prompt(processor, format_prompt(sample.question, sample.options, answer_format, prompt))
    start = time.perf_counter()
    metadata = video_metadata_kwargs(processor, len(video), video_fps)
    batch = processor(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False, **metadata)
    preprocess_ms = (time.perf_counter() - start) * 1e3
    device, dtype = _device_dtype(model)
    inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    for key in ("pixel_values_videos", "pixel_values"):
        if key in inputs:
            inputs[key] = inputs[key].to(dtype)
    eos = (answer_format == "word") if append_eos is None else append_eos
    options = encode_answers(processor.tokenizer, answer_texts(sample.options, answer_format), eos)
    return Prepared(sample, inputs, options, decode_ms, preprocess_ms, video, video_fps)


def _frames_of(
    sample: EvalSample, frames: int | None, fps: float | None, multiple: int
) -> tuple[np.ndarray, float | None]:
    """The sample's frames ``[T, H, W, 3]`` uint8 and their frame rate: in memory, a frame folder, or decoded
    (``frames`` or ``fps`` of the run, else the annotation's count, else at most ``sample.max_frames``, else 2 fps)."""
    if sample.frames is not None:
        return sample.frames, sample.fps
    from pathlib import Path

    from tokpress.eval.video import load_video

    if Path(sample.video).is_dir():
        from tokpress.eval.accuracy.benchmarks.common import load_frame_dir

        video, rate = load_frame_dir(sample.video, frames or sample.max_frames or 32, sample.clip)
        keep = max(multiple, len(video) // multiple * multiple)
        return (video[:keep] if len(video) >= keep else np.concatenate([video] * multiple)[:keep]), rate
    count = frames or (None if fps else sample.num_frames)
    if count is None and fps is None and sample.max_frames:
        video, info = load_video(sample.video, max_frames=sample.max_frames, multiple_of=multiple)
    else:
        video, info = load_video(
            sample.video, num_frames=count, fps=None if count else (fps or 2.0), multiple_of=multiple
        )
    return video, info.get("sampled_fps") or None


def stack_rows(
    items: Sequence[dict[str, torch.Tensor]], counts: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """One left-padded batch holding ``counts[i]`` copies of the single-prompt inputs ``items[i]``, in order.

    Sequence tensors (``input_ids``, ``attention_mask``, ``mm_token_type_ids``) are left-padded (``pad_id`` / 0);
    every other tensor is concatenated along dim 0 in row order — per-video rows (Qwen's flattened patches and
    ``video_grid_thw``, ``second_per_grid_ts``) and per-sample ones (LLaVA-OneVision's ``[1, T, C, H, W]``) alike —
    which is what the processor returns for the same prompts and videos batched with left padding.
    """
    rows = [item for item, count in zip(items, counts) for _ in range(count)]
    if not rows:
        raise ValueError("nothing to stack")
    width = max(int(item["input_ids"].shape[1]) for item in rows)
    out: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        values = [item[key] for item in rows]
        if key in _SEQUENCE_KEYS:
            fill = pad_id if key == "input_ids" else 0
            padded = [torch.nn.functional.pad(v, (width - v.shape[1], 0), value=fill) for v in values]
            out[key] = torch.cat(padded, 0)
            continue
        try:
            out[key] = torch.cat(values, 0)
        except RuntimeError as exc:
            raise InputError(f"cannot batch {key!r} of these samples ({exc}); use batch=1") from exc
    return out


def _continuation_positions(
    model: torch.nn.Module, prompt: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor | None:
    """M-RoPE position ids of the continuation ``ids`` after the padded ``prompt`` (None: 1-D RoPE families)."""
    base = getattr(model, "model", None)
    rope_index = getattr(base, "get_rope_index", None)
    if rope_index is None or "mm_token_type_ids" not in prompt:
        return None
    full = torch.cat([prompt["input_ids"], ids], 1)
    types = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(ids)], 1)
    accepted = inspect.signature(rope_index).parameters
    extra = {
        k: prompt[k]
        for k in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts")
        if k in prompt and k in accepted
    }
    positions, _ = rope_index(full, types, attention_mask=mask, **extra)
    return positions[..., prompt["input_ids"].shape[1] :]


def _has_decode_stage(model: torch.nn.Module) -> bool:
    engine = getattr(model, "tokpress", None)
    runner = getattr(engine, "runner", None)
    return bool(getattr(runner, "decode_stages", None))


@torch.no_grad()
def option_logprobs(
    model: torch.nn.Module, prepared: Sequence[Prepared], pad_id: int, *, stepwise: bool | None = None
) -> tuple[list[list[tuple[float, int]]], Any]:
    """Teacher-forced log-likelihood of every option of every prepared sample (see the module doc).

    Returns:
        per sample, per option ``(sum of log-probs, token count)``; and ``model.tokpress.last`` of the scoring
        prefill (None when unpatched).
    """
    counts = [len(p.options) for p in prepared]
    options = [o for p in prepared for o in p.options]
    batch = stack_rows([p.inputs for p in prepared], counts, pad_id)
    device = batch["input_ids"].device
    out = model(**batch, use_cache=True, logits_to_keep=1)
    engine = getattr(model, "tokpress", None)
    stats = engine.last if engine is not None else None
    first = torch.log_softmax(out.logits[:, -1].float(), -1)
    width = max(map(len, options))
    ids = torch.full((len(options), width), pad_id, dtype=torch.long, device=device)
    for row, opt in enumerate(options):
        ids[row, : len(opt)] = torch.tensor(opt, device=device)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(ids, dtype=batch["attention_mask"].dtype)], 1)
    positions = _continuation_positions(model, batch, ids, mask)
    prompt_len = batch["input_ids"].shape[1]
    cache = output_cache(out)
    step_logits: list[torch.Tensor] = []
    need = width - 1  # the last option token needs no prediction after it
    if need > 0:
        stepwise = _has_decode_stage(model) if stepwise is None else stepwise
        chunks = [(j, j + 1) for j in range(need)] if stepwise else [(0, need)]
        for start, stop in chunks:
            kwargs: dict[str, Any] = {"attention_mask": mask[:, : prompt_len + stop]}
            if positions is not None:
                kwargs["position_ids"] = positions[..., start:stop]
            kwargs[CACHE_KWARG] = cache
            step = model(input_ids=ids[:, start:stop], use_cache=True, **kwargs)
            cache = output_cache(step)
            step_logits.append(torch.log_softmax(step.logits.float(), -1))
    rest = torch.cat(step_logits, 1) if step_logits else None
    results: list[list[tuple[float, int]]] = []
    row = 0
    for count in counts:
        per = []
        for _ in range(count):
            opt = options[row]
            total = float(first[row, opt[0]])
            if len(opt) > 1:
                tail = torch.tensor(opt[1:], device=device)
                total += float(rest[row, torch.arange(len(opt) - 1, device=device), tail].sum())
            per.append((total, len(opt)))
            row += 1
        results.append(per)
    return results, stats


def score_options(
    model: torch.nn.Module,
    processor: Any,
    sample: EvalSample,
    *,
    answer_format: str = "word",
    normalize: str = "mean",
    append_eos: bool | None = None,
    prompt: str | None = None,
) -> OptionScores:
    """Score the options of one sample with the module's rule (works with or without tokpress applied)."""
    prepared = prepare(model, processor, sample, answer_format=answer_format, append_eos=append_eos, prompt=prompt)
    pad_id = processor.tokenizer.pad_token_id or 0
    (per,), _ = option_logprobs(model, [prepared], pad_id)
    return choose([lp for lp, _ in per], [t for _, t in per], normalize)


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module, processor: Any, prepared: Sequence[Prepared], answer_format: str, max_new_tokens: int
) -> list[tuple[str, int]]:
    """Greedy answers of a batch: ``(text, matched option index or -1)`` per sample."""
    tok = processor.tokenizer
    batch = stack_rows([p.inputs for p in prepared], [1] * len(prepared), tok.pad_token_id or 0)
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id
    )
    new = out[:, batch["input_ids"].shape[1] :]
    texts = [tok.decode(row, skip_special_tokens=True) for row in new]
    return [(t, choice_of(p.sample, t, answer_format)) for t, p in zip(texts, prepared)]


# ---------------------------------------------------------------------------------------------------- runner
