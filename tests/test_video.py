"""Video I/O: a synthetic moving-square clip survives write_video -> load_video (PyAV) with the right sampling."""

from __future__ import annotations

import numpy as np
import pytest

from tokpress.errors import InputError
from tokpress.eval.tiny.families import VideoSpec, moving_square_video
from tokpress.eval.video import load_video, sample_count, timed_load, uniform_indices, write_video

pytest.importorskip("av")

SPEC = VideoSpec(frames=24, height=112, width=112)
SIDE, FPS = 32, 8.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[str, np.ndarray]:
    frames = moving_square_video(SPEC, side=SIDE)
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    write_video(frames, path, fps=FPS)
    return str(path), frames


def _square_corner(frame: np.ndarray) -> tuple[float, float]:
    """Top-left corner of the red square, from the centroid of its pixels."""
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    ys, xs = np.nonzero((r > 150) & (g < 110) & (b < 110))
    assert len(ys) > 0.8 * SIDE * SIDE, "square not found"
    return ys.mean() - (SIDE - 1) / 2, xs.mean() - (SIDE - 1) / 2


def _expected_corner(t: int) -> int:
    return t * (min(SPEC.height, SPEC.width) - SIDE) // (SPEC.frames - 1)


def test_num_frames_sampling(clip):
    path, source = clip
    frames, info = load_video(path, num_frames=6, backend="pyav")
    assert frames.shape == (6, SPEC.height, SPEC.width, 3) and frames.dtype == np.uint8
    assert info["decoder"] == "pyav" and info["total_frames"] == SPEC.frames
    assert info["fps"] == pytest.approx(FPS) and info["duration"] == pytest.approx(SPEC.frames / FPS)
    assert info["indices"] == [0, 5, 9, 14, 18, 23]  # round(linspace(0, 23, 6))
    assert info["timestamps"] == pytest.approx([i / FPS for i in info["indices"]])
    for frame, t in zip(frames, info["indices"]):
        y, x = _square_corner(frame)
        assert abs(y - _expected_corner(t)) < 1.5 and abs(x - _expected_corner(t)) < 1.5
        assert np.abs(frame.astype(int) - source[t].astype(int)).mean() < 15  # lossy, but close


def test_fps_sampling(clip):
    path, _ = clip
    frames, info = load_video(path, fps=2.0, backend="pyav")  # 3 s x 2 fps = 6 frames
    assert len(frames) == 6 and info["indices"] == [0, 5, 9, 14, 18, 23]
    assert info["sampled_fps"] == pytest.approx(2.0)
    frames, info = load_video(path, fps=1.0, multiple_of=2, backend="pyav")  # 3 -> min_frames 4
    assert len(frames) == 4 and info["indices"] == [0, 8, 15, 23]
    frames, info = load_video(path, fps=1.7, min_frames=1, multiple_of=2, backend="pyav")  # round(5.1)=5 -> 4
    assert len(frames) == 4
    frames, info = load_video(path, fps=100.0, backend="pyav")  # bounded by the file's frames
    assert len(frames) == SPEC.frames and info["indices"] == list(range(SPEC.frames))


def test_all_frames_and_max_frames(clip):
    path, _ = clip
    frames, info = load_video(path, backend="pyav")
    assert len(frames) == SPEC.frames and info["indices"] == list(range(SPEC.frames))
    frames, info = load_video(path, max_frames=5, multiple_of=2, backend="pyav")
    assert len(frames) == 4 and info["indices"] == [0, 8, 15, 23]


def test_timed_load(clip):
    path, _ = clip
    result = timed_load(path, num_frames=4, backend="pyav")
    frames, info, ms = result
    assert frames.shape[0] == 4 and ms > 0 and info["decode_ms"] == ms == result.decode_ms


def test_sampling_rules():
    assert uniform_indices(10, 3) == [0, 4, 9] and uniform_indices(4, 8) == [0, 1, 2, 3]
    assert sample_count(100, 25.0, num_frames=7, multiple_of=2) == 8  # nearest multiple, as Qwen2-VL
    assert sample_count(15, 25.0, num_frames=15, multiple_of=2) == 14  # never above the file's frames
    assert sample_count(1000, 25.0, fps=2.0, multiple_of=2) == 80
    assert sample_count(1000, 25.0, fps=2.0, max_frames=32) == 32
    assert sample_count(10, 25.0) == 10


def test_errors(tmp_path, clip):
    path, _ = clip
    with pytest.raises(InputError, match="not found"):
        load_video(tmp_path / "missing.mp4", num_frames=4)
    with pytest.raises(InputError, match="not both"):
        load_video(path, num_frames=4, fps=1.0)
    with pytest.raises(InputError, match="exceeds"):
        load_video(path, num_frames=100, backend="pyav")
    with pytest.raises(InputError, match="fps must be > 0"):
        load_video(path, fps=0, backend="pyav")
    with pytest.raises(InputError, match="backend"):
        load_video(path, backend="opencv")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="cannot decode"):
        load_video(bad, backend="pyav")
    with pytest.raises(InputError, match="even"):
        write_video(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "odd.mp4")
    with pytest.raises(InputError, match="uint8"):
        write_video(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "float.mp4")


def test_mpeg4_fallback_codec(tmp_path):
    frames = moving_square_video(VideoSpec(frames=4, height=64, width=64), side=16)
    assert write_video(frames, tmp_path / "m.mp4", fps=4, codec="mpeg4") == "mpeg4"
    out, info = load_video(tmp_path / "m.mp4", backend="pyav")
    assert out.shape == frames.shape and info["fps"] == pytest.approx(4.0)


def test_frame_rate_reaches_qwen_processors_as_metadata(caplog):
    """Qwen2.5-VL: second_per_grid_ts = temporal patch 2 / 4 fps = 0.5 s; Qwen3-VL: frame i at i / 4 s, each 2-frame
    block stamped at its mean, so 8 frames give <0.1>, <0.6>, <1.1>, <1.6> seconds. No warning on this path."""
    from tokpress.eval.tiny.processor import tiny_processor
    from tokpress.eval.video import uses_frame_rate, video_metadata_kwargs

    frames = moving_square_video(VideoSpec(frames=8, height=56, width=56))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    with caplog.at_level("WARNING", logger="tokpress.eval.video"):
        qwen25 = tiny_processor("qwen2_5_vl")
        prompt = qwen25.apply_chat_template(messages, add_generation_prompt=True)
        out = qwen25(text=[prompt], videos=[frames], return_tensors="pt", **video_metadata_kwargs(qwen25, 8, 4.0))
        assert out["second_per_grid_ts"].tolist() == [pytest.approx(0.5)]
        qwen3 = tiny_processor("qwen3_vl")
        prompt = qwen3.apply_chat_template(messages, add_generation_prompt=True)
        out = qwen3(text=[prompt], videos=[frames], return_tensors="pt", **video_metadata_kwargs(qwen3, 8, 4.0))
        text = qwen3.tokenizer.decode(out["input_ids"][0])
        for stamp in ("<0.1 seconds>", "<0.6 seconds>", "<1.1 seconds>", "<1.6 seconds>"):
            assert stamp in text
    assert not [r for r in caplog.records if r.name == "tokpress.eval.video"]
    assert uses_frame_rate(qwen25) and uses_frame_rate(qwen3)
    assert not uses_frame_rate(tiny_processor("llava_onevision")) and not uses_frame_rate(tiny_processor("qwen2_vl"))


@pytest.mark.parametrize("fps", [None, 0.0, float("nan"), -2.0])
def test_missing_frame_rate_warns_with_the_fix(caplog, fps):
    from tokpress.eval.tiny.processor import tiny_processor
    from tokpress.eval.video import video_metadata_kwargs

    with caplog.at_level("WARNING", logger="tokpress.eval.video"):
        assert video_metadata_kwargs(tiny_processor("qwen3_vl"), 16, fps) == {}
    (record,) = [r for r in caplog.records if r.name == "tokpress.eval.video"]
    assert record.levelname == "WARNING"
    message = record.getMessage()
    assert "24 fps" in message and "VideoMetadata(total_num_frames=16" in message and "sampled_fps" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="tokpress.eval.video"):  # processors that ignore the rate: silent
        assert video_metadata_kwargs(tiny_processor("llava_onevision"), 16, fps) == {}
    assert not caplog.records


def test_file_without_frame_rate_warns(clip, caplog, monkeypatch):
    import tokpress.eval.video as video

    real = video._pyav_meta
    monkeypatch.setattr(video, "_pyav_meta", lambda av, path: (real(av, path)[0], 0.0))  # a container with no rate
    with caplog.at_level("WARNING", logger="tokpress.eval.video"):
        frames, info = load_video(clip[0], num_frames=4, backend="pyav")
    assert len(frames) == 4 and info["fps"] == 0.0 and info["sampled_fps"] == 0.0
    assert any("no frame rate" in r.getMessage() and "VideoMetadata" in r.getMessage() for r in caplog.records)
