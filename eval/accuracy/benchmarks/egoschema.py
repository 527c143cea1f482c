"""EgoSchema (Mangalam et al., NeurIPS 2023 D&B), the 500-question subset with public answers.

Layout of ``--data DIR``, either the Hugging Face release ``lmms-lab/egoschema``::

    DIR/Subset/test-00000-of-00001.parquet   question_idx, question, video_idx, option ["A. ..", ..], answer
    DIR/videos/<video_idx>.mp4               (videos_chunked_*.zip)

or the original release (github.com/egoschema/EgoSchema)::

    DIR/questions.json        [{q_uid, question, "option 0" .. "option 4"}, ...]
    DIR/subset_answers.json   {q_uid: answer index}   (questions without an answer are skipped)
    DIR/videos/<q_uid>.mp4

Prompt and extraction: lmms-eval 0.7.3's ``egoschema_subset`` (options one per line, lettered ``"A. "``). One
category (``egoschema``). Deviation: the content fallback of the extraction compares the option texts without
their ``"A. "`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokpress.errors import InputError
from tokpress.eval.accuracy.benchmarks.common import (
    find_file,
    first_parquet,
    get,
    letter_index,
    lettered,
    read_json,
    read_parquet,
    split_letter,
)
from tokpress.eval.accuracy.benchmarks.extract import extract_egoschema
from tokpress.eval.accuracy.data import EvalSample

SOURCE = (
    "lmms-lab/egoschema (huggingface-cli download lmms-lab/egoschema --repo-type dataset --local-dir DIR, then unzip "
    "its video zips in DIR), or questions.json + subset_answers.json of github.com/egoschema/EgoSchema"
)
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."  # egoschema_subset
MAX_NEW_TOKENS = 16


def prompt(question: str, options: list[str]) -> str:
    """lmms-eval's ``egoschema_doc_to_text``: the question, then each lettered option on its own line."""
    return question + "".join("\n" + o for o in lettered(options)) + POST_PROMPT


def _rows(root: Path) -> list[tuple[str, str, list[str], Any, str]]:
    """``(id, question, options, answer, video stem)`` per question of whichever release is present."""
    if (root / "Subset").is_dir() or not (root / "questions.json").exists():
        table = first_parquet(root / "Subset", "test-00000-of-00001.parquet", SOURCE)
        out = []
        for i, rec in enumerate(read_parquet(table, SOURCE)):
            where = f"{table}: row {i}"
            options = [split_letter(str(o))[1] for o in get(rec, "option", where)]
            vid = str(get(rec, "video_idx", where))
            qid = str(rec.get("question_idx", vid))
            out.append((qid, str(get(rec, "question", where)), options, get(rec, "answer", where), vid))
        return out
    questions = read_json(root / "questions.json", SOURCE)
    answers = read_json(root / "subset_answers.json", SOURCE)
    if not isinstance(questions, list) or not isinstance(answers, dict):
        raise InputError(f"{root}: questions.json must be a list and subset_answers.json an object")
    out = []
    for i, rec in enumerate(questions):
        uid = str(get(rec, "q_uid", f"{root / 'questions.json'}: item {i}"))
        if uid in answers:
            options = [str(rec[f"option {k}"]) for k in range(5) if rec.get(f"option {k}") is not None]
            out.append((uid, str(rec.get("question", "")), options, answers[uid], uid))
    return out


def load(root: Path, n: int | None = None, subtitles: bool = False, frames: int | None = None) -> list[EvalSample]:
    """The first ``n`` answered questions (file order)."""
    rows = _rows(root)
    out = []
    for qid, question, options, answer, vid in rows[:n] if n else rows:
        try:
            index = int(str(answer).strip())
        except ValueError:
            index = -1
        if len(options) < 2 or not 0 <= index < len(options):
            raise InputError(f"{root}: question {qid}: answer {answer!r} is not an index of its options")
        stem = root / "videos" / vid
        out.append(
            EvalSample(
                sample_id=qid,
                task="egoschema",
                question=question,
                options=options,
                answer=index,
                video=str(find_file([stem.parent / f"{vid}.mp4", stem.parent / f"{vid}.MP4"], SOURCE)),
                prompt=prompt(question, options),
                extract="egoschema",
                max_frames=32,
            )
        )
    return out


def extract(text: str, options: list[str]) -> int:
    """lmms-eval's EgoSchema extraction; -1 when nothing is found (lmms-eval: a random letter)."""
    return letter_index(extract_egoschema(text, options), len(options))
