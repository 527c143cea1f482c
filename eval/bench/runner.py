"""``tokpress bench``: methods x retention ratios (x batch sizes) on one model and one video — TTFT split into
stages, the oracle, paired speed-ups, FLOPs (FastV convention and exact), peak memory, KV-cache size, decode speed
and answer agreement.

Each ``(method, ratio, batch)`` row is warmed up, then measured once per interleaved round
(:mod:`~tokpress.eval.bench.rounds`) by :class:`~tokpress.eval.bench.measure.Runner` (the stages of a request and
the oracle are defined there); speed-ups are paired per round (:mod:`~tokpress.eval.bench.paired`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tokpress.eval.bench.measure import Row, Runner
from tokpress.eval.bench.rounds import run_rounds
from tokpress.eval.methods import (
    check_attn,
    check_count,
    check_device,
    check_device_map,
    check_frames_fps,
    check_methods,
    check_model_path,
    check_ratios,
    option_error,
    shipped_model_installed,
)

logger = logging.getLogger("tokpress")

DEFAULT_METHODS = (
    "none",
    "uniform",
    "random",
    "frames",
    "evs",
    "divprune",
    "visionzip",
    "vidcom2",
    "scissor",
    "fastvid",
    "flashvid",
    "holitom",
    "dycoke",
    "prunevid",
    "fastv",
    "pdrop",
    "framefusion",
    "sttm",
)
#: Frames sampled from a user's ``video`` when neither ``frames`` nor ``fps`` is given (fewer for a shorter clip).
USER_VIDEO_FRAMES = 32
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class BenchConfig:
    """What to measure; every field has the command line's default."""

    model: str | None = None
    arch: str | None = None
    video: str | None = None
    question: str = "What happens in the video? Answer briefly."
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = (0.5, 0.25, 0.1)
    frames: int | None = None
    fps: float | None = None
    repeats: int = 3  # rounds: every row measured once per round, in a shuffled order
    warmup: int = 1  # untimed requests per row before the rounds
    device: str | None = None
    device_map: str | None = None  # "auto": a checkpoint spread over every visible GPU (accelerate)
    dtype: str | None = None
    attn: str = "sdpa"
    batch: int | tuple[int, ...] = 1  # prompts per request; a sequence is a sweep (moved to ``batches``)
    batches: tuple[int, ...] = ()  # the batch sizes measured; empty: just ``batch``
    max_new_tokens: int = 16
    oracle: bool = True
    seed: int = 0  # of the rounds' shuffles and the bootstrap intervals
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """The batch sizes every row is measured at (``batches``, else ``(batch,)``)."""
        return tuple(self.batches) or (self.batch,)

    def _normalise_batch(self) -> None:
        """A sequence given as ``batch`` becomes ``batches``; ``batch`` is then its first entry (the workload builds
        its inputs for ``batch`` prompts; the runner sets it to each size in turn)."""
        if isinstance(self.batch, (list, tuple)):
            self.batches, self.batch = tuple(self.batch), (self.batch[0] if self.batch else 0)
        self.batches = tuple(self.batches)
        for size in self.batch_sizes:
            check_count("batch", size, 1)
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise option_error("batch", f"batch sizes repeat in {self.batch_sizes}: give each once, e.g. 1,4,8")
        if self.batches and self.batch not in self.batches:
            self.batch = self.batches[0]

    def validate(self) -> None:
        """Check every option before a model or video is loaded; raise :class:`~tokpress.errors.ConfigError` naming
        the field (its ``field`` attribute; the command line names the flag, e.g. ``--ratios``).

        Frame sampling: ``frames`` (a count) and ``fps`` exclude each other. A ``video`` with fewer frames than an
        explicit ``frames`` is refused; with neither given, a user's video gives at most
        :data:`USER_VIDEO_FRAMES` frames (all of a shorter clip, logged).
        """
        if self.model and self.arch:
            raise option_error("arch", "pass either --model or --arch, not both")
        check_methods(self.methods)
        self.ratios = check_ratios(self.ratios)
        self._normalise_batch()
        for name, minimum in (("repeats", 1), ("warmup", 0), ("max_new_tokens", 1), ("seed", 0)):
            check_count(name, getattr(self, name), minimum)
        check_frames_fps(self.frames, self.fps)
        check_device(self.device, self.dtype, tuple(DTYPES))
        checkpoint = self.arch is None and (self.model is not None or shipped_model_installed())
        check_device_map(self.device_map, loads_checkpoint=checkpoint)
        check_attn(self.attn)
        check_model_path(self.model)
        check_count("size", self.extra.get("size"), 1)
        if self.video is not None:
            self._check_video()
        elif self.model is None and self.arch is None and self.frames is not None:
            self._check_synth_frames()

    def _check_synth_frames(self) -> None:
        """The default bench on the shipped model samples a synth test video: at most its frame count."""
        from tokpress.eval.accuracy.workload import SHIPPED_MODEL
        from tokpress.eval.synth.tasks import SynthConfig

        total = SynthConfig().frames
        if (SHIPPED_MODEL / "config.json").is_file() and self.frames > total:
            raise option_error(
                "frames",
                f"--frames {self.frames} but the default synth video has {total} frames: pass --frames {total} or "
                "fewer, or give a --video",
            )

    def _check_video(self) -> None:
        from pathlib import Path

        from tokpress.errors import InputError
        from tokpress.eval.bench.workloads import video_frame_count

        if not Path(self.video).is_file():
            raise option_error("video", f"video file not found: {self.video!r} (check the path)")
        try:
            total = video_frame_count(self.video)
        except InputError as exc:
            raise option_error("video", str(exc)) from None
        if self.frames is not None and self.frames > total:
            raise option_error(
                "frames",
                f"--frames {self.frames} but {self.video} has only {total} frame(s): pass --frames {total} or fewer, "
                "or leave --frames out to use them all",
            )


@dataclass
class Workload:
    """A model and a way to produce its inputs: ``make_inputs() -> (inputs, video_decode_s, preprocess_s)``."""

    name: str
    model: torch.nn.Module
    make_inputs: Callable[[], tuple[dict, float, float]]
    decode: Callable[[torch.Tensor], str]
    environment: dict[str, str]
    #: ``quota``'s pre-pass: the ``[T]`` frame relevance of the last ``make_inputs()``'s video (None: no raw frames)
    frame_prepass: Callable[[], torch.Tensor] | None = None


def bench_plan(config: BenchConfig) -> list[tuple[str, float]]:
    """The ``(method, ratio)`` rows: the uncompressed model once, then per ratio the oracle and every method."""
    rows = [("none", 1.0)] if "none" in config.methods else []
    for ratio in config.ratios:
        if config.oracle:
            rows.append(("oracle", ratio))
        rows += [(m, ratio) for m in config.methods if m != "none"]
    return rows


def bench_rows(config: BenchConfig) -> list[Row]:
    """The measured rows: :func:`bench_plan` at each batch size, ``(method, ratio, batch)``."""
    return [(method, ratio, batch) for batch in config.batch_sizes for method, ratio in bench_plan(config)]


def bench_steps(config: BenchConfig) -> int:
    """Progress steps of :func:`run_bench`: one warm-up per row, then one per round."""
    return len(bench_rows(config)) + config.repeats


def _label(row: Row, batches: int) -> str:
    method, ratio, batch = row
    return f"{method} @ {ratio:g}" + (f" × {batch}" if batches > 1 else "")


def timing_note(config: BenchConfig, rows: int, clock: str) -> str:
    """How the run was timed, for the environment table."""
    return (
        f"{config.repeats} interleaved round(s) of {rows} rows, each round in a fresh shuffled order (seed "
        f"{config.seed}), after {config.warmup} warm-up request(s) per row; TTFT by {clock}, stage boundaries by "
        "perf_counter (after a CUDA synchronisation on a GPU)"
    )


def run_bench(config: BenchConfig, work: Workload, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every row of :func:`bench_rows` on ``work`` in interleaved rounds; returns one record per row.

    ``progress(label)`` is called once per step (:func:`bench_steps`): each row's warm-up, then each round.
    ``work.environment["timing"]`` gets :func:`timing_note`.
    """
    config._normalise_batch()
    rows = bench_rows(config)
    runner = Runner(work, config)
    try:
        static = []
        for row in rows:
            if progress is not None:
                progress(f"warm-up {_label(row, len(config.batch_sizes))}")
            static.append(runner.warm(row))
        runs, positions = run_rounds(rows, runner.timed, config.repeats, config.seed, progress)
        work.environment["timing"] = timing_note(config, len(rows), runner.span.clock_name)
        return [runner.record(row, s, r, p) for row, s, r, p in zip(rows, static, runs, positions)]
    finally:
        runner.close()
