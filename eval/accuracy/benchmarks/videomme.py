"""Video-MME (Fu et al., CVPR 2025) from its Hugging Face release ``lmms-lab/Video-MME``.

Layout of ``--data DIR`` (the dataset snapshot, zips extracted in place)::

    DIR/videomme/test-00000-of-00001.parquet   video_id, duration, domain, sub_category, videoID, question_id,
                                               task_type, question, options ["A. ..", ..], answer ("A".."D")
    DIR/data/<videoID>.mp4                     (videos_chunked_*.zip; .MP4 / .mkv accepted as lmms-eval does)
    DIR/subtitle/<videoID>.srt                 (subtitle.zip; only with --subtitles)

Prompt and answer extraction are lmms-eval 0.7.3's ``videomme`` task (``videomme.yaml``, default model kwargs) and,
with ``subtitles``, its ``videomme_w_subtitle`` (subtitles shown at the 32 uniformly sampled frames of
``frame_num``, or at ``frames`` when given). Category: ``task_type``; facet: ``duration`` (short / medium / long).
Deviation: a subtitle line without lmms-eval's ``<font ...>`` wrapper is kept as plain text (lmms-eval drops it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tokpress.errors import InputError
from tokpress.eval.accuracy.benchmarks.common import (
    find_file,
    first_parquet,
    get,
    letter_index,
    read_parquet,
    split_letter,
)
from tokpress.eval.accuracy.benchmarks.extract import extract_mcq_letter
from tokpress.eval.accuracy.data import LETTERS, EvalSample

SOURCE = (
    "lmms-lab/Video-MME (huggingface-cli download lmms-lab/Video-MME --repo-type dataset --local-dir DIR, then "
    "unzip videos_chunked_*.zip and subtitle.zip in DIR)"
)
PARQUET = "test-00000-of-00001.parquet"
# lmms-eval 0.7.3 tasks/videomme/utils.py (option_prompt) and videomme.yaml (default post_prompt)
INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
# lmms-eval 0.7.3 videomme_doc_to_text_subtitle
SUBTITLE_HEAD = "This video's subtitles are listed below: \n"
SUBTITLE_POST = "The best answer is:"
NO_SUBTITLES = "No subtitles available"
SUBTITLE_FRAMES = 32  # lmms-eval's frame_num of videomme_w_subtitle
MAX_NEW_TOKENS = 16
_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')


def prompt(question: str, options: list[str], subtitles: str | None = None) -> str:
    """The user turn after the video; ``options`` as the release writes them (``"A. .."``)."""
    body = question + "\n" + "\n".join(options)
    if subtitles is None:
        return INSTRUCTION + "\n" + body + "\n" + POST_PROMPT
    return SUBTITLE_HEAD + subtitles + "\n" + INSTRUCTION + "\n" + body + "\n" + SUBTITLE_POST


def _seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.strip().split(":")
    secs, millis = rest.split(",")
    return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def read_srt(path: Path) -> list[tuple[float, float, str]]:
    """``(start s, end s, text)`` of every block of an .srt file (the ``<font>`` wrapper removed)."""
    out = []
    for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 3 or " --> " not in lines[1]:
            continue
        start, end = (_seconds(t) for t in lines[1].split(" --> "))
        text = " ".join(lines[2:])
        found = _FONT.findall(text)
        out.append((start, end, found[0] if found else text.strip()))
    return out


def _probe(video: Path) -> tuple[int, float]:
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        total = int(stream.frames or 0) or sum(1 for p in container.demux(stream) if p.size)
        return total, float(stream.average_rate or stream.guessed_rate or 0.0)


def subtitle_text(video: Path, srt: Path, frames: int) -> str:
    """The subtitles shown at ``frames`` uniformly sampled frames of ``video`` (lmms-eval's selection)."""
    if not srt.is_file():
        return NO_SUBTITLES
    total, fps = _probe(video)
    picked = np.linspace(0, max(total - 1, 0), frames, dtype=int)
    lines = []
    for start, end, text in read_srt(srt):
        first, stop = int(start * fps), int(end * fps)
        if np.any((picked >= first) & (picked < stop)):
            lines.append(text)
    return "\n".join(lines)


def load(root: Path, n: int | None = None, subtitles: bool = False, frames: int | None = None) -> list[EvalSample]:
    """The first ``n`` questions of the release in ``root`` (file order)."""
    table = first_parquet(root / "videomme", PARQUET, SOURCE)
    rows = read_parquet(table, SOURCE)
    out = []
    for i, rec in enumerate(rows[:n] if n else rows):
        where = f"{table}: row {i}"
        raw = [str(o) for o in get(rec, "options", where)]
        options = [split_letter(o)[1] for o in raw]
        answer = str(get(rec, "answer", where)).strip().upper()
        if len(options) < 2 or answer not in LETTERS[: len(options)]:
            raise InputError(f"{where}: answer {answer!r} is not the letter of one of its {len(options)} options")
        vid = str(get(rec, "videoID", where))
        stem = root / "data" / vid
        video = find_file([stem.parent / f"{stem.name}{s}" for s in (".mp4", ".MP4", ".mkv")], SOURCE)
        subs = None
        if subtitles:
            subs = subtitle_text(video, root / "subtitle" / f"{vid}.srt", frames or SUBTITLE_FRAMES)
        out.append(
            EvalSample(
                sample_id=str(rec.get("question_id") or f"{vid}_{i}"),
                task=str(get(rec, "task_type", where)),
                question=str(get(rec, "question", where)),
                options=options,
                answer=LETTERS.index(answer),
                video=str(video),
                prompt=prompt(str(rec["question"]), raw, subs),
                extract="videomme",
                groups={"duration": str(rec.get("duration", "unknown"))},
                max_frames=SUBTITLE_FRAMES,
            )
        )
    return out


def extract(text: str, options: list[str]) -> int:
    """lmms-eval's Video-MME extraction (``extract_mcq_answer`` over A-D); -1 when no letter is found."""
    return letter_index(extract_mcq_letter(text, "ABCD"), len(options))
