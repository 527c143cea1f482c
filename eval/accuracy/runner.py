"""``tokpress eval``: multiple-choice accuracy of a video LLM under every method x retention ratio, with statistics
and the cost of the same runs.

**Samples.** ``benchmark="synth"`` generates the test split of :mod:`tokpress.eval.synth.tasks` in memory
(``make_split("test", n, config.synth)``, one question per video, tasks in turn). ``videomme``, ``mvbench``,
``longvideobench`` and ``egoschema`` read the official release in ``config.data``
(:mod:`tokpress.eval.accuracy.benchmarks`: each with its lmms-eval prompt, answer extraction and categories; at most
32 uniform frames per video unless ``frames`` / ``fps`` say otherwise). Any other value is a local dataset
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
(:func:`match_answer`, or the real benchmark's lmms-eval extraction; no match counts as wrong, ``chosen = -1``).
``scoring="both"`` (the default on real benchmarks) does both on the same prefill inputs: ``chosen`` / ``correct``
from the letters' log-likelihoods, ``chosen_generate`` / ``correct_generate`` from the generated letter.

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
every method and recorded apart); for ``framebudget`` with ``scorer="lvlm"`` (``quota``) TTFT also holds the
frame-scoring pre-pass (:mod:`~tokpress.eval.accuracy.prepass`). Its ``model.tokpress.last.tokens_per_layer``
gives the prefill FLOPs (:func:`tokpress.flops.fastv_flops`, the papers' convention) and the token counts. The
uncompressed model (``"none"``) always runs: it is the reference of agreement, McNemar's test and the cost fractions.

**Records.** :func:`run_eval` returns ``kind="sample"`` records (one per sample x method x ratio) and
``kind="summary"`` records (per method x ratio x task family, plus ``task="all"``); the fields are listed in
:func:`run_eval` and :func:`summarize`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tokpress
from tokpress.eval.accuracy.config import DEFAULT_METHODS, DEFAULT_N, DEFAULT_RATIOS, TINY_MODEL, EvalConfig, eval_plan
from tokpress.eval.accuracy.data import EvalSample, local_samples, synth_samples
from tokpress.eval.accuracy.parallel import eval_group, run_shard
from tokpress.eval.accuracy.prepass import frame_prepass, needs_frame_scores, scores_for_rows
from tokpress.eval.accuracy.runs import apply_method, prefill_counts, rows_consistent, sample_record, timed_prefill
from tokpress.eval.accuracy.scoring import (
    _device_dtype,
    generate_answers,
    option_logprobs,
    prepare,
    stack_rows,
)
from tokpress.eval.accuracy.stream import STREAM_FILE, append_records, open_stream, stream_key
from tokpress.eval.accuracy.summary import summarize
from tokpress.eval.accuracy.workload import RANDOM_WEIGHTS_NOTE, EvalWorkload, make_eval_workload
from tokpress.eval.bench.flops_exact import fastv_prefill_flops
from tokpress.eval.bench.timing import Clock
from tokpress.eval.methods import check_writable

logger = logging.getLogger("tokpress")

Progress = Callable[[str, int], None]
__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_N",
    "DEFAULT_RATIOS",
    "STREAM_FILE",
    "TINY_MODEL",
    "EvalConfig",
    "EvalWorkload",
    "eval_plan",
    "evaluate",
    "load_benchmark",
    "make_eval_workload",
    "run_eval",
    "summarize",
]


# -------------------------------------------------------------------------------------------------- samples


def load_benchmark(config: EvalConfig) -> list[EvalSample]:
    """The samples of ``config.benchmark``: ``"synth"``, a real benchmark read from ``config.data``, or a local
    folder. Raises InputError naming a missing or malformed file of a real benchmark's release."""
    from tokpress.eval.accuracy.benchmarks import BENCHMARKS, load_real

    if config.benchmark == "synth":
        return synth_samples(config.n or DEFAULT_N, config.synth)
    if config.benchmark in BENCHMARKS:
        return load_real(config.benchmark, config.data, config.n, subtitles=config.subtitles, frames=config.frames)
    return local_samples(config.benchmark, config.n)


def run_eval(
    config: EvalConfig,
    work: EvalWorkload,
    progress: Progress | None = None,
    stream: str | Path | None = None,
    resume: bool = True,
    samples: list[EvalSample] | None = None,
    summaries: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate every ``(method, ratio)`` of :func:`eval_plan` on every sample; summary records first.

    ``samples`` (default: :func:`load_benchmark`) is what a data-parallel process passes as its shard; with
    ``summaries=False`` only the sample records are returned (the main process summarises all shards at once).

    Samples are taken ``config.batch`` at a time; each batch is prepared once (video decode, processor) and run
    under every method and ratio in turn, the uncompressed model first. ``progress(label, advance)`` is called after
    each batch x run with the number of samples done.

    Each ``kind="sample"`` record: ``model, method, ratio, sample_id, task, answer, chosen, correct, reference``
    (the uncompressed model's choice), ``agree``, ``scores`` / ``logprobs`` / ``option_tokens`` (logits scoring) or
    ``generated`` (generation), ``ttft_ms`` (the timed prefill of the batch the sample was in), ``video_tokens``,
    ``into_llm``, ``tokens_per_layer``, ``flops_fastv``, ``decode_ms``, ``preprocess_ms``, ``prepass_ms``
    (``quota``'s frame-scoring pre-pass of the batch, included in ``ttft_ms``; 0 for other methods),
    ``rows_consistent`` (every option row of the scoring prefill kept as many tokens per layer as the timed single
    prefill).

    With ``stream``, each batch's records are appended to that JSON-lines file as soon as they exist (after a header
    line naming the model and configuration); with ``resume``, a batch whose records the file already holds is not
    run again (its records, timings included, are those of the earlier run), so an interrupted eval continues where
    it stopped.
    """
    config.validate()
    model, processor = work.model, work.processor
    samples = load_benchmark(config) if samples is None else samples
    plan = eval_plan(config)
    video_id = int(getattr(model.config, "video_token_id", None) or model.config.video_token_index)
    pad_id = processor.tokenizer.pad_token_id or 0
    clock = Clock(_device_dtype(model)[0])
    records: list[dict[str, Any]] = []
    stream = None if stream is None else Path(stream)
    done = {} if stream is None else open_stream(stream, stream_key(config, work.name), resume)
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
                apply_method(model, method, ratio, config.seed)
                frame_scores, prepass_s = None, 0.0
                if needs_frame_scores(model):  # quota: the LVLM scores every frame first; the user waits for it
                    if not warm:
                        frame_prepass(model, processor, prepared, config, clock)
                    frame_scores, prepass_s = frame_prepass(model, processor, prepared, config, clock)
                ones, rows = [1] * len(prepared), [len(p.options) for p in prepared]
                with scores_for_rows(model, frame_scores, ones):
                    if not warm:
                        timed_prefill(model, single, clock)
                    ttft = prepass_s + timed_prefill(model, single, clock)
                counts = prefill_counts(model, single, video_id)
                scored, consistent = [None] * len(prepared), [True] * len(prepared)
                generated: list[Any] = [None] * len(prepared)
                if config.scoring in ("logits", "both"):
                    with scores_for_rows(model, frame_scores, rows):
                        scored, stats = option_logprobs(model, prepared, pad_id)
                    consistent = rows_consistent(stats, counts, rows)
                if config.scoring in ("generate", "both"):
                    with scores_for_rows(model, frame_scores, ones):
                        generated = generate_answers(
                            model, processor, prepared, config.answer_format, config.max_new_tokens
                        )
                for b, p in enumerate(prepared):
                    record = sample_record(work.name, method, ratio, p, config, scored[b], generated[b])
                    if method == "none":
                        reference[p.sample.sample_id] = record["chosen"]
                    record["reference"] = reference.get(p.sample.sample_id)
                    record["agree"] = None if record["reference"] is None else record["chosen"] == record["reference"]
                    per_layer = counts[b]["per_layer"]
                    record.update(
                        ttft_ms=ttft * 1e3,
                        prepass_ms=prepass_s * 1e3,
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
                append_records(stream, batch_records)
    finally:
        tokpress.remove(model)
    return with_summaries(records, config) if summaries else records


def with_summaries(records: list[dict[str, Any]], config: EvalConfig) -> list[dict[str, Any]]:
    """The summary records of ``records`` (sample records of every run) followed by ``records``."""
    inconsistent = sum(not r["rows_consistent"] for r in records)
    if inconsistent:
        logger.warning("tokpress eval: %d sample runs selected differently across option rows", inconsistent)
    summary = summarize(
        records, n_boot=config.n_boot, seed=config.seed, alpha=config.alpha, exact_below=config.exact_below
    )
    return summary + records


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
    group = eval_group(config)
    if out is not None:
        check_writable(out)  # before the run: results are never lost to an unwritable folder
    samples = load_benchmark(config)  # a missing file of a release is reported before the model loads
    work = work or make_eval_workload(config)
    if group.distributed:
        records = run_shard(config, work, samples, group, progress if group.main else None, out, resume)
        if not group.main:
            return [], {}
    else:
        stream = None if out is None else Path(out) / STREAM_FILE
        records = run_eval(config, work, progress, stream=stream, resume=resume, samples=samples)
    if out is None:
        return records, {}
    notes = [RANDOM_WEIGHTS_NOTE] if work.random_weights else []
    paths = write_eval_report(records, work.environment, out, command=command, notes=notes, config=config)
    return records, paths
