"""The ``tokpress`` command: ``demo``, ``bench``, ``eval``, ``methods``, ``models``.

Errors: a :class:`~tokpress.errors.TokpressError` or a bad argument prints one line, ``error: <message>``, on
stderr and exits with 2 (a bad argument or option: click's usage errors and :class:`~tokpress.errors.ConfigError`)
or 1 (any other TokpressError, raised while running). ``--debug`` (or ``TOKPRESS_DEBUG=1``) prints the traceback
instead. Every option is checked before a model or a video is loaded.

Output: on a terminal, rich tables and a progress bar; otherwise (piped, redirected) tables at full width and plain
progress lines on stderr (stage, i/n, elapsed, ETA).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

try:  # typer >= 0.23 vendors click as typer._click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import UsageError

from tokpress.errors import ConfigError, TokpressError

#: Width of tables written when stdout is not a terminal: wide enough never to cut a cell.
PIPE_WIDTH = 1000
#: Plain progress lines of ``eval`` (not on a terminal): at most one per this many seconds, plus the first and the
#: last (``bench`` prints one per row).
PROGRESS_EVERY_S = 5.0

#: Per supported family (``config.model_type``): its name, the video-token layout its processor writes, and the
#: transformers versions it was tested on (the README's "Supported models" table says the same).
MODEL_FAMILIES: dict[str, tuple[str, str, str]] = {
    "qwen2_vl": ("Qwen2-VL", "one block of (T/2)·(H/28)·(W/28); M-RoPE", "5.17.0, 5.23.0, 5.24.0, 5.25.0"),
    "qwen2_5_vl": ("Qwen2.5-VL", "one block of (T/2)·(H/28)·(W/28); M-RoPE", "5.17.0, 5.23.0, 5.24.0, 5.25.0"),
    "qwen3_vl": (
        "Qwen3-VL",
        "per 2-frame block: <t seconds> text + (H/32)·(W/32); interleaved M-RoPE; deepstack",
        "5.17.0, 5.25.0",
    ),
    "qwen3_vl_moe": ("Qwen3-VL-MoE", "as qwen3_vl", "5.17.0, 5.25.0"),
    "qwen3_5": (
        "Qwen3.5",
        "as qwen3_vl (no deepstack); 3 Gated-DeltaNet layers per attention layer",
        "5.17.0, 5.25.0",
    ),
    "qwen3_5_moe": ("Qwen3.5-MoE", "as qwen3_5", "5.17.0, 5.25.0"),
    "llava_onevision": (
        "LLaVA-OneVision",
        "one block of T·14·14 + 1 newline (384 px); 1-D positions",
        "5.17.0, 5.23.0, 5.24.0, 5.25.0",
    ),
    "llava_next_video": ("LLaVA-NeXT-Video", "one block of T·12·12 (336 px, pooled); 1-D positions", "5.17.0, 5.25.0"),
    "internvl": (
        "InternVL 3 / 3.5 -hf",
        "per frame 'FrameN: <img>' + 16·16 + '</img>' (448 px); 1-D positions",
        "5.17.0, 5.25.0",
    ),
}

#: One line per shipped method: what it does (the policy modules' docstrings have the details and sources).
METHOD_LINES: dict[str, str] = {
    "aim": "merges each frame by iterative bipartite matching; from mid-depth prunes by PageRank "
    "of attention · Zhong et al., ICCV 2025",
    "divprune": "keeps the most mutually diverse tokens (greedy max-min cosine distance) · Alvar et al., CVPR 2025",
    "dycoke": "merges similar tokens in 4-frame windows; while decoding, attends to the top 30 % visual tokens · "
    "CVPR 2025",
    "evs": "keeps the tokens that changed most since the previous frame, one global top-k · vLLM's EVS",
    "fastv": "at layer 2 keeps the visual tokens the last query attends to most · Chen et al., ECCV 2024",
    "fastvid": "cuts the video into segments; keeps salient tokens, merges the rest into density peaks · "
    "Shen et al., NeurIPS 2025",
    "fixed": "replays index lists given up front (Python only: outer_options={'keep': ...}; not from the CLI)",
    "flashvid": "segments, selects by attention + diversity, tree-merges; at layer 20 keeps the top 30 % · ICLR 2026",
    "framebudget": "gives each frame tokens by its similarity to the question, then fills them with another "
    "policy (fill=uniform) · after QuoTA, AAAI 2026",
    "framefusion": "merges tokens like the previous frame's in shallow layers, then prunes by attention · "
    "Fu et al., ICCV 2025",
    "frames": "baseline: keeps evenly spaced whole frames",
    "holitom": "segments in time and merges by density-peak clustering; at layer 18 keeps half by attention · "
    "NeurIPS 2025",
    "mustdrop": "merges each frame's most similar 2x2 windows and marks a key set no stage drops; dual-attention "
    "filters at 4 layers, then cuts their KV cache to the survivors · Liu et al., 2024",
    "pdrop": "drops visual tokens stage by stage by last-instruction attention (a pyramid over depth) · "
    "Xing et al., CVPR 2025",
    "prunevid": "merges static tokens; inside, prunes by question attention and trims earlier KV cache · ACL 2025",
    "quota": "an LVLM pre-pass scores each frame's relevance to the question; frames get tokens by p², "
    "filled evenly · Luo et al., AAAI 2026",
    "random": "baseline: a seeded random subset of each video's tokens",
    "scissor": "merges semantic connected components per frame, then across frames · Sun et al., 2025",
    "sparsevlm": "at 3 layers keeps the visual tokens the question's rater tokens attend to most, recycles the rest · "
    "ICML 2025",
    "sttm": "at layer 2 merges tokens by a spatial quadtree, then across frames (query-agnostic) · "
    "Hyun et al., ICCV 2025",
    "uniform": "baseline: evenly spaced tokens in every frame",
    "vidcom2": "keeps each frame's most unique tokens, more for frames unlike the video · Liu et al., EMNLP 2025",
    "vtccls": "keeps the tokens the vision encoder's [CLS] token attends to most, summed over its last layers "
    "(mean query where the tower has no [CLS]) · Wang et al., 2024",
    "visionzip": "per frame keeps the tokens the vision encoder attends to most + merged context tokens · "
    "Yang et al., CVPR 2025",
}

#: one line per vision-stage policy (``vision=``), shown by ``tokpress methods`` under the methods
VISION_LINES: dict[str, tuple[str, str]] = {
    "mustdrop": (
        "inside the encoder · LLaVA-OneVision (SigLIP)",
        "merges each frame's most similar 3x3 patch windows after the first layer (no size bias), restores the grid "
        "· Liu et al., 2024 (MustDrop's vision stage)",
    ),
    "rlt": (
        "before the encoder · Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5",
        "drops the 2x2 patch groups that changed least since the previous temporal patch; the ViT (and, alone, "
        "the LLM) runs on the rest · Choudhury et al., NeurIPS 2024 (RLT), training-free",
    ),
    "tome": (
        "inside the encoder · LLaVA-OneVision (SigLIP)",
        "merges each frame's patches by bipartite matching after layer k, restores the grid for the LLM · "
        "Bolya et al., ICLR 2023 (ToMe)",
    ),
}

_state = {"debug": False}


def _debug() -> bool:
    return _state["debug"] or os.environ.get("TOKPRESS_DEBUG", "") not in ("", "0")


def _fail(exc: BaseException, message: str, code: int) -> None:
    """Print ``error: message`` on one line (or the traceback under ``--debug``) and exit with ``code``."""
    if _debug():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    else:
        typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _usage_error(exc: UsageError) -> None:
    if type(exc).__name__ == "NoArgsIsHelpError":  # `tokpress` alone: the help screen, as usual
        raise exc
    hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    _fail(exc, exc.format_message() + hint, exc.exit_code)


class _Group(TyperGroup):
    """Runs a subcommand; its errors become one line (see the module docstring)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:  # the group's own options (tokpress --bogus)
            _usage_error(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # BadParameter, NoSuchOption, MissingParameter, ... of a subcommand
            _usage_error(exc)
        except ConfigError as exc:
            field = getattr(exc, "field", None)
            _fail(exc, f"--{field.replace('_', '-')}: {exc}" if field else str(exc), 2)
        except TokpressError as exc:
            _fail(exc, str(exc), 1)


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Training-free video-token compression for HF video LLMs.",
    pretty_exceptions_show_locals=False,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tokpress")
    except PackageNotFoundError:
        import tokpress

        return tokpress.__version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"tokpress {_version()}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what tokpress does."),
    debug: bool = typer.Option(
        False, "--debug", envvar="TOKPRESS_DEBUG", help="Show the traceback of an error instead of one line."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


def main() -> None:
    """Console-script entry point (``tokpress``)."""
    app(prog_name="tokpress")


# ---------------------------------------------------------------------------------------------------- output


def _console() -> Console:
    """stdout: a terminal's width on a terminal, else wide enough that no table cell is cut."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _Progress:
    """A transient rich bar on a terminal; else plain lines on stderr: ``stage: i/n label · elapsed · ETA``."""

    def __init__(
        self, stage: str, total: int, console: Console, every: float = PROGRESS_EVERY_S, enabled: bool = True
    ) -> None:
        self.stage, self.total, self.console, self.every = stage, max(total, 1), console, every
        self.done, self.start, self.last_line = 0, time.perf_counter(), float("-inf")
        self.bar = None
        self.enabled = enabled  # False: silent (the non-main processes of a data-parallel run)

    def __enter__(self) -> _Progress:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self.bar = Progress(*columns, console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.stage, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, label: str, done: int) -> None:
        """``done`` of ``total`` units are finished; ``label``: what runs (or ran) now."""
        self.done = min(done, self.total)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=label)
            return
        now = time.perf_counter()
        if now - self.last_line < self.every and self.done < self.total:
            return
        self.last_line, elapsed = now, now - self.start
        eta = _clock(elapsed / self.done * (self.total - self.done)) if self.done else "?"
        typer.echo(f"{self.stage}: {self.done}/{self.total} {label} · {_clock(elapsed)} elapsed · ETA {eta}", err=True)


def _note(text: str) -> None:
    """A one-line status message on stderr (e.g. before a model loads)."""
    typer.echo(text, err=True)


# --------------------------------------------------------------------------------------------------- checks


def _flag_error(flag: str, message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=flag)


def _parse_ratios(text: str) -> tuple[float, ...]:
    from tokpress.eval.methods import check_ratios, parse_list

    try:
        values = tuple(float(r) for r in parse_list(text))
    except ValueError:
        raise _flag_error("--ratios", f"comma-separated numbers in (0, 1], got {text!r}") from None
    return check_ratios(values)


def _parse_batch(text: str) -> tuple[int, ...]:
    """``--batch``: one size or a comma-separated list, e.g. ``1,4,8`` (checked further by the config)."""
    from tokpress.eval.methods import parse_list

    try:
        return tuple(int(b) for b in parse_list(text))
    except ValueError:
        raise _flag_error("--batch", f"comma-separated integers >= 1 (e.g. 1,4,8), got {text!r}") from None


# ------------------------------------------------------------------------------------------------- commands


@app.command()
def demo(
    family: str = typer.Option(
        "qwen2_5_vl",
        help="Tiny model: qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5, llava_onevision, llava_next_video, internvl.",
    ),
    methods: str = typer.Option(
        ",".join(__import__("tokpress.eval.demo", fromlist=["x"]).DEFAULT_METHODS),
        help="Comma-separated: none, a method, or outer+inner.",
    ),
    ratio: float = typer.Option(0.25, help="retain_ratio for every method, in (0, 1]."),
    frames: int = typer.Option(16, help="Frames of the generated video (>= 1)."),
    repeats: int = typer.Option(3, help="Timed prefills per method (median; >= 1)."),
) -> None:
    """Compress a generated video on a tiny built-in model (offline) and show tokens, FLOPs and timings."""
    from tokpress.eval.methods import check_count, check_methods, check_ratios, parse_list
    from tokpress.eval.tiny.families import ALL_FAMILIES

    if family not in ALL_FAMILIES:
        raise _flag_error("--family", f"{family!r} is not a tiny family; choose one of {', '.join(ALL_FAMILIES)}")
    names = tuple(parse_list(methods))
    check_methods(names)
    check_ratios((ratio,), "ratio")
    check_count("frames", frames)
    check_count("repeats", repeats)

    from tokpress.eval.demo import run_demo

    console = _console()
    _note(f"demo: building the tiny {family} model")
    records = run_demo(family, names, ratio, frames, repeats)
    table = Table(title=f"tokpress demo — tiny random-weight {family}, {frames} frames, CPU")
    for col in (
        "method",
        "ratio",
        "video → LLM → after K",
        "FLOPs",
        "prefill ms",
        "compress ms",
        "generate ms",
        "same answer",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in records:
        flow = " → ".join(str(x) for x in [r["video_tokens"], r["into_llm"], *r["after_inner"]])
        table.add_row(
            r["method"],
            f"{r['ratio']:.2f}",
            flow,
            f"{r['flops_fraction']:.0%}",
            f"{r['prefill_ms']:.1f}",
            f"{r['compression_ms']:.1f}",
            f"{r['generate_ms']:.0f}",
            "yes" if r["same_answer"] else "no",
        )
    console.print(table)
    console.print(
        "[dim]Random weights: answers are noise; a model this small is overhead-bound on CPU. "
        "Speed: run on a real model with a GPU.[/dim]"
    )


@app.command()
def bench(
    model: str = typer.Option(
        None,
        help="A checkpoint (local path or cached hub id); default: the shipped synth model (else a built-in tiny "
        "one) on its own test video.",
    ),
    arch: str = typer.Option(
        None, help="A published architecture or a scaled CPU setting (<name>-cpu), random weights (see --list-archs)."
    ),
    random_weights: bool = typer.Option(False, "--random-weights", help="Required with --arch (states the fact)."),
    video: str = typer.Option(
        None, help="A video file; default: a generated one. Without --frames/--fps: up to 32 of its frames."
    ),
    question: str = typer.Option("What happens in the video? Answer briefly.", help="The prompt's question."),
    methods: str = typer.Option(
        ",".join(__import__("tokpress.eval.bench.runner", fromlist=["x"]).DEFAULT_METHODS),
        help="Comma-separated: none, methods, or outer+inner specs.",
    ),
    ratios: str = typer.Option("0.5,0.25,0.1", help="Comma-separated retain ratios, each in (0, 1]."),
    frames: int = typer.Option(
        None, help="Frames sampled uniformly from the video (>= 1; at most the video's). Excludes --fps."
    ),
    fps: float = typer.Option(None, help="Or: frames sampled per second of video (> 0). Excludes --frames."),
    repeats: int = typer.Option(
        3,
        help="Rounds (>= 1): each round times every row once, in a fresh shuffled order; per row the median, min and "
        "max over rounds, speed-ups paired per round with a bootstrap interval.",
    ),
    warmup: int = typer.Option(1, help="Untimed requests per row before the rounds (>= 0)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:N or mps (default: cuda when available)."),
    device_map: str = typer.Option(
        None, help="'auto': spread a checkpoint larger than one GPU over every visible GPU (accelerate)."
    ),
    dtype: str = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    attn: str = typer.Option("sdpa", help="sdpa, eager or flash_attention_2 (needs flash-attn)."),
    batch: str = typer.Option(
        "1",
        help="Copies of the prompt per request (>= 1); a comma-separated list (e.g. 1,4,8) measures every row at "
        "each size, speed-ups paired within a size.",
    ),
    max_new_tokens: int = typer.Option(16, help="Tokens generated for the answer and decode speed (>= 1)."),
    seed: int = typer.Option(0, help="Seed of the rounds' shuffled orders and the bootstrap intervals (>= 0)."),
    size: int = typer.Option(448, help="--arch only: frame side in pixels of the synthetic video."),
    out: str = typer.Option("tokpress-results", help="Output folder (results.json/csv, report.md, PNG plots)."),
    list_archs: bool = typer.Option(False, "--list-archs", help="List the shipped architectures and exit."),
    overhead: bool = typer.Option(
        False,
        "--overhead",
        help="Instead: time every policy's selection alone (no model) at --shapes, per --ratios, --repeats rounds.",
    ),
    shapes: str = typer.Option(
        "32x14x14x3584,64x16x16x3584", help="With --overhead: frames x height x width x channels, comma-separated."
    ),
) -> None:
    """Compare methods x retain ratios: TTFT by stage, the oracle, FLOPs, memory, decode speed, answers."""
    from tokpress.eval.bench.runner import BenchConfig, bench_steps, run_bench
    from tokpress.eval.methods import check_writable, parse_list

    console = _console()
    if overhead:
        _overhead(shapes, ratios, repeats, device, dtype, out, console)
        return
    if list_archs:
        from tokpress.eval.bench.archs import arch_label, arch_names

        width = max(map(len, arch_names()))
        for name in arch_names():
            console.print(f"{name:<{width}}  {arch_label(name)}", highlight=False)
        return
    if arch:
        from tokpress.eval.bench.archs import arch_names

        if not random_weights:
            raise _flag_error("--arch", "it instantiates random weights: add --random-weights to confirm")
        if arch not in arch_names():
            raise _flag_error("--arch", f"unknown architecture {arch!r}; see tokpress bench --list-archs")
    config = BenchConfig(
        model=model,
        arch=arch,
        video=video,
        question=question,
        methods=tuple(parse_list(methods)),
        ratios=_parse_ratios(ratios),
        frames=frames,
        fps=fps,
        repeats=repeats,
        warmup=warmup,
        device=device,
        device_map=device_map,
        dtype=dtype,
        attn=attn,
        batch=_parse_batch(batch),
        max_new_tokens=max_new_tokens,
        seed=seed,
        extra={"size": size},
    )
    config.validate()
    check_writable(out)

    from tokpress.eval.bench.report import print_table, write_report
    from tokpress.eval.bench.workloads import make_workload

    _note("bench: loading the model")
    work = make_workload(config)
    steps = bench_steps(config)  # a warm-up per row, then the rounds
    with _Progress("bench", steps, console, every=0.0) as progress:  # steps take seconds: a line each
        calls = iter(range(steps))
        records = run_bench(config, work, progress=lambda label: progress.update(f"now {label}", next(calls)))
        progress.update("rows measured", steps)
    paths = write_report(records, work.environment, out)
    print_table(records, console)
    console.print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {out}/")


@app.command("eval")
def eval_command(
    model: str = typer.Option(
        None,
        help="A checkpoint (local path or cached hub id); 'tiny': the built-in random-weight model. "
        "Default: the shipped synth model, else the built-in one.",
    ),
    benchmark: str = typer.Option(
        "synth",
        help="'synth' (generated test split); videomme, mvbench, longvideobench or egoschema (official release in "
        "--data, lmms-eval prompts); or a local dataset folder (annotations.jsonl).",
    ),
    data: str = typer.Option(
        None, help="Real benchmarks: the folder of the official release (e.g. the lmms-lab/Video-MME snapshot)."
    ),
    subtitles: bool = typer.Option(False, help="Video-MME: add the subtitles to the prompt (lmms-eval w_subtitle)."),
    methods: str = typer.Option(
        ",".join(__import__("tokpress.eval.accuracy.config", fromlist=["x"]).DEFAULT_METHODS),
        help="Comma-separated: none, methods, or outer+inner specs (the uncompressed model always runs).",
    ),
    ratios: str = typer.Option("0.5,0.25,0.1", help="Comma-separated retain ratios, each in (0, 1]."),
    n: int = typer.Option(
        __import__("tokpress.eval.accuracy.config", fromlist=["x"]).DEFAULT_N,
        "--n",
        "--limit",
        help="Questions (>= 1): synth: videos of the test split; a dataset: its first n (MVBench: tasks in turn).",
    ),
    seed: int = typer.Option(0, help="Seed of the bootstrap (and of the random method)."),
    batch: int = typer.Option(1, help="Samples per forward (>= 1)."),
    answer_format: str = typer.Option(
        None, help="Score the option 'word's or their 'letter's (default: letters on real benchmarks, else words)."
    ),
    scoring: str = typer.Option(
        None,
        help="'logits' (option log-likelihoods), 'generate' (greedy, matched) or 'both' (default on real "
        "benchmarks; else logits).",
    ),
    normalize: str = typer.Option("mean", help="Option log-likelihood: 'mean' per token or 'sum'."),
    frames: int = typer.Option(
        None,
        help="Video files: frames sampled per video (default: the annotation's; real benchmarks: up to 32). "
        "Excludes --fps.",
    ),
    fps: float = typer.Option(None, help="Video files: or frames per second of video (> 0). Excludes --frames."),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples of the confidence intervals (>= 1)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:N or mps (default: cuda when available)."),
    device_map: str = typer.Option(
        None, help="'auto': spread a checkpoint larger than one GPU over every visible GPU (accelerate)."
    ),
    dtype: str = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    attn: str = typer.Option("sdpa", help="sdpa, eager or flash_attention_2 (needs flash-attn)."),
    out: str = typer.Option("tokpress-eval", help="Output folder (results.json/csv, report.md, PNG plots)."),
    resume: bool = typer.Option(
        True, help="Continue a run interrupted in the same --out (samples.jsonl, same settings); --no-resume: redo."
    ),
) -> None:
    """Accuracy of methods x retain ratios on a video-QA benchmark, with CIs, McNemar, agreement, FLOPs and TTFT."""
    from tokpress.eval.accuracy.runner import (
        RANDOM_WEIGHTS_NOTE,
        EvalConfig,
        eval_plan,
        evaluate,
        load_benchmark,
        make_eval_workload,
    )
    from tokpress.eval.methods import check_writable, parse_list

    config = EvalConfig(
        model=model,
        benchmark=benchmark,
        data=data,
        subtitles=subtitles,
        methods=tuple(parse_list(methods)),
        ratios=_parse_ratios(ratios),
        n=n,
        seed=seed,
        batch=batch,
        answer_format=answer_format,
        scoring=scoring,
        normalize=normalize,
        frames=frames,
        fps=fps,
        n_boot=n_boot,
        device=device,
        device_map=device_map,
        dtype=dtype,
        attn=attn,
    )
    config.validate()
    check_writable(out)

    from tokpress.eval.accuracy.parallel import eval_group, shard
    from tokpress.eval.accuracy.tables import print_eval_table

    group = eval_group(config)  # launched with torchrun / accelerate launch: this process's shard and device
    console = _console()
    samples = shard(load_benchmark(config), group)  # a missing benchmark file: before the model
    total = len(eval_plan(config)) * len(samples)
    if group.main:
        _note("eval: loading the model" + (f" ({group.world} processes)" if group.distributed else ""))
    work = make_eval_workload(config)
    with _Progress("eval", total, console, enabled=group.main) as progress:
        done = [0]

        def advance(label: str, count: int) -> None:
            done[0] += count
            progress.update(label, done[0])

        records, paths = evaluate(config, out, work=work, progress=advance, resume=resume)
    if not group.main:  # the main process reports for all
        return
    if work.random_weights:
        console.print(f"[yellow]{RANDOM_WEIGHTS_NOTE}[/yellow]")
    print_eval_table(records, console, title=f"tokpress eval — {work.name}, {config.benchmark}")
    console.print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {out}/")


def _overhead(
    shapes: str, ratios: str, repeats: int, device: str | None, dtype: str | None, out: str, console: Console
) -> None:
    """``tokpress bench --overhead``: every policy's selection alone, per shape and ratio (overhead.json/.md)."""
    import json
    from pathlib import Path

    from tokpress.errors import TokpressError
    from tokpress.eval.bench.overhead import overhead_table, parse_shape, run_overhead
    from tokpress.eval.methods import check_writable, parse_list

    try:
        parsed = [parse_shape(s) for s in parse_list(shapes)]
    except TokpressError as exc:
        raise _flag_error("--shapes", str(exc)) from None
    ratio_list = _parse_ratios(ratios)
    check_writable(out)
    records, tables = [], []
    for ratio in ratio_list:
        got = run_overhead(shapes=parsed, ratio=ratio, repeats=repeats, device=device, dtype=dtype)
        records += got
        tables.append(f"### retain ratio {ratio:g}\n\n{overhead_table(got)}")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "overhead.json").write_text(json.dumps(records, indent=1))
    (Path(out) / "overhead.md").write_text("\n\n".join(tables) + "\n")
    console.print("\n\n".join(tables), highlight=False)
    console.print(f"wrote overhead.json, overhead.md to {out}/")


def _method_line(name: str) -> str:
    """One line on what method ``name`` does: :data:`METHOD_LINES`, else the preset's description or the first
    sentence of its policy module's docstring (for methods registered at run time)."""
    from tokpress.registry import get_policy, get_preset

    if name in METHOD_LINES:
        return METHOD_LINES[name]
    preset = get_preset(name)
    text = preset.description or ""
    if not text:
        stage, policy = ("outer", preset.outer) if preset.outer else ("inner", preset.inner)
        text = (sys.modules[get_policy(stage, policy).__module__].__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(text.split()).split(" — ", 1)[-1]
    return text.split(". ")[0].rstrip(".")


@app.command()
def methods() -> None:
    """List the methods (presets): the stage(s) they act in and what each does, one line each."""
    import tokpress
    from tokpress.policies.vision import vision_policy_names
    from tokpress.registry import get_preset

    table = Table(title="tokpress methods (outer: before the LLM; inner: inside it)")
    for col in ("method", "outer", "inner", "what it does"):
        table.add_column(col)
    for name in tokpress.preset_names():
        p = get_preset(name)
        table.add_row(name, p.outer or "—", p.inner or "—", _method_line(name))
    _console().print(table)
    vision = Table(title="vision-stage policies (vision=..., or vision@r>method on the command line)")
    for col in ("vision", "where · families", "what it does"):
        vision.add_column(col)
    for name in vision_policy_names():
        where, line = VISION_LINES.get(name, ("—", "—"))
        vision.add_row(name, where, line)
    _console().print(vision)


@app.command()
def models() -> None:
    """List the supported model families (``config.model_type``): video-token layout and tested transformers."""
    import tokpress

    table = Table(title="tokpress models (transformers >= 5.17, < 6)")
    for col in ("model_type", "family", "video tokens (as the processor writes them)", "tested transformers"):
        table.add_column(col)
    for name in tokpress.adapter_names():
        family, layout, tested = MODEL_FAMILIES.get(name, (name, "—", "—"))
        table.add_row(name, family, layout, tested)
    _console().print(table)


if __name__ == "__main__":
    main()
