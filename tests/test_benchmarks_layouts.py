"""The real benchmarks read from tiny folders in their official release layouts: parsing, official prompts,
categories, subtitles, frame folders, missing / malformed files, and one ``evaluate()`` end to end on the tiny
model that reports per-category, per-duration and both scorings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokpress.errors import ConfigError, InputError
from tokpress.eval.accuracy.benchmarks import load_real, videomme
from tokpress.eval.accuracy.benchmarks.common import load_frame_dir
from tokpress.eval.accuracy.config import EvalConfig
from tokpress.eval.video import write_video

try:
    import pyarrow  # noqa: F401

    HAVE_ARROW = True
except ImportError:
    HAVE_ARROW = False


def clip(path: Path, frames: int = 8, fps: float = 8.0) -> None:
    video = np.zeros((frames, 56, 56, 3), np.uint8)
    video[:, :, :, 0] = np.arange(frames, dtype=np.uint8)[:, None, None] * 30
    write_video(video, path, fps=fps)


def parquet(path: Path, rows: list[dict], monkeypatch, module) -> None:
    """Rows as a parquet file (pyarrow), else a placeholder whose reading is stubbed with ``rows``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if HAVE_ARROW:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_bytes(b"PAR1")
        monkeypatch.setattr(module, "read_parquet", lambda p, source: [dict(r) for r in rows])


VIDEOMME_ROWS = [
    dict(video_id="001", duration="short", domain="Knowledge", sub_category="Astronomy", videoID="vidA",
         question_id="001-1", task_type="Counting Problem", question="How many stars?",
         options=["A. 1", "B. 2", "C. 3", "D. 4"], answer="C"),
    dict(video_id="001", duration="short", domain="Knowledge", sub_category="Astronomy", videoID="vidA",
         question_id="001-2", task_type="OCR Problems", question="What is written?",
         options=["A. yes", "B. no", "C. maybe", "D. never"], answer="A"),
    dict(video_id="002", duration="long", domain="Sports Competition", sub_category="Football", videoID="vidB",
         question_id="002-1", task_type="Counting Problem", question="How many goals?",
         options=["A. 0", "B. 1", "C. 2", "D. 3"], answer="D"),
]  # fmt: skip


@pytest.fixture
def videomme_dir(tmp_path, monkeypatch):
    root = tmp_path / "Video-MME"
    parquet(root / "videomme" / "test-00000-of-00001.parquet", VIDEOMME_ROWS, monkeypatch, videomme)
    for vid in ("vidA", "vidB"):
        clip(root / "data" / f"{vid}.mp4")
    return root


def test_videomme_layout_and_prompt(videomme_dir):
    samples = load_real("videomme", videomme_dir)
    assert [s.sample_id for s in samples] == ["001-1", "001-2", "002-1"]
    first = samples[0]
    assert first.options == ["1", "2", "3", "4"] and first.answer == 2 and first.task == "Counting Problem"
    assert first.groups == {"duration": "short"} and samples[2].groups == {"duration": "long"}
    assert first.video == str(videomme_dir / "data" / "vidA.mp4")
    assert first.prompt == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\nHow many stars?\nA. 1\nB. 2\nC. 3\n"
        "D. 4\n\nAnswer with the option's letter from the given choices directly."
    )
    assert len(load_real("videomme", videomme_dir, n=2)) == 2


def test_videomme_subtitles_at_the_sampled_frames(videomme_dir):
    srt = videomme_dir / "subtitle" / "vidA.srt"
    srt.parent.mkdir()
    srt.write_text(
        '1\n00:00:00,000 --> 00:00:00,500\n<font color="white" size=".72c">hello there</font>\n\n'
        "2\n00:00:05,000 --> 00:00:06,000\nlong after the end\n",
        encoding="utf-8",
    )
    # 8 frames at 8 fps, 4 sampled: frames 0, 2, 4, 7; the first block spans frames [0, 4), the second none
    samples = load_real("videomme", videomme_dir, subtitles=True, frames=4)
    assert samples[0].prompt.startswith("This video's subtitles are listed below: \nhello there\nSelect the best")
    assert samples[0].prompt.endswith("D. 4\nThe best answer is:")
    assert "No subtitles available\n" in samples[2].prompt  # vidB has no .srt


def test_videomme_missing_and_malformed(tmp_path, videomme_dir, monkeypatch):
    with pytest.raises(InputError, match=r"videomme/test-00000-of-00001\.parquet not found: .*lmms-lab/Video-MME"):
        load_real("videomme", tmp_path / "empty")
    (videomme_dir / "data" / "vidB.mp4").unlink()
    with pytest.raises(InputError, match=r"data/vidB\.mp4 not found"):
        load_real("videomme", videomme_dir)
    bad = [dict(VIDEOMME_ROWS[0], answer="E")]
    parquet(tmp_path / "bad" / "videomme" / "test-00000-of-00001.parquet", bad, monkeypatch, videomme)
    with pytest.raises(InputError, match="answer 'E'"):
        load_real("videomme", tmp_path / "bad")


@pytest.mark.skipif(HAVE_ARROW, reason="pyarrow is installed")
def test_parquet_without_pyarrow_names_the_fix(tmp_path):
    path = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1")
    with pytest.raises(InputError, match="needs pyarrow: pip install pyarrow"):
        load_real("videomme", tmp_path)


def _mvbench(root: Path) -> Path:
    (root / "json").mkdir(parents=True)
    items = {
        "action_antonym": [
            {"video": "a.mp4", "question": "What happens?", "candidates": ["push", "pull", "none"], "answer": "pull"},
            {"video": "b.mp4", "question": "And now?", "candidates": ["push", "pull"], "answer": "push"},
        ],
        "object_existence": [
            {"video": "c.mp4", "question": "Is there a cube?", "candidates": ["yes", "no"], "answer": "no"},
        ],
    }
    for task, rows in items.items():
        (root / "json" / f"{task}.json").write_text(json.dumps(rows))
    clip(root / "ssv2_video_mp4" / "a.mp4")
    clip(root / "ssv2_video_mp4" / "b.mp4")
    clip(root / "video" / "clevrer" / "video_validation" / "c.mp4")  # the main branch's video/ prefix
    return root


def test_mvbench_layout_prompt_and_task_turns(tmp_path):
    root = _mvbench(tmp_path / "MVBench")
    samples = load_real("mvbench", root)
    assert [s.task for s in samples] == ["action_antonym", "action_antonym", "object_existence"]
    assert samples[0].answer == 1 and samples[0].options == ["push", "pull", "none"]
    assert samples[2].video == str(root / "video" / "clevrer" / "video_validation" / "c.mp4")
    assert (
        samples[0].prompt
        == "Question:What happens?\nOption:\n(A) push\n(B) pull\n(C) none\nOnly give the best option.\n"
    )
    assert [s.sample_id for s in load_real("mvbench", root, n=2)] == ["action_antonym_0", "object_existence_0"]


def test_mvbench_missing_and_malformed(tmp_path):
    with pytest.raises(InputError, match=r"json not found: .*OpenGVLab/MVBench"):
        load_real("mvbench", tmp_path)
    root = _mvbench(tmp_path / "m")
    (root / "ssv2_video_mp4" / "b.mp4").unlink()
    with pytest.raises(InputError, match=r"ssv2_video_mp4/b\.mp4 not found"):
        load_real("mvbench", root)
    (root / "json" / "action_antonym.json").write_text("[{")
    with pytest.raises(InputError, match=r"action_antonym\.json is not valid JSON"):
        load_real("mvbench", root)
    (root / "json" / "action_antonym.json").write_text(
        json.dumps([{"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "z"}])
    )
    with pytest.raises(InputError, match="answer 'z' is not one of its candidates"):
        load_real("mvbench", root)


def test_frame_folder_clip(tmp_path):
    from PIL import Image

    for i in range(9):  # 3 s at 3 fps
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(tmp_path / f"{i + 1:05d}.jpg", quality=100)
    frames, _ = load_frame_dir(tmp_path, 2, clip=(1.0, 2.0))  # frames 3..6 of the folder, then 2 of them: 3 and 6
    assert frames.shape == (2, 8, 8, 3)
    assert np.abs(frames[..., 0].astype(int).mean((1, 2)) - np.array([30, 60])).max() <= 2


def _lvb(root: Path) -> Path:
    rows = [
        {"id": "q0", "video_path": "v0.mp4", "question": "Who enters?", "candidates": ["a man", "a dog", "nobody"],
         "correct_choice": 1, "question_category": "E2O", "duration_group": 15, "subtitle_path": "v0_en.json"},
        {"id": "q1", "video_path": "v0.mp4", "question": "What then?", "option0": "sits", "option1": "runs",
         "option2": "N/A", "option3": "N/A", "option4": "N/A", "correct_choice": 0, "question_category": "T3O",
         "duration_group": 60},
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "lvb_val.json").write_text(json.dumps(rows))
    clip(root / "videos" / "v0.mp4")
    return root


def test_longvideobench_layout_and_prompt(tmp_path):
    first, second = load_real("longvideobench", _lvb(tmp_path / "LVB"))
    assert first.answer == 1 and first.task == "E2O" and first.groups == {"duration_group": "15"}
    post = "Answer with the option's letter from the given choices directly.\n"
    assert first.prompt == "Who enters?\nA. a man\nB. a dog\nC. nobody\n" + post
    assert second.options == ["sits", "runs"] and second.task == "T3O"
    with pytest.raises(InputError, match=r"lvb_val\.json not found"):
        load_real("longvideobench", tmp_path)
    rows = json.loads((tmp_path / "LVB" / "lvb_val.json").read_text())
    rows[0]["correct_choice"] = 3
    (tmp_path / "LVB" / "lvb_val.json").write_text(json.dumps(rows))
    with pytest.raises(InputError, match="correct_choice 3"):
        load_real("longvideobench", tmp_path / "LVB")


def test_egoschema_original_release_and_prompt(tmp_path):
    root = tmp_path / "ego"
    root.mkdir()
    q = {"q_uid": "u1", "question": "What does c do?", **{f"option {k}": f"thing {k}" for k in range(5)}}
    (root / "questions.json").write_text(json.dumps([q, dict(q, q_uid="u2")]))
    with pytest.raises(InputError, match=r"subset_answers\.json not found"):
        load_real("egoschema", root)
    (root / "subset_answers.json").write_text(json.dumps({"u1": 4}))  # u2 has no public answer: skipped
    clip(root / "videos" / "u1.mp4")
    (sample,) = load_real("egoschema", root)
    assert sample.answer == 4 and sample.task == "egoschema" and sample.options[0] == "thing 0"
    assert sample.prompt == (
        "What does c do?\nA. thing 0\nB. thing 1\nC. thing 2\nD. thing 3\nE. thing 4\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_egoschema_hf_subset(tmp_path, monkeypatch):
    from tokpress.eval.accuracy.benchmarks import egoschema

    row = dict(question_idx="0", question="Why?", video_idx="vid0", option=[f"{c}. opt {c}" for c in "ABCDE"],
               answer="2")  # fmt: skip
    parquet(tmp_path / "Subset" / "test-00000-of-00001.parquet", [row], monkeypatch, egoschema)
    clip(tmp_path / "videos" / "vid0.mp4")
    (sample,) = load_real("egoschema", tmp_path)
    assert sample.answer == 2 and sample.options == [f"opt {c}" for c in "ABCDE"]
    assert "\nC. opt C\n" in sample.prompt


def test_config_names_data_and_refuses_words(tmp_path):
    with pytest.raises(ConfigError, match="needs --data") as err:
        EvalConfig(benchmark="videomme", model="tiny").validate()
    assert err.value.field == "data"
    with pytest.raises(ConfigError) as err:
        EvalConfig(benchmark="mvbench", data=str(tmp_path), answer_format="word", model="tiny").validate()
    assert err.value.field == "answer_format"
    config = EvalConfig(benchmark="longvideobench", data=str(tmp_path), model="tiny")
    config.validate()
    assert (config.answer_format, config.scoring, config.max_new_tokens) == ("letter", "both", 32)
    with pytest.raises(ConfigError, match="videomme only"):
        EvalConfig(benchmark="mvbench", data=str(tmp_path), subtitles=True, model="tiny").validate()


def test_evaluate_videomme_end_to_end(videomme_dir, tmp_path):
    from tokpress.eval.accuracy.runner import evaluate

    config = EvalConfig(model="tiny", benchmark="videomme", data=str(videomme_dir), methods=("uniform",),
                        ratios=(0.5,), frames=4, n_boot=50, max_new_tokens=3)  # fmt: skip
    records, paths = evaluate(config, tmp_path / "out", command="test")
    samples = [r for r in records if r["kind"] == "sample"]
    assert len(samples) == 6  # 3 questions x (none + uniform@0.5)
    for r in samples:
        assert isinstance(r["generated"], str) and -1 <= r["chosen_generate"] < 4 and len(r["option_tokens"]) == 4
        assert r["correct_generate"] == (r["chosen_generate"] == r["answer"])
    summary = {(r["method"], r["task"]): r for r in records if r["kind"] == "summary"}
    counting = summary[("uniform", "Counting Problem")]
    assert counting["n"] == 2 and summary[("uniform", "duration=short")]["n"] == 2
    assert summary[("uniform", "duration=long")]["facet"] == "duration"
    overall = summary[("none", "all")]
    expected = np.mean([r["correct_generate"] for r in samples if r["method"] == "none"])
    assert overall["accuracy_generate"] == pytest.approx(expected)
    report = paths["report.md"].read_text()
    assert "## By task family" in report and "## By duration" in report and "generated letter" in report
    assert "| OCR Problems | uncompressed |" in report and "| long | uniform |" in report


def test_command_line_checks_the_release_before_the_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tokpress.cli import app
    from tokpress.eval.accuracy import runner

    monkeypatch.setattr(runner, "make_eval_workload", lambda config: pytest.fail("the model was loaded"))
    out = ["--model", "tiny", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, ["eval", "--benchmark", "videomme", *out])
    assert result.exit_code == 2 and result.output.startswith("error: --data:")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["eval", "--benchmark", "videomme", "--data", str(tmp_path / "empty"), *out])
    assert result.exit_code == 1 and "test-00000-of-00001.parquet not found" in result.output
