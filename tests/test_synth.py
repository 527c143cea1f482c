"""The procedural video QA generator: determinism, disjoint splits, right labels (hand-written solvers), export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tokpress.errors import ConfigError
from tokpress.eval.synth import solvers as synth_solvers
from tokpress.eval.synth import tasks as synth

N_PER_TASK = 30


@pytest.mark.parametrize("task", synth.TASKS)
def test_same_seed_gives_identical_samples(task: str) -> None:
    a, b = synth.make_sample(task, 7), synth.make_sample(task, 7)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert (a.question, a.options, a.answer, a.answer_word, a.video_id) == (
        b.question,
        b.options,
        b.answer,
        b.answer_word,
        b.video_id,
    )
    assert json.dumps(a.metadata) == json.dumps(b.metadata)
    assert a.frames.shape == (16, 112, 112, 3) and a.frames.dtype == np.uint8
    # the sample is one of the video's questions; other seeds and namespaces give other videos
    questions = synth.make_questions(task, 7)
    assert all(q.frames.tobytes() == a.frames.tobytes() for q in questions)
    assert (a.question, a.options) in [(q.question, q.options) for q in questions]
    assert synth.make_sample(task, 8).frames.tobytes() != a.frames.tobytes()
    assert synth.make_sample(task, 7, synth.SynthConfig(seed=1)).frames.tobytes() != a.frames.tobytes()


def test_splits_use_disjoint_seeds() -> None:
    seeds = {}
    for split in ("train", "val", "test"):
        samples = synth.make_split(split, 20)
        seeds[split] = {s.seed for s in samples}
        assert len(seeds[split]) == 20
        assert all(
            synth.split_of_seed(seed) == split and s.metadata["split"] == split
            for seed, s in zip(seeds[split], samples)
        )
        full = synth.split_seeds(split, synth.SPLIT_SEED_SPAN)
        assert all(seed in full for seed in seeds[split])
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"] or seeds["val"] & seeds["test"])
    ranges = [synth.split_seeds(s, synth.SPLIT_SEED_SPAN) for s in ("train", "val", "test")]
    assert all(a.stop <= b.start for a, b in zip(ranges, ranges[1:]))
    # offset continues a split: chunks of a stream equal the whole
    whole = synth.make_split("train", 10)
    tail = synth.make_split("train", 5, offset=5)
    assert [(s.video_id, s.question) for s in whole[5:]] == [(s.video_id, s.question) for s in tail]
    with pytest.raises(ConfigError):
        synth.make_split("dev", 3)


@pytest.mark.parametrize("distractors", [0, 3])
@pytest.mark.parametrize("task", synth.TASKS)
def test_options_and_solver_recovers_every_answer(task: str, distractors: int) -> None:
    config = synth.SynthConfig(distractors=distractors)
    samples = synth.make_split("test", N_PER_TASK, config, tasks=[task], all_questions=True)
    vocabulary = set(synth.question_vocabulary())
    wrong = []
    for s in samples:
        assert s.task == task and len(s.options) == 4 and len(set(s.options)) == 4
        assert set(s.options) <= vocabulary
        assert s.options[s.answer] == s.answer_word and s.answer_letter == "ABCD"[s.answer]
        assert len(s.metadata["distractors"]) == distractors
        json.dumps(s.metadata)
        if synth_solvers.solve(task, s.frames, s.question, s.options) != s.answer:
            wrong.append((s.video_id, s.question, s.answer_word))
    assert not wrong, f"solver disagrees with the label on {len(wrong)}/{len(samples)}: {wrong[:3]}"


def test_answers_are_balanced() -> None:
    samples = synth.make_split("val", 400, all_questions=True)
    letters = Counter(s.answer for s in samples)
    assert all(0.18 < letters[i] / len(samples) < 0.32 for i in range(4)), letters
    for task in synth.TASKS:
        words = Counter(s.answer_word for s in samples if s.task == task)
        total = sum(words.values())
        assert len(words) >= 4 and max(words.values()) / total < 0.4, (task, words)
        positions = Counter(s.answer for s in samples if s.task == task)
        assert all(positions[i] / total > 0.1 for i in range(4)), (task, positions)


@pytest.mark.parametrize("needle_frames", [2, 1])
def test_needle_shows_in_one_or_two_frames(needle_frames: int) -> None:
    config = synth.SynthConfig(needle_frames=needle_frames, distractors=3)
    for seed in range(N_PER_TASK):
        s = synth.make_sample("needle", seed, config)
        shown = np.nonzero(synth_solvers.moving_mask(s.frames).any(axis=(1, 2)))[0]
        assert len(shown) == needle_frames and shown.tolist() == s.metadata["frames"]
        assert 0 < shown[0] and shown[-1] < config.frames - 1 and shown[0] % 2 == 0


@pytest.mark.parametrize("task", synth.TASKS)
def test_events_align_with_token_cells_and_frame_pairs(task: str) -> None:
    config = synth.SynthConfig(noise=0.0, distractors=3)
    margin = config.cell // 14
    for seed in range(10):
        frames = synth.make_sample(task, seed, config).frames.astype(np.int16)
        changed = np.abs(np.diff(frames, axis=0)).sum(-1) > 0  # [T-1, H, W]: frame t+1 differs from frame t
        inside_patch = changed[0::2]  # 0->1, 2->3, ...: steps inside one 2-frame temporal patch
        assert not inside_patch.any(), f"{task}: something changes inside a 2-frame temporal patch"
        ys, xs = np.nonzero(changed.any(axis=0))
        assert len(ys) > 0
        for coord in (ys, xs):
            assert ((coord % config.cell >= margin) & (coord % config.cell < config.cell - margin)).all()


def test_export_writes_videos_and_annotations_that_reload(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    samples = synth.make_split("test", 10, all_questions=True)
    path = synth.export_split(samples, tmp_path)
    assert path == tmp_path / synth.ANNOTATION_FILE
    records = synth.load_annotations(tmp_path)
    assert len(records) == len(samples) and records == synth.load_annotations(path)
    info = json.loads((tmp_path / synth.INFO_FILE).read_text())
    assert info["num_videos"] == 10 and info["num_questions"] == len(samples)
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 10
    decoded: dict[str, np.ndarray] = {}
    for record, s in zip(records, samples):
        assert record["question"] == s.question and record["candidates"] == s.options
        assert record["options"] == [f"{letter}. {word}" for letter, word in zip("ABCD", s.options)]
        assert record["answer"] == s.answer_letter and record["answer_text"] == s.answer_word
        assert record["task"] == s.task and record["split"] == "test" and record["duration"] == 8.0
        video = tmp_path / record["video"]
        if record["video"] not in decoded:
            with av.open(str(video)) as container:
                decoded[record["video"]] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        frames = decoded[record["video"]]
        assert frames.shape == s.frames.shape
        # the labels survive encoding: the solver still reads them off the decoded video
        assert synth_solvers.solve(record["task"], frames, record["question"], record["candidates"]) == s.answer


def test_vocabulary_and_validation() -> None:
    words = synth.question_vocabulary()
    assert len(words) == len(set(words)) and all(" " not in w for w in words)
    for shape in synth.SHAPES:
        assert synth_solvers.classify_shape(synth.shape_mask(shape, 28)) == shape
    for bad in (dict(frames=7), dict(frames=4), dict(size=100), dict(cell=56), dict(needle_frames=3), dict(noise=-1)):
        with pytest.raises(ConfigError):
            synth.SynthConfig(**bad)
    with pytest.raises(ConfigError):
        synth.make_sample("nope", 0)
    with pytest.raises(ConfigError):
        synth.make_sample("needle", -1)
