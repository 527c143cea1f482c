"""Video files in and out: decode + frame sampling for the bench, and an encoder for synthetic videos.

:func:`load_video` decodes with decord when it is importable, else with PyAV, and samples frames the way the
Hugging Face video processors and ``qwen-vl-utils`` do:

- ``num_frames=n``: ``n`` indices spread uniformly over the whole clip (first and last frame included:
  ``round(linspace(0, total - 1, n))``, as ``qwen-vl-utils``);
- ``fps=f``: ``round(duration * f)`` frames, bounded to ``[min_frames, min(max_frames, total)]``, then spread
  uniformly the same way;
- neither: every frame, or ``max_frames`` uniform ones for a longer clip.

With ``multiple_of=2`` (Qwen-VL's temporal patch of two frames) the count is rounded to a multiple of 2 (as the
Qwen2-VL video processor: ``num_frames`` to the nearest multiple, an fps-derived count down), never above the
number of frames in the file.
"""

from __future__ import annotations

import logging
import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tokpress.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 768  # Qwen2-VL / qwen-vl-utils FPS_MAX_FRAMES
DEFAULT_MIN_FRAMES = 4  # Qwen2-VL / qwen-vl-utils FPS_MIN_FRAMES
ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")  # tried in this order by write_video


def sample_count(
    total_frames: int,
    video_fps: float | None,
    num_frames: int | None = None,
    fps: float | None = None,
    *,
    min_frames: int = DEFAULT_MIN_FRAMES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    multiple_of: int = 1,
) -> int:
    """Number of frames to sample from a clip of ``total_frames`` frames at ``video_fps`` (rules in the module doc)."""
    if num_frames is not None and fps is not None:
        raise InputError("give num_frames or fps, not both (num_frames: a fixed count; fps: frames per second)")
    if multiple_of < 1 or min_frames < 1 or max_frames < 1:
        raise InputError(
            f"multiple_of, min_frames and max_frames must be >= 1, got {multiple_of}, {min_frames}, {max_frames}"
        )
    m = multiple_of
    ceiling = (min(max_frames, total_frames) // m) * m  # most frames we may return
    if ceiling < 1:
        raise InputError(
            f"the video has {total_frames} frame(s); at least {m} are needed (multiple_of={m}): use a longer video"
        )
    if num_frames is not None:
        if num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {num_frames}")
        if num_frames > total_frames:
            raise InputError(
                f"num_frames={num_frames} exceeds the {total_frames} frames of the video: ask for at most "
                f"{total_frames} frames or sample with fps"
            )
        return min(max(m, round(num_frames / m) * m), ceiling)
    if fps is not None:
        if fps <= 0:
            raise InputError(f"fps must be > 0, got {fps}")
        if not video_fps:
            raise InputError("the video has no frame rate in its metadata: sample with num_frames instead of fps")
        wanted = round(total_frames / video_fps * fps)
        floor = math.ceil(min_frames / m) * m
        return max(m, (min(max(wanted, floor), ceiling) // m) * m)
    return ceiling


def uniform_indices(total_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread uniformly over ``[0, total_frames - 1]`` (ends included)."""
    if count >= total_frames:
        return list(range(total_frames))
    return np.linspace(0, total_frames - 1, count).round().astype(int).tolist()


def _decode_decord(path: Path, plan: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0)
    total, video_fps = len(reader), float(reader.get_avg_fps() or 0.0)
    indices = uniform_indices(total, sample_count(total, video_fps, **plan))
    batch = reader.get_batch(indices)
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    return frames, {"total_frames": total, "video_fps": video_fps, "indices": indices}


def _pyav_meta(av: Any, path: Path) -> tuple[int, float]:
    """Frame count and frame rate from the container, counting packets where the count is not stored."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        total = int(stream.frames or 0)
        if total <= 0:
            total = sum(1 for packet in container.demux(stream) if packet.size)
        if not rate and stream.duration and stream.time_base:
            rate = total / float(stream.duration * stream.time_base)
        return total, float(rate or 0.0)


def _decode_pyav(path: Path, plan: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    import av

    total, video_fps = _pyav_meta(av, path)
    indices = uniform_indices(total, sample_count(total, video_fps, **plan))
    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    if not frames:
        raise InputError(f"{path}: no frame could be decoded; check that the file is a valid video")
    if len(frames) < len(wanted):  # the stored frame count was too high: repeat the last decoded frame
        last = max(frames)
        logger.warning("%s: only %d frames decodable, %d expected; repeating frame %d", path, last + 1, total, last)
        indices = [min(i, last) for i in indices]
    return np.stack([frames[i] for i in indices]), {"total_frames": total, "video_fps": video_fps, "indices": indices}


def load_video(
    path: str | Path,
    num_frames: int | None = None,
    fps: float | None = None,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    min_frames: int = DEFAULT_MIN_FRAMES,
    multiple_of: int = 1,
    backend: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode and sample a video file.

    Args:
        path: a video file (mp4, mkv, avi, webm, ...).
        num_frames: sample this many frames uniformly over the clip; exclusive with ``fps``.
        fps: sample this many frames per second of video; exclusive with ``num_frames``.
        max_frames: upper bound of the count (fps sampling, or all frames when neither is given).
        min_frames: lower bound of an fps-derived count.
        multiple_of: round the count to a multiple of this (2 for Qwen-VL's temporal patches).
        backend: ``"auto"`` (decord if importable, else PyAV), ``"decord"`` or ``"pyav"``.

    Returns:
        ``frames``: uint8 ``[T, H, W, 3]`` RGB; ``info``: ``fps`` (of the file), ``duration`` (s), ``total_frames``,
        ``indices`` (sampled frame numbers), ``timestamps`` (s), ``sampled_fps`` (frames per second of video
        actually kept), ``height``, ``width``, ``decoder`` (``"decord"`` or ``"pyav"``), ``path``.

    Raises:
        InputError: missing or undecodable file, ``num_frames`` and ``fps`` both given, counts out of range.
        ImportError: neither decord nor PyAV is installed.
    """
    path = Path(path)
    if num_frames is not None and fps is not None:
        raise InputError("give num_frames or fps, not both (num_frames: a fixed count; fps: frames per second)")
    if not path.is_file():
        raise InputError(f"video file not found: {path} (check the path)")
    decoder = _pick_backend(backend)
    plan = dict(num_frames=num_frames, fps=fps, min_frames=min_frames, max_frames=max_frames, multiple_of=multiple_of)
    try:
        frames, meta = (_decode_decord if decoder == "decord" else _decode_pyav)(path, plan)
    except InputError:
        raise
    except Exception as exc:  # decoder-specific errors (av.error.InvalidDataError, decord.DECORDError, ...)
        raise InputError(f"{path}: cannot decode with {decoder} ({type(exc).__name__}: {exc})") from exc
    video_fps, total = meta["video_fps"], meta["total_frames"]
    if not video_fps:
        logger.warning(
            "%s: no frame rate in the file's metadata; info['fps'], 'timestamps' and 'sampled_fps' are 0. Pass the "
            "real frame rate to the processor yourself (video_metadata=[VideoMetadata(..., fps=...)]), or Qwen2.5-VL "
            "/ Qwen3-VL will assume 24 fps",
            path,
        )
    duration = total / video_fps if video_fps else 0.0
    info = {
        "path": str(path),
        "decoder": decoder,
        "fps": video_fps,
        "duration": duration,
        "total_frames": total,
        "indices": meta["indices"],
        "timestamps": [i / video_fps if video_fps else 0.0 for i in meta["indices"]],
        "sampled_fps": len(meta["indices"]) / duration if duration else 0.0,
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }
    return np.ascontiguousarray(frames, dtype=np.uint8), info


def _pick_backend(backend: str) -> str:
    if backend not in ("auto", "decord", "pyav"):
        raise InputError(f"unknown video backend {backend!r}: use 'auto', 'decord' or 'pyav'")
    for name, module in (("decord", "decord"), ("pyav", "av")):
        if backend in ("auto", name):
            try:
                __import__(module)
                return name
            except ImportError:
                if backend == name:
                    raise ImportError(f"backend={name!r} needs `pip install {module}`") from None
    raise ImportError("no video decoder: `pip install av` (or decord, or `pip install 'tokpress[video]'`)")


class TimedVideo(NamedTuple):
    """:func:`timed_load`'s result: the frames and info of :func:`load_video` and the wall time it took."""

    frames: np.ndarray
    info: dict[str, Any]
    decode_ms: float


def timed_load(path: str | Path, **kwargs: Any) -> TimedVideo:
    """:func:`load_video` (same arguments) timed with ``time.perf_counter``; ``info["decode_ms"]`` is set too."""
    start = time.perf_counter()
    frames, info = load_video(path, **kwargs)
    decode_ms = (time.perf_counter() - start) * 1e3
    info["decode_ms"] = decode_ms
    return TimedVideo(frames, info, decode_ms)


def uses_frame_rate(processor: Any) -> bool:
    """Whether ``processor``'s output depends on the frame rate of the video frames it is given.

    Qwen2.5-VL turns it into ``second_per_grid_ts`` (the temporal M-RoPE spacing); Qwen3-VL and Qwen3.5 into the
    ``<t seconds>`` timestamps written before each 2-frame block. Both assume 24 fps when frames come without
    ``video_metadata``. Qwen2-VL, LLaVA-OneVision, LLaVA-NeXT-Video and InternVL do not use it.
    """
    names = getattr(processor, "model_input_names", ()) or ()
    return "second_per_grid_ts" in names or callable(getattr(processor, "_calculate_timestamps", None))


def video_metadata_kwargs(processor: Any, n_frames: int, fps: float | None, copies: int = 1) -> dict[str, Any]:
    """``{"video_metadata": [...]}`` to pass to ``processor(...)`` with in-memory frames sampled at ``fps``, or ``{}``.

    ``fps`` is the frame rate of the ``n_frames`` frames handed to the processor (``info["sampled_fps"]`` of
    :func:`load_video`), not of the file. Each of the ``copies`` entries is a
    ``VideoMetadata(total_num_frames=n_frames, fps=fps, frames_indices=range(n_frames))``: Qwen2.5-VL then
    reports ``second_per_grid_ts = 2 / fps`` and Qwen3-VL / Qwen3.5 write frame ``i``'s timestamp as ``i / fps``
    (they need ``frames_indices``).

    Only processors whose output depends on the frame rate (:func:`uses_frame_rate`) get metadata; others get
    ``{}``. Without a frame rate (``fps`` None, 0 or not finite) such processors assume 24 fps: Qwen2.5-VL's
    temporal ids of a 2-fps clip become 12x too dense (transformers 5.23+; all 0 in 5.17, which truncates
    ``second_per_grid_ts`` to an int) and Qwen3-VL's timestamps 12x too small. That case returns ``{}`` and logs a
    warning naming the fix. The metadata does not stop a processor from resampling: with pre-sampled frames also
    pass ``do_sample_frames=False`` (released Qwen3-VL processors sample by default).
    """
    if not uses_frame_rate(processor):
        return {}
    if fps is None or not math.isfinite(fps) or fps <= 0:
        logger.warning(
            "%s: %d video frames without their frame rate (fps=%r); the processor will assume 24 fps and give the "
            "video wrong temporal positions / timestamps. Fix: pass the frames' fps (load_video's "
            "info['sampled_fps']) or video_metadata=[VideoMetadata(total_num_frames=%d, fps=<fps>, "
            "frames_indices=list(range(%d)))] to the processor",
            type(processor).__name__,
            n_frames,
            fps,
            n_frames,
            n_frames,
        )
        return {}
    from transformers.video_utils import VideoMetadata

    return {
        "video_metadata": [
            VideoMetadata(total_num_frames=n_frames, fps=float(fps), frames_indices=list(range(n_frames)))
            for _ in range(copies)
        ]
    }


def write_video(frames: Any, path: str | Path, fps: float = 8.0, *, codec: str | None = None, crf: int = 12) -> str:
    """Encode ``[T, H, W, 3]`` uint8 RGB frames into ``path`` (mp4) with PyAV; returns the codec used.

    The codec is ``codec`` or the first available of H.264 (libx264, h264, libopenh264) and MPEG-4 part 2. The
    quality is high (x264 ``crf``; MPEG-4 at a high bit rate) so a decoded frame stays close to the input. H and W
    must be even (yuv420p).
    """
    import av

    video = np.asarray(frames)
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise InputError(f"frames must be [T, H, W, 3] with T >= 1, got shape {video.shape}")
    if video.dtype != np.uint8:
        raise InputError(f"frames must be uint8 RGB, got {video.dtype} (convert with .astype(np.uint8))")
    height, width = video.shape[1:3]
    if height % 2 or width % 2:
        raise InputError(f"frame size {height}x{width}: height and width must be even for yuv420p video; crop or pad")
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    last_error: Exception | None = None
    for name in (codec,) if codec else ENCODERS:
        try:
            with av.open(str(path), mode="w") as container:
                stream = container.add_stream(name, rate=rate)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                if name == "libx264":
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                else:
                    stream.bit_rate = max(2_000_000, int(width * height * float(rate) * 2))
                for frame in video:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode())
            logger.debug("wrote %d frames to %s with %s", len(video), path, name)
            return name
        except Exception as exc:  # codec not built into this FFmpeg: try the next one
            last_error = exc
            path.unlink(missing_ok=True)
    raise InputError(f"cannot encode {path} with {codec or ENCODERS}: {last_error}") from last_error
