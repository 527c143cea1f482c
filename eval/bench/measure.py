"""One row of ``tokpress bench``: a method at a ratio applied to a workload, its requests timed by stage, and the
result record (schema in :mod:`~tokpress.eval.bench.records`).

Stages of one measured request (all on a CUDA-synchronised clock, see :mod:`tokpress.eval.bench.timing`):

* ``video_decode`` — reading and sampling the video file (0 for synthetic inputs);
* ``preprocess`` — the HF processor (resize, patchify, tokenise);
* ``vision`` — the vision encoder and projector;
* ``compression`` — tokpress's hooks: scoring, selection, gathers (outer and inner);
* ``prefill`` — the language model's prefill forward, less the compression inside it;
* ``first_decode`` — the next forward (one token); reported beside TTFT, not part of it.

TTFT = video decode + preprocessing + the time from calling ``generate()`` until the prefill's logits exist.
The *oracle* of a ratio is the same model fed the same number of video tokens by a fixed, precomputed index
(evenly spaced per frame), so its only cost over the physical limit is one gather.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import torch

import tokpress
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.bench.timing import Clock, StageTimer
from tokpress.eval.methods import parse_method
from tokpress.patches.cache_arg import output_cache

if TYPE_CHECKING:
    from tokpress.eval.bench.runner import BenchConfig, Workload


def _median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _kv_megabytes(cache) -> float | None:
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    total = sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)
    return total / 2**20


def _peak_megabytes(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _vision_module(model) -> torch.nn.Module:
    base = model.model
    return getattr(base, "visual", None) or base.vision_tower


class Runner:
    """Measures one workload under a sequence of methods; owns the stage hooks."""

    def __init__(self, work: Workload, config: BenchConfig) -> None:
        self.work, self.config = work, config
        self.device = next(work.model.parameters()).device
        self.clock = Clock(self.device)
        lm = work.model.model.language_model
        self.timer = StageTimer(self.clock, {"vision": _vision_module(work.model), "lm": lm, "top": work.model})
        self.text_config = lm.config
        self.reference: torch.Tensor | None = None

    def close(self) -> None:
        self.timer.remove()
        tokpress.remove(self.work.model)

    def _apply(self, method: str, ratio: float) -> None:
        model = self.work.model
        tokpress.remove(model)
        if method == "oracle":
            tokpress.apply(model, outer="uniform", retain_ratio=ratio)
            inputs, _, _ = self.work.make_inputs()
            with torch.no_grad():
                model(**inputs)  # learn the grid once, then replay the index with no selection work
            kept = model.tokpress.last.kept["outer"]
            tokpress.apply(model, outer="fixed", retain_ratio=ratio, outer_options={"keep": kept})
        elif (kwargs := parse_method(method)) is not None:
            tokpress.apply(model, retain_ratio=ratio, **kwargs)
        if hasattr(model, "tokpress"):
            model.tokpress.sync_timing = True

    @torch.no_grad()
    def _request(self) -> dict[str, Any]:
        """One timed request: generate until the first decode step has run."""
        model = self.work.model
        inputs, decode_s, preprocess_s = self.work.make_inputs()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.timer.reset()
        start = self.clock.now()
        out = model.generate(
            **inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, return_dict_in_generate=True
        )
        stamps = self.timer.stamps
        prefill_end = stamps.calls["top"][0][1]
        last = getattr(model, "tokpress", None) and model.tokpress.last
        compression = last.compression_s if last else 0.0
        vision = sum(e - s for s, e in stamps.calls.get("vision", []) if e <= prefill_end)
        return {
            "ttft": decode_s + preprocess_s + prefill_end - start,
            "video_decode": decode_s,
            "preprocess": preprocess_s,
            "vision": vision,
            "compression": compression,
            "prefill": (stamps.span("lm", 0) or 0.0) - compression,
            "first_decode": stamps.span("top", 1),
            "peak_memory_mb": _peak_megabytes(self.device),
            "kv_cache_mb": _kv_megabytes(output_cache(out)),
        }

    @torch.no_grad()
    def _answer(self) -> tuple[torch.Tensor, float | None]:
        """Greedy answer ids and decode tokens/s over ``max_new_tokens`` forced tokens."""
        n = self.config.max_new_tokens
        inputs, _, _ = self.work.make_inputs()
        self.timer.reset()
        out = self.work.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        end = self.clock.now()
        prefill_end = self.timer.stamps.calls["top"][0][1]
        speed = (n - 1) / (end - prefill_end) if n > 1 and end > prefill_end else None
        return out[0, inputs["input_ids"].shape[1] :], speed

    def measure(self, method: str, ratio: float) -> dict[str, Any]:
        self._apply(method, ratio)
        for _ in range(self.config.warmup):
            self._request()
        runs = [self._request() for _ in range(self.config.repeats)]
        answer, speed = self._answer()
        if method == "none":
            self.reference = answer
        model = self.work.model
        last = model.tokpress.last if hasattr(model, "tokpress") else None
        inputs, _, _ = self.work.make_inputs()
        n_video = int((inputs["input_ids"][0] == video_placeholder_id(model.config)).sum())
        seq = int(inputs["attention_mask"][0].sum())
        per_layer = last.tokens_per_layer[0] if last else [seq] * self.text_config.num_hidden_layers
        stage_names = ("video_decode", "preprocess", "vision", "compression", "prefill", "first_decode")
        record = {
            "model": self.work.name,
            "method": method,
            "ratio": ratio,
            "video_tokens": n_video,
            "into_llm": last.after_outer[0] if last else n_video,
            "tokens_per_layer": per_layer,
            "ttft_ms": {k: v * 1e3 for k, v in _median_spread([r["ttft"] for r in runs]).items()},
            "stages_ms": {
                s: None if any(r[s] is None for r in runs) else 1e3 * statistics.median(r[s] for r in runs)
                for s in stage_names
            },
            "decode_tokens_per_s": speed,
            "peak_memory_mb": runs[-1]["peak_memory_mb"],
            "kv_cache_mb": runs[-1]["kv_cache_mb"],
            "flops_fastv": self._fastv_flops(per_layer),
            "flops_exact": self._exact_flops(per_layer, inputs),
            "answer": self.work.decode(answer)[:80],
            "same_answer": None if self.reference is None else self._same_answer(answer),
            "repeats": self.config.repeats,
        }
        tokpress.remove(model)
        return record

    def _same_answer(self, answer: torch.Tensor) -> bool:
        """Whether ``answer`` gives the uncompressed model's answer (:func:`~tokpress.eval.accuracy.data.first_answer`:
        the first sentence, not every generated token)."""
        from tokpress.eval.accuracy.data import first_answer

        return first_answer(self.work.decode(answer)) == first_answer(self.work.decode(self.reference))

    def _fastv_flops(self, per_layer: list[int]) -> float:
        """FastV-convention FLOPs with the model's per-layer widths (MoE: active experts; linear attention: state)."""
        from tokpress.eval.bench.flops_exact import fastv_prefill_flops

        return fastv_prefill_flops(self.work.model.config, per_layer)

    def _exact_flops(self, per_layer: list[int], inputs: dict) -> float:
        """Exact prefill FLOPs (decoder with GQA, gated MLP / active experts / linear attention, vision encoder,
        lm_head) of sample 0."""
        from tokpress.eval.bench.flops_exact import exact_prefill_flops, input_video_grid

        config = self.work.model.config
        grid = input_video_grid(config, inputs)
        return float(exact_prefill_flops(config, per_layer, video_grid=grid).total)
