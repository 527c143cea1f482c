"""Real video-QA benchmarks read from the folder of their official release (``tokpress eval --benchmark NAME
--data DIR``): one module per benchmark with ``load(root, n, subtitles, frames)``, its lmms-eval 0.7.3 prompt and
``extract(text, options)`` (the generated letter as lmms-eval extracts it, -1 when none).

Every sample carries its official prompt (``EvalSample.prompt``), the name of its extraction
(``EvalSample.extract``), its category as ``task`` and extra facets in ``groups`` (e.g. Video-MME's duration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokpress.eval.accuracy.benchmarks import egoschema, longvideobench, mvbench, videomme
from tokpress.eval.accuracy.data import EvalSample


@dataclass(frozen=True)
class Benchmark:
    """A real benchmark: where it comes from, how its samples load, how a generated answer is read."""

    name: str
    source: str
    load: Callable[..., list[EvalSample]]
    extract: Callable[[str, Sequence[str]], int]
    max_new_tokens: int  # lmms-eval's generation_kwargs


BENCHMARKS: dict[str, Benchmark] = {
    m.__name__.rsplit(".", 1)[-1]: Benchmark(
        m.__name__.rsplit(".", 1)[-1], m.SOURCE, m.load, m.extract, m.MAX_NEW_TOKENS
    )
    for m in (videomme, mvbench, longvideobench, egoschema)
}


def load_real(
    name: str, root: str | Path, n: int | None = None, *, subtitles: bool = False, frames: int | None = None
) -> list[EvalSample]:
    """The samples of benchmark ``name`` in ``root``, first ``n`` (every video is checked to exist).

    Raises:
        InputError: a file or folder of the release is missing or malformed (the message names it).
    """
    return BENCHMARKS[name].load(Path(root), n=n, subtitles=subtitles, frames=frames)


def extract_answer(name: str, text: str, options: Sequence[str]) -> int:
    """The option index a generated ``text`` names under benchmark ``name``'s extraction (-1: none)."""
    return BENCHMARKS[name].extract(text, list(options))
