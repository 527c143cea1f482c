"""MVBench (Li et al., CVPR 2024) from its Hugging Face release ``OpenGVLab/MVBench``.

Layout of ``--data DIR`` (the dataset snapshot, the video zips extracted in place — lmms-eval downloads the
``video`` revision, whose clips are already cut to the question's segment)::

    DIR/json/<task>.json          per task: [{video, question, candidates, answer (the candidate's text)}, ...]
    DIR/<folder>/<video>          the task's folder (:data:`TASK_FOLDERS`, lmms-eval 0.7.3's ``DATA_LIST``);
                                  ``DIR/video/<folder>/`` and ``DIR/data0613/<folder>/`` are searched too

Tasks missing from ``json/`` are skipped with a warning (a partial download). With ``n``, tasks are taken in turn
(the first question of every task, then the second, ...). Prompt and extraction: lmms-eval's ``mvbench`` task.
A video entry that is a folder of frames (the original ``tvqa/frames_fps3_hq``) is read as images at 3 fps, cut to
the item's ``start``/``end`` seconds; ``start``/``end`` of a video *file* are not applied (the ``video``
revision's files are the cut segments; a full-length original video would be scored whole).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tokpress.errors import InputError
from tokpress.eval.accuracy.benchmarks.common import get, letter_index, need, read_json
from tokpress.eval.accuracy.benchmarks.extract import extract_mvbench
from tokpress.eval.accuracy.data import LETTERS, EvalSample

logger = logging.getLogger("tokpress")

SOURCE = (
    "OpenGVLab/MVBench (huggingface-cli download OpenGVLab/MVBench --repo-type dataset --revision video "
    "--local-dir DIR, then unzip its video zips in DIR)"
)
# lmms-eval 0.7.3 tasks/mvbench/utils.py DATA_LIST, in the order of its mvbench.yaml group
TASK_FOLDERS = {
    "action_sequence": "star/Charades_segment",
    "moving_count": "clevrer/video_validation",
    "action_prediction": "star/Charades_segment",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "action_antonym": "ssv2_video_mp4",
    "action_count": "perception/videos",
    "scene_transition": "scene_qa/video",
    "object_shuffle": "perception/videos",
    "object_existence": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "unexpected_action": "FunQA_test/test",
    "moving_direction": "clevrer/video_validation",
    "state_change": "perception/videos",
    "object_interaction": "star/Charades_segment",
    "character_order": "perception/videos",
    "action_localization": "sta/sta_video_segment",
    "counterfactual_inference": "clevrer/video_validation",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "moving_attribute": "clevrer/video_validation",
    "egocentric_navigation": "vlnqa",
}
POST_PROMPT = "Only give the best option.\n"  # every mvbench_<task>.yaml
MAX_NEW_TOKENS = 16
FRAME_FPS = 3.0  # MVBench's TVQA frame folders


def prompt(question: str, options: list[str]) -> str:
    """lmms-eval's ``mvbench_doc_to_text``."""
    lines = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(options))
    return "Question:" + question + "\nOption:\n" + lines + POST_PROMPT


def _video(root: Path, folder: str, name: str) -> Path:
    for base in (root, root / "video", root / "data0613"):
        if (base / folder / name).exists():
            return base / folder / name
    return need(root / folder / name, SOURCE)


def _task_items(root: Path, task: str, path: Path) -> list[EvalSample]:
    items = read_json(path, SOURCE)
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a list of questions; is this MVBench's json/{task}.json?")
    out = []
    for i, rec in enumerate(items):
        where = f"{path}: item {i}"
        options = [str(c) for c in get(rec, "candidates", where)]
        answer = str(get(rec, "answer", where))
        if answer not in options:
            raise InputError(f"{where}: answer {answer!r} is not one of its candidates {options}")
        start, end = rec.get("start"), rec.get("end")
        clip = (float(start), float(end)) if start is not None and end is not None else None
        out.append(
            EvalSample(
                sample_id=f"{task}_{i}",
                task=task,
                question=str(get(rec, "question", where)),
                options=options,
                answer=options.index(answer),
                video=str(_video(root, TASK_FOLDERS[task], str(get(rec, "video", where)))),
                prompt=prompt(str(rec["question"]), options),
                extract="mvbench",
                max_frames=32,
                clip=clip,
            )
        )
    return out


def load(root: Path, n: int | None = None, subtitles: bool = False, frames: int | None = None) -> list[EvalSample]:
    """The questions of every task in ``root/json`` (tasks in turn when ``n`` is given)."""
    folder = need(root / "json", SOURCE)
    present = [t for t in TASK_FOLDERS if (folder / f"{t}.json").is_file()]
    if not present:
        raise InputError(
            f"{folder / 'action_sequence.json'} not found (no MVBench task file in {folder}): download {SOURCE}"
        )
    missing = [t for t in TASK_FOLDERS if t not in present]
    if missing:
        logger.warning("MVBench: %d of 20 tasks have no json file, skipped: %s", len(missing), ", ".join(missing))
    per_task = [_task_items(root, t, folder / f"{t}.json") for t in present]
    if not n:
        return [s for items in per_task for s in items]
    out: list[EvalSample] = []
    for i in range(max(map(len, per_task))):
        out += [items[i] for items in per_task if i < len(items)]
    return out[:n]


def extract(text: str, options: list[str]) -> int:
    """lmms-eval's MVBench extraction (``mcq_acc``); -1 when no letter is found."""
    return letter_index(extract_mvbench(text), len(options))
