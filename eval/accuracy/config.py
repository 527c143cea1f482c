"""What ``tokpress eval`` runs: :class:`EvalConfig`, its checks and the method x ratio plan."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tokpress.eval.accuracy.data import ANSWER_FORMATS
from tokpress.eval.accuracy.stats import EXACT_BELOW
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
from tokpress.eval.synth.tasks import SynthConfig

logger = logging.getLogger("tokpress")

DEFAULT_METHODS = ("none", "uniform", "frames", "evs", "fastv", "holitom", "divprune")
DEFAULT_RATIOS = (0.5, 0.25, 0.1)
DEFAULT_N = 40  # videos of the synth test split (8 per task family): < 1 min on 2 CPU cores with the built-in model
#: ``model=`` value that selects the built-in tiny random-weight Qwen2.5-VL explicitly.
TINY_MODEL = "tiny"
#: "both": option log-likelihoods (the record's ``chosen``) and greedy generation, the letter extracted as the
#: benchmark's lmms-eval task extracts it (``chosen_generate``)
SCORINGS = ("logits", "generate", "both")
NORMALIZATIONS = ("mean", "sum")
GENERATE_TOKENS = 8  # max_new_tokens of synth / local-folder generation


@dataclass
class EvalConfig:
    """What to evaluate; every field has the command line's default."""

    model: str | None = None  # checkpoint path / hub id; None: the shipped model, else the built-in tiny one
    benchmark: str = "synth"  # "synth", a real benchmark (videomme, mvbench, longvideobench, egoschema; with
    # ``data``) or a local dataset folder (annotations.jsonl + videos/)
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    n: int | None = DEFAULT_N  # synth: videos; other benchmarks: first n questions (None: all)
    seed: int = 0  # bootstrap resampling and the ``random`` method
    batch: int = 1  # samples per forward
    answer_format: str | None = None  # "word" or "letter"; None: letters on real benchmarks, else words
    scoring: str | None = None  # "logits", "generate" or "both"; None: both on real benchmarks, else logits
    normalize: str = "mean"  # "mean" (per-token) or "sum" log-likelihood
    append_eos: bool | None = None  # score the end-of-turn token after the option; None: words yes, letters no
    prompt: str | None = None  # template with {question}, {options}, {lettered}; None: by answer_format (real
    # benchmarks: their official prompt)
    frames: int | None = None  # video files: frames sampled per video (default: the annotation's, real: <= 32)
    fps: float | None = None  # video files: or frames per second of video
    data: str | None = None  # real benchmarks: the folder of the benchmark's official release
    subtitles: bool = False  # Video-MME: add the subtitles to the prompt (lmms-eval's videomme_w_subtitle)
    device: str | None = None
    device_map: str | None = None  # "auto": a checkpoint spread over every visible GPU (accelerate)
    dtype: str | None = None
    attn: str = "sdpa"
    n_boot: int = 2000
    alpha: float = 0.05
    exact_below: int = EXACT_BELOW  # McNemar: exact binomial test below this many discordant pairs
    max_new_tokens: int | None = None  # generation; None: the benchmark's (lmms-eval) or 8
    warmup: bool = True  # one untimed prefill per method x ratio before the timed ones
    synth: SynthConfig = field(default_factory=SynthConfig)

    @property
    def real(self) -> bool:
        """Whether ``benchmark`` names one of the real benchmarks read from ``data``."""
        from tokpress.eval.accuracy.benchmarks import BENCHMARKS

        return self.benchmark in BENCHMARKS

    def validate(self) -> None:
        """Check every option before a model or video is loaded; raise :class:`~tokpress.errors.ConfigError` naming
        the field (its ``field`` attribute; the command line names the flag, e.g. ``--ratios``). Fills the
        benchmark-dependent defaults (``answer_format``, ``scoring``, ``max_new_tokens``).

        ``n`` counts for every benchmark: synth videos generated, or the first ``n`` questions (None: the default
        40 synth videos, or the whole dataset); 0 or less is refused. ``frames`` and ``fps`` exclude each other.
        """
        from tokpress.eval.accuracy.benchmarks import BENCHMARKS
        from tokpress.eval.bench.runner import DTYPES

        self._defaults()
        if self.answer_format not in ANSWER_FORMATS:
            raise option_error(
                "answer_format", f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}"
            )
        if self.scoring not in SCORINGS:
            raise option_error("scoring", f"scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.normalize not in NORMALIZATIONS:
            raise option_error("normalize", f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        for name in ("batch", "n", "n_boot", "max_new_tokens"):
            check_count(name, getattr(self, name), 1)
        self.ratios = check_ratios(self.ratios)
        if not 0 < self.alpha < 1:
            raise option_error("alpha", f"alpha must be in (0, 1), got {self.alpha}")
        check_methods(self.methods)
        check_frames_fps(self.frames, self.fps)
        check_device(self.device, self.dtype, tuple(DTYPES))
        checkpoint = self.model != TINY_MODEL and (self.model is not None or shipped_model_installed())
        check_device_map(self.device_map, loads_checkpoint=checkpoint)
        check_attn(self.attn)
        if self.model != TINY_MODEL:
            check_model_path(self.model)
        if self.benchmark in BENCHMARKS:
            if self.data is None:
                raise option_error(
                    "data",
                    f"benchmark {self.benchmark!r} needs --data: the folder of its official release "
                    f"({BENCHMARKS[self.benchmark].source})",
                )
            if not Path(self.data).is_dir():
                raise option_error("data", f"--data {self.data!r} is not a folder (the {self.benchmark} release)")
            if self.answer_format != "letter":
                raise option_error(
                    "answer_format",
                    f"{self.benchmark} is scored by option letters: drop it or pass --answer-format letter",
                )
        elif self.benchmark != "synth" and not (Path(self.benchmark) / "annotations.jsonl").is_file():
            raise option_error(
                "benchmark",
                f"benchmark {self.benchmark!r} is neither 'synth', one of {sorted(BENCHMARKS)} (with --data), nor a "
                "folder with annotations.jsonl (the layout tokpress.eval.synth.tasks.export_split writes)",
            )
        if self.scoring == "both" and self.answer_format != "letter":
            raise option_error("scoring", "scoring 'both' compares letters: pass --answer-format letter")
        if self.subtitles and self.benchmark != "videomme":
            raise option_error("subtitles", "--subtitles is for --benchmark videomme only")

    def _defaults(self) -> None:
        from tokpress.eval.accuracy.benchmarks import BENCHMARKS

        spec = BENCHMARKS.get(self.benchmark)
        if self.answer_format is None:
            self.answer_format = "letter" if spec else "word"
        if self.scoring is None:
            self.scoring = "both" if spec else "logits"
        if self.max_new_tokens is None:
            self.max_new_tokens = spec.max_new_tokens if spec else GENERATE_TOKENS


def eval_plan(config: EvalConfig) -> list[tuple[str, float]]:
    """The ``(method, ratio)`` runs: the uncompressed reference (always), then every method at every ratio."""
    if "none" not in config.methods:
        logger.info("tokpress eval: adding the uncompressed model ('none'), the reference of the statistics")
    return [("none", 1.0)] + [(m, float(r)) for r in config.ratios for m in config.methods if m != "none"]
