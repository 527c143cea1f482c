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
    family: str = typer.Option("qwen2_5_vl", help="Built-in tiny model: qwen2_vl, qwen2_5_vl or llava_onevision."),
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
def methods() -> None:
    """List the methods (presets) and policies."""
    import tokpress
    from tokpress.registry import get_preset

    table = Table(title="tokpress methods")
    for col in ("method", "outer policy", "inner policy"):
        table.add_column(col)
    for name in tokpress.preset_names():
        p = get_preset(name)
        table.add_row(name, p.outer or "—", p.inner or "—")
    console.print(table)


@app.command()
def models() -> None:
    """List the supported model families (``config.model_type``)."""
    import tokpress

    for name in tokpress.adapter_names():
        console.print(name)


if __name__ == "__main__":
    app()
