"""LongVideoBench (Wu et al., NeurIPS 2024 D&B) validation split from its Hugging Face release
``longvideobench/LongVideoBench``.

Layout of ``--data DIR`` (the dataset snapshot, ``videos.tar.part.*`` and ``subtitles.tar`` extracted in place)::

    DIR/lvb_val.json        [{id, video_path, question, candidates (or option0..option4, "N/A" when unused),
                              correct_choice (index), question_category, duration_group, subtitle_path, ...}]
    DIR/videos/<video_path>
    DIR/subtitles/<subtitle_path>   (not used: this is lmms-eval's video task ``longvideobench_val_v``)

Prompt and extraction: lmms-eval 0.7.3's ``longvideobench_val_v``. Category: ``question_category``; facet:
``duration_group`` (seconds: 15, 60, 600, 3600).
"""

from __future__ import annotations

from pathlib import Path

from tokpress.errors import InputError
from tokpress.eval.accuracy.benchmarks.common import get, letter_index, lettered, need, read_json
from tokpress.eval.accuracy.benchmarks.extract import extract_longvideobench
from tokpress.eval.accuracy.data import EvalSample

SOURCE = (
    "longvideobench/LongVideoBench (huggingface-cli download longvideobench/LongVideoBench --repo-type dataset "
    "--local-dir DIR, then extract the videos tar parts into DIR/videos)"
)
POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"  # longvideobench_val_v.yaml
MAX_NEW_TOKENS = 32


def prompt(question: str, options: list[str]) -> str:
    """lmms-eval's ``longvideobench_doc_to_text`` without interleaved subtitles (empty pre-prompt)."""
    return question + "\n" + "\n".join(lettered(options)) + "\n" + POST_PROMPT


def _options(rec: dict, where: str) -> list[str]:
    if rec.get("candidates") is not None:
        return [str(c) for c in rec["candidates"]]
    options = [str(rec.get(f"option{i}")) for i in range(5) if rec.get(f"option{i}") not in (None, "N/A")]
    if not options:
        raise InputError(f"{where}: no 'candidates' (or option0..option4); is this lvb_val.json?")
    return options


def load(root: Path, n: int | None = None, subtitles: bool = False, frames: int | None = None) -> list[EvalSample]:
    """The first ``n`` questions of ``lvb_val.json`` (file order)."""
    path = root / "lvb_val.json"
    items = read_json(path, SOURCE)
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of questions; is this LongVideoBench's lvb_val.json?")
    videos = need(root / "videos", SOURCE)
    out = []
    for i, rec in enumerate(items[:n] if n else items):
        where = f"{path}: item {i}"
        options = _options(rec, where)
        answer = get(rec, "correct_choice", where)
        if not isinstance(answer, int) or not 0 <= answer < len(options):
            raise InputError(f"{where}: correct_choice {answer!r} is not an index of its {len(options)} options")
        question = str(get(rec, "question", where))
        out.append(
            EvalSample(
                sample_id=str(rec.get("id") or f"lvb_{i}"),
                task=str(rec.get("question_category") or "untagged"),
                question=question,
                options=options,
                answer=answer,
                video=str(need(videos / str(get(rec, "video_path", where)), SOURCE)),
                prompt=prompt(question, options),
                extract="longvideobench",
                groups={"duration_group": str(rec.get("duration_group", "unknown"))},
                max_frames=32,
            )
        )
    return out


def extract(text: str, options: list[str]) -> int:
    """lmms-eval's LongVideoBench extraction; -1 when no letter is found (lmms-eval: a random letter)."""
    return letter_index(extract_longvideobench(text), len(options))
