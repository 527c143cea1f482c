"""``tokpress eval``: multiple-choice accuracy of a video LLM under every method x retention ratio, with statistics
and the cost of the same runs.

**Samples.** ``benchmark="synth"`` generates the test split of :mod:`tokpress.eval.synth.tasks` in memory
(``make_split("test", n, config.synth)``, one question per video, tasks in turn). Any other value is a local dataset
folder in the layout :func:`~tokpress.eval.synth.tasks.export_split` writes (``annotations.jsonl`` + ``videos/``; the
Video-MME / MVBench field names are understood too); its videos are decoded by :func:`tokpress.eval.video.load_video`,
the path real benchmarks take. ``n`` keeps the first ``n`` annotations in file order.

**Prompt.** The user turn is the video followed by ``format_prompt(...)``: the question, the options and an
instruction (:data:`WORD_PROMPT` or :data:`LETTER_PROMPT`, or the caller's ``prompt`` template with the fields
``{question}``, ``{options}`` — comma-separated words — and ``{lettered}`` — one ``"A. word"`` line per option),
rendered by the processor's chat template with the generation prompt. ``answer_format="word"`` scores the option
words (what the synth model is trained to emit), ``"letter"`` the letters A, B, C, ...

**Scoring rule** (``scoring="logits"``, the default). Each option's answer text (the word or the letter, followed
by the tokenizer's end-of-turn token ``eos_token`` for words; letters are scored alone — ``append_eos`` overrides)
is scored by its log-likelihood as the assistant's answer after the prompt, teacher-forced:
``log p(option) = sum_j log p(t_j | prompt, t_<j)``. With ``normalize="mean"`` (default) the score is that sum
divided by the option's token count (the mean per-token log-probability, so options of different lengths compete
fairly); ``normalize="sum"`` uses the joint log-probability itself. The chosen option is the argmax (first on
ties). Both the sums and the token counts are recorded, so either rule can be recomputed offline.
``scoring="generate"`` instead decodes greedily (``max_new_tokens``) and matches the text to an option
(:func:`match_answer`; no match counts as wrong, ``chosen = -1``).

**How the options are scored with compression.** tokpress compresses the forward that carries the video (the
prompt's prefill), and a later forward continues the compressed cache exactly as ``generate()``'s decode steps do.
The scoring therefore mirrors inference: the prompt is prefilled once per option row — the sample's processed
inputs repeated (identical rows, so identical video placeholders and, for deterministic methods, an identical
selection per row) and, with ``batch > 1``, several samples left-padded together — then one continuation forward
feeds every row's option tokens (right-padded; padding at the end cannot influence earlier positions under causal
attention) on that cache. The first option token's log-probability comes from the prefill's last logits, the
others from the continuation. The selection thus never sees the options (an option appended to the prompt would
change, e.g., FastV's last-query attention), and the video is prefilled with the same prompt the model answers. Methods
with a decode-time stage (DyCoke) re-select at every decoded token, so for them the options are fed one token per
forward. For M-RoPE families (Qwen-VL) the continuation's position ids come from the model's own ``get_rope_index``
over the whole uncompressed sequence (tokpress keeps original positions), since transformers cannot derive them
from a padded mask there.

**Cost columns from the same runs.** Before scoring, each batch's prompt is prefilled once more on its own
(``batch`` prompts, no repetition) on a :class:`~tokpress.eval.bench.timing.Clock`: TTFT = that forward — vision
encoder, compression and LLM prefill up to the first logits (video decoding and preprocessing are identical for
every method and recorded apart). Its ``model.tokpress.last.tokens_per_layer`` gives the prefill FLOPs
(:func:`tokpress.flops.fastv_flops`, the papers' convention) and the token counts. The uncompressed model
(``"none"``) always runs: it is the reference of agreement, McNemar's test and the cost fractions.

**Records.** :func:`run_eval` returns ``kind="sample"`` records (one per sample x method x ratio) and
``kind="summary"`` records (per method x ratio x task family, plus ``task="all"``); the fields are listed in
:func:`run_eval` and :func:`summarize`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tokpress
from tokpress.errors import InputError
from tokpress.eval.accuracy.data import ANSWER_FORMATS, EvalSample, local_samples, synth_samples
from tokpress.eval.accuracy.scoring import (
    Prepared,
    _device_dtype,
    choose,
    generate_answers,
    option_logprobs,
    prepare,
    stack_rows,
)
from tokpress.eval.accuracy.stats import EXACT_BELOW, agreement, bootstrap_ci, mcnemar, mcnemar_test_name
from tokpress.eval.bench.flops_exact import fastv_prefill_flops
from tokpress.eval.bench.report import _jsonable
from tokpress.eval.bench.timing import Clock
from tokpress.eval.methods import (
    check_attn,
    check_count,
    check_device,
    check_frames_fps,
    check_methods,
    check_model_path,
    check_ratios,
    check_writable,
    option_error,
    parse_method,
)
from tokpress.eval.synth.tasks import SynthConfig

logger = logging.getLogger("tokpress")

DEFAULT_METHODS = ("none", "uniform", "frames", "evs", "fastv", "holitom", "divprune")
DEFAULT_RATIOS = (0.5, 0.25, 0.1)
DEFAULT_N = 40  # videos of the synth test split (8 per task family): < 1 min on 2 CPU cores with the built-in model
#: Where the trained synth model ships; used when no model is given and it exists.
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "models" / "tokpress-synth-qwen2.5-vl"
#: ``model=`` value that selects the built-in tiny random-weight Qwen2.5-VL explicitly.
TINY_MODEL = "tiny"
RANDOM_WEIGHTS_NOTE = (
    "The model has RANDOM weights (built-in tiny Qwen2.5-VL; the trained synth model is not installed): accuracies "
    "are chance-level noise. This run checks the machinery, not the methods."
)

SCORINGS = ("logits", "generate")
NORMALIZATIONS = ("mean", "sum")
Progress = Callable[[str, int], None]


# --------------------------------------------------------------------------------------------------- config


@dataclass
class EvalConfig:
    """What to evaluate; every field has the command line's default."""

    model: str | None = None  # checkpoint path / hub id; None: the shipped model, else the built-in tiny one
    benchmark: str = "synth"  # "synth" or a local dataset folder (annotations.jsonl + videos/)
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    n: int | None = DEFAULT_N  # synth: videos; local dataset: first n annotations (None: all)
    seed: int = 0  # bootstrap resampling and the ``random`` method
    batch: int = 1  # samples per forward
    answer_format: str = "word"  # "word" or "letter"
    scoring: str = "logits"  # "logits" (option log-likelihoods) or "generate" (greedy decoding, matched)
    normalize: str = "mean"  # "mean" (per-token) or "sum" log-likelihood
    append_eos: bool | None = None  # score the end-of-turn token after the option; None: words yes, letters no
    prompt: str | None = None  # template with {question}, {options}, {lettered}; None: by answer_format
    frames: int | None = None  # local datasets: frames sampled per video (default: the annotation's num_frames)
    fps: float | None = None  # local datasets: or frames per second of video
    device: str | None = None
    dtype: str | None = None
    attn: str = "sdpa"
    n_boot: int = 2000
    alpha: float = 0.05
    exact_below: int = EXACT_BELOW  # McNemar: exact binomial test below this many discordant pairs
    max_new_tokens: int = 8  # scoring="generate"
    warmup: bool = True  # one untimed prefill per method x ratio before the timed ones
    synth: SynthConfig = field(default_factory=SynthConfig)

    def validate(self) -> None:
        """Check every option before a model or video is loaded; raise :class:`~tokpress.errors.ConfigError` naming
        the field (its ``field`` attribute; the command line names the flag, e.g. ``--ratios``).

        ``n`` counts for every benchmark: synth videos generated, or a local dataset's first ``n`` questions
        (None: the default 40 synth videos, or a whole local dataset); 0 or less is refused. ``frames`` and ``fps``
        exclude each other.
        """
        from tokpress.eval.bench.runner import DTYPES

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
        check_attn(self.attn)
        if self.model != TINY_MODEL:
            check_model_path(self.model)
        if self.benchmark != "synth" and not (Path(self.benchmark) / "annotations.jsonl").is_file():
            raise option_error(
                "benchmark",
                f"benchmark {self.benchmark!r} is neither 'synth' nor a folder with annotations.jsonl "
                "(the layout tokpress.eval.synth.tasks.export_split writes)",
            )


def eval_plan(config: EvalConfig) -> list[tuple[str, float]]:
    """The ``(method, ratio)`` runs: the uncompressed reference (always), then every method at every ratio."""
    if "none" not in config.methods:
        logger.info("tokpress eval: adding the uncompressed model ('none'), the reference of the statistics")
    return [("none", 1.0)] + [(m, float(r)) for r in config.ratios for m in config.methods if m != "none"]


# -------------------------------------------------------------------------------------------------- samples


def load_benchmark(config: EvalConfig) -> list[EvalSample]:
    """The samples of ``config.benchmark`` (``"synth"`` or a local folder)."""
    if config.benchmark == "synth":
        return synth_samples(config.n or DEFAULT_N, config.synth)
    return local_samples(config.benchmark, config.n)


# --------------------------------------------------------------------------------------------- prompt, answers


@dataclass
class EvalWorkload:
    """A model, its processor and a description of the environment."""

    name: str
    model: torch.nn.Module
    processor: Any
    environment: dict[str, str]
    random_weights: bool = False


def _apply(model: torch.nn.Module, method: str, ratio: float, seed: int) -> None:
    tokpress.remove(model)
    kwargs = parse_method(method)
    if kwargs is None:
        return
    if kwargs.get("method") == "random" or kwargs.get("outer") == "random":
        kwargs["outer_options"] = {"seed": seed}
    tokpress.apply(model, retain_ratio=ratio, **kwargs)


@torch.no_grad()
def _prefill(model: torch.nn.Module, batch: dict[str, torch.Tensor], clock: Clock) -> float:
    start = clock.now()
    model(**batch, use_cache=True, logits_to_keep=1)
    return clock.now() - start


def _prefill_counts(model: torch.nn.Module, batch: dict[str, torch.Tensor], video_id: int) -> list[dict[str, Any]]:
    """Per sample of the last prefill: video tokens, video tokens entering the LLM, tokens per decoder layer."""
    engine = getattr(model, "tokpress", None)
    stats = engine.last if engine is not None else None
    layers = model.config.get_text_config().num_hidden_layers
    out = []
    for b in range(batch["input_ids"].shape[0]):
        if stats is not None and len(stats.video_tokens) > b:
            video, into, per_layer = stats.video_tokens[b], stats.after_outer[b], list(stats.tokens_per_layer[b])
        else:  # unpatched: every token of the prompt reaches every layer
            video = into = int((batch["input_ids"][b] == video_id).sum())
            per_layer = [int(batch["attention_mask"][b].sum())] * layers
        out.append({"video_tokens": video, "into_llm": into, "per_layer": per_layer})
    return out


#: per-sample records of an eval, streamed as they are made (``evaluate`` writes it into the output folder)
STREAM_FILE = "samples.jsonl"


def _stream_key(config: EvalConfig, work_name: str) -> dict[str, Any]:
    """What a streamed file must match to be resumed: the model and every setting that changes a record."""
    fields = asdict(config)
    for name in ("n_boot", "alpha", "exact_below"):  # summary statistics only, recomputed from the records
        fields.pop(name)
    return {"kind": "header", "model": work_name, "config": _jsonable(fields)}


def _open_stream(path: Path, key: dict[str, Any], resume: bool) -> dict[tuple[str, float, str], dict[str, Any]]:
    """The records of ``path`` by ``(method, ratio, sample_id)`` when ``resume`` and it was made with ``key``;
    otherwise start ``path`` afresh with ``key`` as its first line.

    Raises:
        InputError: ``path`` holds records of another configuration (``resume`` is on).
    """
    done: dict[tuple[str, float, str], dict[str, Any]] = {}
    if resume and path.is_file() and path.stat().st_size:
        with path.open(encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if not lines or lines[0] != key:
            raise InputError(
                f"{path} holds per-sample records of another model or configuration; pass a new --out, or "
                "--no-resume to start over"
            )
        done = {(r["method"], float(r["ratio"]), r["sample_id"]): r for r in lines[1:]}
        logger.info("tokpress eval: resuming %s (%d sample records done)", path, len(done))
        return done
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return done


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    """Append ``records`` to ``path`` as JSON lines and flush them to disk (a kill loses at most one batch)."""
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(_jsonable(r)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_eval(
    config: EvalConfig,
    work: EvalWorkload,
    progress: Progress | None = None,
    stream: str | Path | None = None,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every ``(method, ratio)`` of :func:`eval_plan` on every sample; summary records first.

    Samples are taken ``config.batch`` at a time; each batch is prepared once (video decode, processor) and run
    under every method and ratio in turn, the uncompressed model first. ``progress(label, advance)`` is called after
    each batch x run with the number of samples done.

    Each ``kind="sample"`` record: ``model, method, ratio, sample_id, task, answer, chosen, correct, reference``
    (the uncompressed model's choice), ``agree``, ``scores`` / ``logprobs`` / ``option_tokens`` (logits scoring) or
    ``generated`` (generation), ``ttft_ms`` (the timed prefill of the batch the sample was in), ``video_tokens``,
    ``into_llm``, ``tokens_per_layer``, ``flops_fastv``, ``decode_ms``, ``preprocess_ms``, ``rows_consistent``
    (every option row of the scoring prefill kept as many tokens per layer as the timed single prefill).

    With ``stream``, each batch's records are appended to that JSON-lines file as soon as they exist (after a header
    line naming the model and configuration); with ``resume``, a batch whose records the file already holds is not
    run again (its records, timings included, are those of the earlier run), so an interrupted eval continues where
    it stopped.
    """
    config.validate()
    model, processor = work.model, work.processor
    samples = load_benchmark(config)
    plan = eval_plan(config)
    video_id = int(getattr(model.config, "video_token_id", None) or model.config.video_token_index)
    pad_id = processor.tokenizer.pad_token_id or 0
    clock = Clock(_device_dtype(model)[0])
    records: list[dict[str, Any]] = []
    stream = None if stream is None else Path(stream)
    done = {} if stream is None else _open_stream(stream, _stream_key(config, work.name), resume)
    warm = not config.warmup
    try:
        for start in range(0, len(samples), config.batch):
            chunk = samples[start : start + config.batch]
            keys = [(m, float(r), s.sample_id) for m, r in plan for s in chunk]
            if keys and all(k in done for k in keys):  # finished by an earlier, interrupted run
                records += [done[k] for k in keys]
                if progress is not None:
                    done_so_far = min(start + len(chunk), len(samples))
                    progress(f"resumed · {done_so_far}/{len(samples)}", len(chunk) * len(plan))
                continue
            batch_records: list[dict[str, Any]] = []
            prepared = [
                prepare(
                    model,
                    processor,
                    s,
                    answer_format=config.answer_format,
                    append_eos=config.append_eos,
                    prompt=config.prompt,
                    frames=config.frames,
                    fps=config.fps,
                )
                for s in chunk
            ]
            single = stack_rows([p.inputs for p in prepared], [1] * len(prepared), pad_id)
            reference: dict[str, int] = {}
            for method, ratio in plan:
                _apply(model, method, ratio, config.seed)
                if not warm:
                    _prefill(model, single, clock)
                ttft = _prefill(model, single, clock)
                counts = _prefill_counts(model, single, video_id)
                if config.scoring == "logits":
                    scored, stats = option_logprobs(model, prepared, pad_id)
                    consistent = _rows_consistent(stats, counts, [len(p.options) for p in prepared])
                    generated = [None] * len(prepared)
                else:
                    answers = generate_answers(model, processor, prepared, config.answer_format, config.max_new_tokens)
                    scored, consistent, generated = [None] * len(prepared), [True] * len(prepared), answers
                for b, p in enumerate(prepared):
                    record = _sample_record(work.name, method, ratio, p, config, scored[b], generated[b])
                    if method == "none":
                        reference[p.sample.sample_id] = record["chosen"]
                    record["reference"] = reference.get(p.sample.sample_id)
                    record["agree"] = None if record["reference"] is None else record["chosen"] == record["reference"]
                    per_layer = counts[b]["per_layer"]
                    record.update(
                        ttft_ms=ttft * 1e3,
                        video_tokens=counts[b]["video_tokens"],
                        into_llm=counts[b]["into_llm"],
                        tokens_per_layer=per_layer,
                        flops_fastv=fastv_prefill_flops(model.config, per_layer),
                        decode_ms=p.decode_ms,
                        preprocess_ms=p.preprocess_ms,
                        rows_consistent=consistent[b],
                    )
                    batch_records.append(record)
                tokpress.remove(model)
                if progress is not None:
                    progress(
                        f"{method} @ {ratio:g} · {min(start + len(chunk), len(samples))}/{len(samples)}", len(chunk)
                    )
            warm = True
            records += batch_records
            if stream is not None:
                _append(stream, batch_records)
    finally:
        tokpress.remove(model)
    inconsistent = sum(not r["rows_consistent"] for r in records)
    if inconsistent:
        logger.warning("tokpress eval: %d sample runs selected differently across option rows", inconsistent)
    summary = summarize(
        records, n_boot=config.n_boot, seed=config.seed, alpha=config.alpha, exact_below=config.exact_below
    )
    return summary + records


def _rows_consistent(stats: Any, counts: list[dict[str, Any]], rows: list[int]) -> list[bool]:
    if stats is None:
        return [True] * len(rows)
    per_layer = stats.tokens_per_layer
    out, row = [], 0
    for b, k in enumerate(rows):
        out.append(all(per_layer[row + i] == counts[b]["per_layer"] for i in range(k)))
        row += k
    return out


def _sample_record(
    name: str,
    method: str,
    ratio: float,
    p: Prepared,
    config: EvalConfig,
    scored: list[tuple[float, int]] | None,
    generated: tuple[str, int] | None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "sample",
        "model": name,
        "method": method,
        "ratio": ratio,
        "sample_id": p.sample.sample_id,
        "task": p.sample.task,
        "n_options": len(p.sample.options),
        "answer": p.sample.answer,
    }
    if scored is not None:
        result = choose([lp for lp, _ in scored], [t for _, t in scored], config.normalize)
        record.update(
            chosen=result.chosen, scores=result.scores, logprobs=result.logprobs, option_tokens=result.tokens
        )
    else:
        text, chosen = generated
        record.update(chosen=chosen, generated=text)
    record["correct"] = record["chosen"] == p.sample.answer
    return record


# --------------------------------------------------------------------------------------------------- summary


def _mean(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _median(values: Sequence[float | None]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return statistics.median(got) if got else None


def summarize(
    samples: Sequence[dict[str, Any]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    exact_below: int = EXACT_BELOW,
) -> list[dict[str, Any]]:
    """``kind="summary"`` records per (model, method, ratio) x (each task family, then ``"all"``).

    Fields: ``n, correct, accuracy, ci_low, ci_high`` (percentile bootstrap, ``seed``), ``chance`` (mean of
    1 / options), and — where the uncompressed run of the same samples exists — ``agreement`` (same choice as it),
    ``delta`` (accuracy − its accuracy) with ``delta_ci_low/high`` (paired bootstrap of the per-sample
    differences), McNemar's ``mcnemar_b01`` (it wrong, this right), ``mcnemar_b10``, ``mcnemar_statistic``,
    ``mcnemar_p`` and ``mcnemar_test`` (``"exact"`` / ``"chi2"``); cost: ``flops_fastv`` (mean per sample),
    ``flops_fraction`` (of the uncompressed mean), ``ttft_ms`` (median), ``ttft_ms_mean``, ``speedup`` (its TTFT
    median / this one), ``video_tokens`` and ``into_llm`` (means). ``task="all"`` adds ``accuracy_macro``, the
    mean of the per-task accuracies.
    """
    rows = [r for r in samples if r.get("kind", "sample") == "sample"]
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"] != "all"))  # "all": the pooled row only
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], float(r["ratio"])), []).append(r)
    ref = {(r["model"], r["sample_id"]): r for r in rows if r["method"] == "none"}
    out = []
    for (model, method, ratio), group in groups.items():
        per_task = {}
        for task in [*tasks, "all"]:
            sel = group if task == "all" else [r for r in group if r["task"] == task]
            if not sel:
                continue
            summary = _summary(model, method, ratio, task, sel, ref, n_boot, seed, alpha, exact_below)
            if task != "all":
                per_task[task] = summary["accuracy"]
            elif len(per_task) > 1:
                summary["accuracy_macro"] = sum(per_task.values()) / len(per_task)
            out.append(summary)
    return out


def _summary(model, method, ratio, task, sel, ref, n_boot, seed, alpha, exact_below) -> dict[str, Any]:
    correct = np.array([bool(r["correct"]) for r in sel], dtype=np.float64)
    low, high = bootstrap_ci(correct, n_boot=n_boot, seed=seed, alpha=alpha)
    summary: dict[str, Any] = {
        "kind": "summary",
        "model": model,
        "method": method,
        "ratio": ratio,
        "task": task,
        "n": len(sel),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci_low": low,
        "ci_high": high,
        "chance": float(np.mean([1.0 / r["n_options"] for r in sel])),
        "flops_fastv": _mean([r.get("flops_fastv") for r in sel]),
        "ttft_ms": _median([r.get("ttft_ms") for r in sel]),
        "ttft_ms_mean": _mean([r.get("ttft_ms") for r in sel]),
        "video_tokens": _mean([r.get("video_tokens") for r in sel]),
        "into_llm": _mean([r.get("into_llm") for r in sel]),
    }
    refs = [ref.get((model, r["sample_id"])) for r in sel]
    if all(x is not None for x in refs):
        base = np.array([bool(x["correct"]) for x in refs], dtype=np.float64)
        test = mcnemar(base, correct, exact_below=exact_below)
        d_low, d_high = bootstrap_ci(correct - base, n_boot=n_boot, seed=seed, alpha=alpha)
        base_flops = _mean([x.get("flops_fastv") for x in refs])
        base_ttft = _median([x.get("ttft_ms") for x in refs])
        summary.update(
            agreement=agreement([r["chosen"] for r in sel], [x["chosen"] for x in refs]),
            delta=float(correct.mean() - base.mean()),
            delta_ci_low=d_low,
            delta_ci_high=d_high,
            mcnemar_b01=test.b01,
            mcnemar_b10=test.b10,
            mcnemar_statistic=test.statistic,
            mcnemar_p=test.p_value,
            mcnemar_test=mcnemar_test_name(test.b01, test.b10, exact_below),
            flops_fraction=summary["flops_fastv"] / base_flops if base_flops and summary["flops_fastv"] else None,
            speedup=base_ttft / summary["ttft_ms"] if base_ttft and summary["ttft_ms"] else None,
        )
    return summary


# ------------------------------------------------------------------------------------------------- workloads


def make_eval_workload(config: EvalConfig) -> EvalWorkload:
    """The model to evaluate: ``config.model`` (``"tiny"``: the built-in one), else the shipped synth model when it
    is installed, else the built-in tiny random-weight Qwen2.5-VL (the report then says so)."""
    from tokpress.eval.bench.workloads import environment, resolve_device

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
            path, dtype=dtype, attn_implementation=config.attn, device_map={"": str(device)}
        ).eval()
        env = environment(model, device, dtype, config.attn)
        env["model"] = path
        work = EvalWorkload(Path(path).name, model, AutoProcessor.from_pretrained(path), env)
    if config.benchmark == "synth":
        env["benchmark"] = f"synth test split, {config.n or DEFAULT_N} videos (namespace {config.synth.seed})"
    else:
        env["benchmark"] = str(config.benchmark)
    env["scoring"] = f"{config.scoring}: {config.answer_format}s" + (
        f", {config.normalize} log-likelihood" if config.scoring == "logits" else ", greedy decoding"
    )
    return work


def evaluate(
    config: EvalConfig | None = None,
    out: str | Path | None = "tokpress-eval",
    *,
    work: EvalWorkload | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    resume: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """``tokpress eval`` from Python: run :func:`run_eval` and write the report into ``out`` (None: no files).

    Per-sample records stream to ``out/samples.jsonl`` as they are made; with ``resume`` a run interrupted in
    the same ``out`` with the same configuration continues where it stopped.

    Returns:
        The records and the paths written (name -> path).
    """
    from tokpress.eval.accuracy.report import write_eval_report

    config = config or EvalConfig()
    config.validate()
    if out is not None:
        check_writable(out)  # before the run: results are never lost to an unwritable folder
    work = work or make_eval_workload(config)
    stream = None if out is None else Path(out) / STREAM_FILE
    records = run_eval(config, work, progress, stream=stream, resume=resume)
    if out is None:
        return records, {}
    notes = [RANDOM_WEIGHTS_NOTE] if work.random_weights else []
    paths = write_eval_report(records, work.environment, out, command=command, notes=notes, config=config)
    return records, paths
