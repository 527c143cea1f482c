"""Export of synth samples as a local video-QA dataset, and the reader of its annotations.

:func:`export_split` writes the samples of :mod:`tokpress.eval.synth.tasks`; :func:`load_annotations` reads the
records back (``tokpress eval`` reads such a folder). Both keep their documented path in
:mod:`tokpress.eval.synth.tasks` too.

**Export layout** (:func:`export_split`), readable by a generic local-dataset loader as Video-MME / MVBench are::

    out_dir/
      videos/<video_id>.mp4       H.264 (yuv420p), ``fps`` frames per second (default 2: qwen-vl-utils' default
                                  sampling rate, so the default loader sees exactly the T frames)
      annotations.jsonl           one JSON object per question, fields below
      info.json                   config, tasks, vocabulary, counts

    {"video": "videos/<video_id>.mp4", "video_id", "videoID" (Video-MME), "question_id", "task", "task_type",
     "question", "options": ["A. red", "B. blue", ...] (Video-MME), "candidates": ["red", "blue", ...] (MVBench),
     "answer": "A" (letter), "answer_text": "red", "answer_index": 0, "num_frames", "fps", "duration",
     "split", "seed", "metadata": {...ground truth of the scene...}}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokpress.errors import InputError
from tokpress.eval.synth.tasks import ANNOTATION_FILE, INFO_FILE, LETTERS, SYNTH_FPS, Sample, question_vocabulary
from tokpress.eval.video import write_video

logger = logging.getLogger(__name__)


def export_split(
    samples: Sequence[Sample],
    out_dir: str | Path,
    *,
    fps: float = SYNTH_FPS,
    codec: str | None = None,
    crf: int = 10,
) -> Path:
    """Write ``samples`` as mp4 videos plus ``annotations.jsonl`` and ``info.json`` (layout in the module doc).

    Samples that share a video (same ``video_id``) share one file. Returns the annotation file's path.

    Args:
        samples: from :func:`make_split`, :func:`make_questions` or :func:`make_sample`.
        out_dir: created if missing; existing files of the same names are overwritten.
        fps: frame rate written into the files (default 2, the default sampling rate of qwen-vl-utils).
        codec: an FFmpeg encoder name; default the first available of libx264, h264, libopenh264, mpeg4.
        crf: x264 quality (lower is closer to the frames; 10 keeps colours and edges for the solvers).
    """
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    written: dict[str, np.ndarray] = {}
    per_video: dict[str, int] = {}
    codecs: set[str] = set()
    records = []
    for s in samples:
        rel = f"videos/{s.video_id}.mp4"
        if s.video_id not in written:
            codecs.add(write_video(s.frames, out / rel, fps, codec=codec, crf=crf))
            written[s.video_id] = s.frames
        elif written[s.video_id] is not s.frames and not np.array_equal(written[s.video_id], s.frames):
            raise InputError(f"two samples named {s.video_id} have different frames (mixed configs?); export apart")
        k = per_video[s.video_id] = per_video.get(s.video_id, -1) + 1
        records.append(
            {
                "video": rel,
                "video_id": s.video_id,
                "videoID": s.video_id,
                "question_id": f"{s.video_id}_q{k}",
                "task": s.task,
                "task_type": s.task,
                "question": s.question,
                "options": [f"{LETTERS[i]}. {w}" for i, w in enumerate(s.options)],
                "candidates": list(s.options),
                "answer": s.answer_letter,
                "answer_text": s.answer_word,
                "answer_index": s.answer,
                "num_frames": int(s.frames.shape[0]),
                "fps": fps,
                "duration": s.frames.shape[0] / fps,
                "split": s.metadata.get("split"),
                "seed": s.seed,
                "metadata": s.metadata,
            }
        )
    path = out / ANNOTATION_FILE
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    tasks = sorted({r["task"] for r in records})
    info = {
        "format": "tokpress-synth-v1",
        "annotations": ANNOTATION_FILE,
        "num_videos": len(written),
        "num_questions": len(records),
        "questions_per_task": {t: sum(r["task"] == t for r in records) for t in tasks},
        "codecs": sorted(codecs),
        "fps": fps,
        "vocabulary": question_vocabulary(),
        "frame_shapes": sorted({tuple(int(d) for d in f.shape) for f in written.values()}),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    logger.info("exported %d questions on %d videos to %s", len(records), len(written), out)
    return path


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Records of an exported ``annotations.jsonl`` (or of the directory holding one); ``video`` is relative to it."""
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATION_FILE
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not a JSON object ({e.msg}); one JSON object per line") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records
