"""The ``tokpress`` command: ``demo``, ``methods``, ``models``."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Training-free video-token compression for HF video LLMs."
)
console = Console()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what tokpress does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


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
    ratio: float = typer.Option(0.25, help="retain_ratio for every method."),
    frames: int = typer.Option(16, help="Frames of the generated video."),
    repeats: int = typer.Option(3, help="Timed prefills per method (median)."),
) -> None:
    """Compress a generated video on a tiny built-in model (offline) and show tokens, FLOPs and timings."""
    from tokpress.eval.demo import run_demo
    from tokpress.eval.methods import parse_list

    records = run_demo(family, tuple(parse_list(methods)), ratio, frames, repeats)
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
    model: str = typer.Option(None, help="A checkpoint (local path or cached hub id); default: the built-in model."),
    arch: str = typer.Option(None, help="A published architecture with random weights (see --list-archs)."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Required with --arch (states the fact)."),
    video: str = typer.Option(None, help="A video file; default: a generated one."),
    question: str = typer.Option("What happens in the video? Answer briefly.", help="The prompt's question."),
    methods: str = typer.Option(
        ",".join(__import__("tokpress.eval.bench", fromlist=["x"]).DEFAULT_METHODS),
        help="Comma-separated: none, methods, or outer+inner specs.",
    ),
    ratios: str = typer.Option("0.5,0.25,0.1", help="Comma-separated retain ratios."),
    frames: int = typer.Option(None, help="Frames sampled from the video."),
    fps: float = typer.Option(None, help="Or: frames per second sampled from the video."),
    repeats: int = typer.Option(3, help="Timed requests per row (median, min, max)."),
    warmup: int = typer.Option(1, help="Untimed requests before them."),
    device: str = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    dtype: str = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    attn: str = typer.Option("sdpa", help="sdpa, flash_attention_2 or eager."),
    batch: int = typer.Option(1, help="Copies of the prompt per request."),
    max_new_tokens: int = typer.Option(16, help="Tokens generated for the answer and decode speed."),
    size: int = typer.Option(448, help="--arch only: frame side in pixels of the synthetic video."),
    out: str = typer.Option("tokpress-results", help="Output folder (results.json/csv, report.md, PNG plots)."),
    list_archs: bool = typer.Option(False, "--list-archs", help="List the shipped architectures and exit."),
) -> None:
    """Compare methods x retain ratios: TTFT by stage, the oracle, FLOPs, memory, decode speed, answers."""
    from rich.progress import Progress

    from tokpress.errors import ConfigError
    from tokpress.eval.bench import BenchConfig, run_bench
    from tokpress.eval.methods import parse_list, parse_method
    from tokpress.eval.report import print_table, write_report
    from tokpress.eval.workloads import make_workload

    if list_archs:
        from tokpress.eval.archs import arch_names

        for name in arch_names():
            console.print(name)
        return
    if arch and not random_weights:
        raise typer.BadParameter("--arch instantiates random weights: add --random-weights to confirm")
    names = tuple(parse_list(methods))
    for name in names:
        parse_method(name)  # fail early, naming the valid methods
    try:
        ratio_values = tuple(float(r) for r in parse_list(ratios))
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated numbers in (0, 1], got {ratios!r}") from None
    config = BenchConfig(
        model=model,
        arch=arch,
        video=video,
        question=question,
        methods=names,
        ratios=ratio_values,
        frames=frames,
        fps=fps,
        repeats=repeats,
        warmup=warmup,
        device=device,
        dtype=dtype,
        attn=attn,
        batch=batch,
        max_new_tokens=max_new_tokens,
        extra={"size": size},
    )
    work = make_workload(config)
    from tokpress.eval.bench import bench_plan

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("bench", total=len(bench_plan(config)))
        records = run_bench(config, work, progress=lambda label: bar.update(task, advance=1, description=label))
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
    benchmark: str = typer.Option("synth", help="'synth' (generated test split) or a local dataset folder."),
    methods: str = typer.Option(
        ",".join(__import__("tokpress.eval.accuracy", fromlist=["x"]).DEFAULT_METHODS),
        help="Comma-separated: none, methods, or outer+inner specs (the uncompressed model always runs).",
    ),
    ratios: str = typer.Option("0.5,0.25,0.1", help="Comma-separated retain ratios."),
    n: int = typer.Option(
        __import__("tokpress.eval.accuracy", fromlist=["x"]).DEFAULT_N,
        help="synth: videos of the test split; a local dataset: its first n questions (0: all).",
    ),
    seed: int = typer.Option(0, help="Seed of the bootstrap (and of the random method)."),
    batch: int = typer.Option(1, help="Samples per forward."),
    answer_format: str = typer.Option("word", help="Score the option 'word's or their 'letter's."),
    scoring: str = typer.Option("logits", help="'logits' (option log-likelihoods) or 'generate' (greedy, matched)."),
    normalize: str = typer.Option("mean", help="Option log-likelihood: 'mean' per token or 'sum'."),
    frames: int = typer.Option(None, help="Local datasets: frames sampled per video (default: the annotation's)."),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples of the confidence intervals."),
    device: str = typer.Option(None, help="cuda or cpu (default: cuda when available)."),
    dtype: str = typer.Option(None, help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)."),
    attn: str = typer.Option("sdpa", help="sdpa, flash_attention_2 or eager."),
    out: str = typer.Option("tokpress-eval", help="Output folder (results.json/csv, report.md, PNG plots)."),
) -> None:
    """Accuracy of methods x retain ratios on a video-QA benchmark, with CIs, McNemar, agreement, FLOPs and TTFT."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tokpress.errors import ConfigError
    from tokpress.eval.accuracy import (
        RANDOM_WEIGHTS_NOTE,
        EvalConfig,
        eval_plan,
        evaluate,
        load_benchmark,
        make_eval_workload,
    )
    from tokpress.eval.eval_report import print_eval_table
    from tokpress.eval.methods import parse_list

    try:
        ratio_values = tuple(float(r) for r in parse_list(ratios))
    except ValueError:
        raise ConfigError(f"--ratios must be comma-separated numbers in (0, 1], got {ratios!r}") from None
    config = EvalConfig(
        model=model,
        benchmark=benchmark,
        methods=tuple(parse_list(methods)),
        ratios=ratio_values,
        n=n or None,
        seed=seed,
        batch=batch,
        answer_format=answer_format,
        scoring=scoring,
        normalize=normalize,
        frames=frames,
        n_boot=n_boot,
        device=device,
        dtype=dtype,
        attn=attn,
    )
    config.validate()  # fail early, naming the bad option
    work = make_eval_workload(config)
    total = len(eval_plan(config)) * len(load_benchmark(config))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("eval", total=total)
        records, paths = evaluate(
            config,
            out,
            work=work,
            progress=lambda label, done: bar.update(task, advance=done, description=label),
        )
    if work.random_weights:
        console.print(f"[yellow]{RANDOM_WEIGHTS_NOTE}[/yellow]")
    print_eval_table(records, console, title=f"tokpress eval — {work.name}, {config.benchmark}")
    console.print(f"wrote {', '.join(sorted(p.name for p in paths.values()))} to {out}/")


@app.command()
def methods() -> None:
    """List the methods (presets), their policies and what each does."""
    import sys

    import tokpress
    from tokpress.registry import get_policy, get_preset

    def summary(preset) -> str:
        if preset.description:
            return preset.description
        stage, name = ("outer", preset.outer) if preset.outer else ("inner", preset.inner)
        doc = (sys.modules[get_policy(stage, name).__module__].__doc__ or "").strip()
        first = doc.split("\n\n")[0].replace("\n", " ") if doc else ""
        return first.split(" — ", 1)[-1]

    table = Table(title="tokpress methods")
    for col in ("method", "outer", "inner", "what it is"):
        table.add_column(col)
    for name in tokpress.preset_names():
        p = get_preset(name)
        table.add_row(name, p.outer or "—", p.inner or "—", summary(p))
    console.print(table)


@app.command()
def models() -> None:
    """List the supported model families (``config.model_type``)."""
    import tokpress

    for name in tokpress.adapter_names():
        console.print(name)


if __name__ == "__main__":
    app()
