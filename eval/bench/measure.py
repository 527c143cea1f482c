"""The rows of ``tokpress bench``: a method at a ratio and a batch size applied to a workload, its requests timed
by stage, and the result record (schema in :mod:`~tokpress.eval.bench.records`).

A row is ``(method, ratio, batch)``. :meth:`Runner.warm` warms a row up and takes what does not vary between
requests (answer, decode speed, token counts, FLOPs); :meth:`Runner.timed` measures one request of a row, as the
interleaved rounds of :mod:`~tokpress.eval.bench.rounds` call it; :meth:`Runner.record` assembles the record.
Switching rows is done outside the timed region: ``tokpress.apply`` / ``remove`` and, for the oracle, its index,
computed once per ratio and replayed for every batch size.

Stages of one measured request (clocks in :mod:`tokpress.eval.bench.timing`: TTFT by CUDA events on a GPU, stage
boundaries on a CUDA-synchronised clock):

* ``video_decode`` — reading and sampling the video file (0 for synthetic inputs);
* ``preprocess`` — the HF processor (resize, patchify, tokenise);
* ``vision`` — the vision encoder and projector;
* ``compression`` — tokpress's hooks: scoring, selection, gathers (outer and inner); for ``quota`` also the frame
  scorer's pre-pass (:func:`tokpress.score_frames`, timed before ``generate()``);
* ``prefill`` — the language model's prefill forward, less the compression inside it;
* ``first_decode`` — the next forward (one token); reported beside TTFT, not part of it.

TTFT = video decode + preprocessing (+ ``quota``'s pre-pass) + the time from calling ``generate()`` until the
prefill's logits exist.
The *oracle* of a ratio is the same model fed the same number of video tokens by a fixed, precomputed index
(evenly spaced per frame), so its only cost over the physical limit is one gather.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

import tokpress
from tokpress.api import vision_encoder
from tokpress.errors import ConfigError
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.bench.rounds import rebatch
from tokpress.eval.bench.timing import Clock, RequestSpan, StageTimer
from tokpress.eval.methods import parse_method
from tokpress.patches.cache_arg import output_cache

if TYPE_CHECKING:
    from tokpress.eval.bench.runner import BenchConfig, Workload


STAGES = ("video_decode", "preprocess", "vision", "compression", "prefill", "first_decode")
Row = tuple[str, float, int]  # (method, ratio, batch)


def _median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ms(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else v * 1e3 for v in values]


def _kv_megabytes(cache) -> float | None:
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    total = sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)
    return total / 2**20


def _peak_megabytes(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


class Runner:
    """Measures one workload under a sequence of rows; owns the stage hooks, the TTFT span and the oracle indices.

    The workload builds its inputs for ``config.batch`` prompts; the runner sets that field to each row's batch size
    before asking for inputs (and repeats one prompt's inputs where a workload built them once,
    :func:`~tokpress.eval.bench.rounds.rebatch`); :meth:`close` restores it.
    """

    def __init__(self, work: Workload, config: BenchConfig) -> None:
        self.work, self.config = work, config
        self.device = next(work.model.parameters()).device
        self.clock = Clock(self.device)
        self.span = RequestSpan(self.clock)
        self._span_hook = self.span.attach(work.model)  # ahead of the stage timer's synchronising hook
        lm = work.model.model.language_model
        self.timer = StageTimer(self.clock, {"vision": vision_encoder(work.model), "lm": lm, "top": work.model})
        self.text_config = lm.config
        self.references: dict[int, torch.Tensor] = {}  # batch -> the uncompressed answer
        self._oracle_keep: dict[float, list] = {}  # ratio -> kept["outer"][0] of the uniform pre-pass
        self._batch = config.batch

    def close(self) -> None:
        self.timer.remove()
        self._span_hook.remove()
        tokpress.remove(self.work.model)
        self.config.batch = self._batch

    def _inputs(self, batch: int) -> tuple[dict, float, float]:
        self.config.batch = batch
        inputs, decode_s, preprocess_s = self.work.make_inputs()
        return rebatch(inputs, batch), decode_s, preprocess_s

    @torch.no_grad()
    def _oracle_index(self, ratio: float) -> list:
        """The oracle's kept grid indices of one prompt (``[video][k]``) at ``ratio``, computed once: evenly spaced
        per frame (``uniform``), learnt on one forward of a one-prompt input."""
        if ratio not in self._oracle_keep:
            model = self.work.model
            tokpress.remove(model)
            tokpress.apply(model, outer="uniform", retain_ratio=ratio)
            inputs, _, _ = self._inputs(1)
            model(**inputs)
            self._oracle_keep[ratio] = model.tokpress.last.kept["outer"][0]
            tokpress.remove(model)
        return self._oracle_keep[ratio]

    def prepare(self, row: Row) -> None:
        """Apply ``row``'s method to the model (untimed); the oracle replays its cached index per prompt."""
        method, ratio, batch = row
        model = self.work.model
        tokpress.remove(model)
        if method == "oracle":
            keep = [self._oracle_index(ratio)] * batch
            tokpress.apply(model, outer="fixed", retain_ratio=ratio, outer_options={"keep": keep})
        elif (kwargs := parse_method(method)) is not None:
            tokpress.apply(model, retain_ratio=ratio, **kwargs)
        if hasattr(model, "tokpress"):
            model.tokpress.sync_timing = True

    @torch.no_grad()
    def _request(self, batch: int) -> dict[str, Any]:
        """One timed request of ``batch`` prompts: generate until the first decode step has run (seconds)."""
        model = self.work.model
        inputs, decode_s, preprocess_s = self._inputs(batch)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        prepass_s, scores = self._frame_prepass(batch)  # before the stage timer and the span: its forwards apart
        self.timer.reset()
        self.span.start()
        with scores:
            out = model.generate(
                **inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, return_dict_in_generate=True
            )
        stamps = self.timer.stamps
        prefill_end = stamps.calls["top"][0][1]
        last = getattr(model, "tokpress", None) and model.tokpress.last
        compression = last.compression_s if last else 0.0
        vision = sum(e - s for s, e in stamps.calls.get("vision", []) if e <= prefill_end)
        return {
            "ttft": decode_s + preprocess_s + prepass_s + self.span.seconds(),
            "video_decode": decode_s,
            "preprocess": preprocess_s,
            "vision": vision,
            "compression": compression + prepass_s,
            "prefill": (stamps.span("lm", 0) or 0.0) - compression,
            "first_decode": stamps.span("top", 1),
            "peak_memory_mb": _peak_megabytes(self.device),
            "kv_cache_mb": _kv_megabytes(output_cache(out)),
        }

    @torch.no_grad()
    def _answer(self, batch: int) -> tuple[torch.Tensor, float | None]:
        """Greedy answer ids of the first prompt and decode tokens/s over ``max_new_tokens`` forced tokens."""
        n = self.config.max_new_tokens
        inputs, _, _ = self._inputs(batch)
        _, scores = self._frame_prepass(batch)
        self.timer.reset()
        with scores:
            out = self.work.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        end = self.clock.now()
        prefill_end = self.timer.stamps.calls["top"][0][1]
        speed = (n - 1) / (end - prefill_end) if n > 1 and end > prefill_end else None
        return out[0, inputs["input_ids"].shape[1] :], speed

    def _frame_prepass(self, batch: int) -> tuple[float, Any]:
        """``quota`` (``framebudget``, ``scorer="lvlm"``): the LVLM's frame scores of the last inputs' video on the
        synchronised clock, and a context manager handing them to every prompt of the batch; else ``(0, no-op)``.
        Its seconds count in TTFT and in the ``compression`` stage."""
        from tokpress.eval.accuracy.prepass import needs_frame_scores

        model = self.work.model
        if not needs_frame_scores(model):
            return 0.0, contextlib.nullcontext()
        if self.work.frame_prepass is None:
            raise ConfigError(
                "this workload has no video frames to score (--arch feeds synthetic tensors): bench quota with "
                "--model / --video, or the default synth model"
            )
        start = self.clock.now()
        scores = self.work.frame_prepass()
        seconds = self.clock.now() - start
        return seconds, tokpress.frame_scores(model, [[scores]] * batch)

    def timed(self, row: Row) -> dict[str, Any]:
        """One measured request of ``row`` (the method applied before, removed after, both untimed)."""
        self.prepare(row)
        try:
            return self._request(row[2])
        finally:
            tokpress.remove(self.work.model)

    def warm(self, row: Row) -> dict[str, Any]:
        """``config.warmup`` untimed requests of ``row``, then its answer, decode speed, token counts and FLOPs."""
        method, ratio, batch = row
        self.prepare(row)
        try:
            for _ in range(self.config.warmup):
                self._request(batch)
            answer, speed = self._answer(batch)
            if method == "none":
                self.references[batch] = answer
            return self._static(row, answer, speed)
        finally:
            tokpress.remove(self.work.model)

    def _static(self, row: Row, answer: torch.Tensor, speed: float | None) -> dict[str, Any]:
        model = self.work.model
        last = model.tokpress.last if hasattr(model, "tokpress") else None
        inputs, _, _ = self._inputs(1)
        n_video = int((inputs["input_ids"][0] == video_placeholder_id(model.config)).sum())
        seq = int(inputs["attention_mask"][0].sum())
        per_layer = last.tokens_per_layer[0] if last else [seq] * self.text_config.num_hidden_layers
        reference = self.references.get(row[2])
        return {
            "video_tokens": n_video,
            "into_llm": last.after_outer[0] if last else n_video,
            "tokens_per_layer": per_layer,
            "decode_tokens_per_s": speed,
            "flops_fastv": self._fastv_flops(per_layer),
            "flops_exact": self._exact_flops(per_layer, inputs, last),
            "answer": self.work.decode(answer)[:80],
            "same_answer": None if reference is None else self._same_answer(answer, reference),
        }

    def record(self, row: Row, static: dict[str, Any], runs: list[dict[str, Any]], positions: list[int]) -> dict:
        """The result record of ``row`` from its warm-up (``static``) and its per-round requests (``runs``, in round
        order; ``positions[k]``: its place in round ``k``)."""
        method, ratio, batch = row
        per_round = {"ttft": _ms([r["ttft"] for r in runs])} | {s: _ms([r[s] for r in runs]) for s in STAGES}
        peaks = [r["peak_memory_mb"] for r in runs if r["peak_memory_mb"] is not None]
        return {
            "model": self.work.name,
            "method": method,
            "ratio": ratio,
            "batch": batch,
            **{k: static[k] for k in ("video_tokens", "into_llm", "tokens_per_layer")},
            "ttft_ms": _median_spread(per_round["ttft"]),
            "stages_ms": {
                s: None if any(v is None for v in per_round[s]) else statistics.median(per_round[s]) for s in STAGES
            },
            "rounds_ms": per_round,
            "round_positions": positions,
            "seed": self.config.seed,
            "ttft_clock": self.span.clock_name,
            "decode_tokens_per_s": static["decode_tokens_per_s"],
            "peak_memory_mb": max(peaks) if peaks else None,
            "kv_cache_mb": runs[-1]["kv_cache_mb"],
            **{k: static[k] for k in ("flops_fastv", "flops_exact", "answer", "same_answer")},
            "repeats": len(runs),
        }

    def _same_answer(self, answer: torch.Tensor, reference: torch.Tensor) -> bool:
        """Whether ``answer`` gives the uncompressed model's answer (:func:`~tokpress.eval.accuracy.data.first_answer`:
        the first sentence, not every generated token)."""
        from tokpress.eval.accuracy.data import first_answer

        return first_answer(self.work.decode(answer)) == first_answer(self.work.decode(reference))

    def _fastv_flops(self, per_layer: list[int]) -> float:
        """FastV-convention FLOPs with the model's per-layer widths (MoE: active experts; linear attention: state)."""
        from tokpress.eval.bench.flops_exact import fastv_prefill_flops

        return fastv_prefill_flops(self.work.model.config, per_layer)

    def _exact_flops(self, per_layer: list[int], inputs: dict, last) -> float:
        """Exact prefill FLOPs (decoder with GQA, gated MLP / active experts / linear attention, vision encoder as
        the vision stage ran it, lm_head) of sample 0."""
        from tokpress.eval.bench.flops_exact import exact_prefill_flops, input_video_grid

        config = self.work.model.config
        grid = input_video_grid(config, inputs)
        kept, layer_tokens = None, None
        if last is not None and last.kept.get("vision"):
            t, h, w = grid
            merge = config.vision_config.spatial_merge_size
            kept = torch.zeros(t * (h // merge) * (w // merge), dtype=torch.bool)
            kept[last.kept["vision"][0][0]] = True
            kept = kept.view(t, h // merge, w // merge)
        if last is not None and last.vision_tokens:
            layer_tokens = last.vision_tokens
        return float(
            exact_prefill_flops(
                config, per_layer, video_grid=grid, vision_kept=kept, vision_layer_tokens=layer_tokens
            ).total
        )
