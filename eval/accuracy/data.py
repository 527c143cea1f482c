"""Benchmark samples for ``tokpress eval``: the synth split in memory or a local exported dataset, and the prompt
and answer formats the model is scored with."""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokpress.errors import InputError
from tokpress.eval.synth.export import load_annotations
from tokpress.eval.synth.tasks import SYNTH_FPS, SynthConfig, make_split

logger = logging.getLogger("tokpress")

WORD_PROMPT = "{question}\nOptions: {options}.\nAnswer with one of the options, one word only."
LETTER_PROMPT = "{question}\n{lettered}\nAnswer with the option's letter from the given choices directly."
ANSWER_FORMATS = ("word", "letter")
LETTERS = string.ascii_uppercase  # option letters A, B, C, ...


@dataclass
class EvalSample:
    """One multiple-choice question about one video (frames in memory, or a file decoded when it is scored)."""

    sample_id: str
    task: str
    question: str
    options: list[str]
    answer: int  # index into ``options``
    frames: np.ndarray | None = None  # [T, H, W, 3] uint8
    video: str | None = None  # a video file, when ``frames`` is None
    num_frames: int | None = None  # frames the annotation says the video holds
    fps: float | None = None  # frame rate of ``frames`` (passed to the processor as video metadata)
    prompt: str | None = None  # the whole user text after the video (real benchmarks: their official prompt)
    extract: str | None = None  # real benchmarks: whose extraction reads a generated answer (else match_answer)
    groups: dict[str, str] | None = None  # facets reported besides ``task`` (e.g. {"duration": "short"})
    max_frames: int | None = None  # no frame count given: at most this many, uniform (None: fps 2)
    clip: tuple[float, float] | None = None  # (start, end) seconds of a frame folder ``video`` to use


def synth_samples(n: int, config: SynthConfig | None = None) -> list[EvalSample]:
    """The first ``n`` videos of the synth test split, one question each; ids as :func:`export_split` names them."""
    out = []
    for s in make_split("test", n, config):
        out.append(
            EvalSample(
                sample_id=f"{s.video_id}_q0",
                task=s.task,
                question=s.question,
                options=list(s.options),
                answer=s.answer,
                frames=s.frames,
                fps=SYNTH_FPS,
            )
        )
    return out


def strip_letter(option: str) -> str:
    """``"A. red"`` / ``"(A) red"`` -> ``"red"``; an option without a letter is returned stripped."""
    match = re.match(r"^\s*\(?[A-Z][.):]\s*(.*)$", option)
    return match.group(1).strip() if match else option.strip()


#: the task family of local samples whose annotation names none (``"all"`` is the pooled summary's)
UNTAGGED = "untagged"


def local_samples(path: str | Path, n: int | None = None) -> list[EvalSample]:
    """Samples of a local dataset folder (``annotations.jsonl`` + videos), first ``n`` in file order.

    Fields read: ``video`` (relative to the folder), ``question``, ``candidates`` (option words; else ``options``
    with their ``"A. "`` prefixes removed), ``answer_index`` (else ``answer`` as a letter or as the option text),
    ``task`` (else ``task_type``), ``question_id``, ``num_frames``.
    """
    root = Path(path)
    if not (root / "annotations.jsonl").is_file():
        raise InputError(f"{root}: no annotations.jsonl; pass --benchmark synth or a folder written by export_split")
    records = load_annotations(root)
    out = []
    for i, rec in enumerate(records[:n] if n else records):
        options = [str(o) for o in rec.get("candidates") or [strip_letter(o) for o in rec.get("options", [])]]
        if len(options) < 2 or "video" not in rec or "question" not in rec:
            raise InputError(f"{root}: annotation {i} needs 'video', 'question' and two or more options")
        answer = rec.get("answer_index")
        if answer is None:
            given = str(rec.get("answer", "")).strip()
            if len(given) == 1 and given.upper() in LETTERS[: len(options)]:
                answer = LETTERS.index(given.upper())
            elif given in options:
                answer = options.index(given)
            else:
                raise InputError(f"{root}: annotation {i}: answer {given!r} is neither a letter nor an option")
        video = Path(rec["video"])
        task = str(rec.get("task") or rec.get("task_type") or UNTAGGED)
        if task == "all":
            raise InputError(f"{root}: annotation {i}: task 'all' is reserved for the pooled summary; rename it")
        out.append(
            EvalSample(
                sample_id=str(rec.get("question_id") or f"{rec.get('video_id', video.stem)}_{i}"),
                task=task,
                question=str(rec["question"]),
                options=options,
                answer=int(answer),
                video=str(video if video.is_absolute() else root / video),
                num_frames=rec.get("num_frames"),
            )
        )
    return out


def format_prompt(
    question: str, options: Sequence[str], answer_format: str = "word", template: str | None = None
) -> str:
    """The text of the user turn after the video (see the module doc)."""
    if template is None:
        template = LETTER_PROMPT if answer_format == "letter" else WORD_PROMPT
    lettered = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return template.format(question=question, options=", ".join(options), lettered=lettered)


def answer_texts(options: Sequence[str], answer_format: str = "word") -> list[str]:
    """What the assistant says for each option: the word itself, or its letter."""
    if len(options) > len(LETTERS):
        raise InputError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    return [LETTERS[i] for i in range(len(options))] if answer_format == "letter" else list(options)


def chat_prompt(processor: Any, text: str) -> str:
    """The chat-template rendering of a user turn holding one video and ``text``, with the generation prompt."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def encode_answers(tokenizer: Any, texts: Sequence[str], append_eos: bool) -> list[list[int]]:
    """Token ids of each answer text (no special tokens added), plus the end-of-turn token when ``append_eos``."""
    eos = tokenizer.eos_token_id if append_eos else None
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
        if not ids:
            raise InputError(f"option {text!r} encodes to no tokens")
        out.append(ids)
    return out


def first_answer(text: str) -> str:
    """The answer a generated ``text`` gives: its first line up to the first sentence end, lower-cased, without
    punctuation or surrounding space (``"Red.\nThe square moves"`` -> ``"red"``). Two generations agree when these
    are equal, whatever they ramble on about after it."""
    first = re.split(r"[\n.!?]", text.strip(), maxsplit=1)[0]
    return re.sub(r"[^\w\s-]", "", first.lower()).strip()


def choice_of(sample: EvalSample, text: str, answer_format: str = "word") -> int:
    """The option a generated ``text`` gives for ``sample``: its benchmark's extraction (``sample.extract``),
    else :func:`match_answer`; -1 when none."""
    if sample.extract:
        from tokpress.eval.accuracy.benchmarks import extract_answer

        return extract_answer(sample.extract, text, sample.options)
    return match_answer(text, sample.options, answer_format)


def match_answer(text: str, options: Sequence[str], answer_format: str = "word") -> int:
    """Index of the option a generated ``text`` names, or -1.

    Letters: the first standalone letter A.. at the start (``"B"``, ``"(B)"``, ``"B. red"``). Words: an exact match
    (case- and punctuation-insensitive), else the option that occurs earliest in the text (longest on a tie).
    """
    clean = text.strip()
    if answer_format == "letter":
        match = re.match(r"^\(?([A-Z])(?:$|[\s.):,])", clean)
        index = LETTERS.find(match.group(1)) if match else -1
        return index if 0 <= index < len(options) else -1
    norm = re.sub(r"[^\w\s-]", "", clean.lower()).strip()
    words = [o.lower() for o in options]
    if norm in words:
        return words.index(norm)
    hits = [(m.start(), -len(w), i) for i, w in enumerate(words) if (m := re.search(rf"\b{re.escape(w)}\b", norm))]
    return min(hits)[2] if hits else -1
