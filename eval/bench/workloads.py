"""The models and inputs ``tokpress bench`` measures: the embedded default, a full-size architecture with random
weights, or a user's checkpoint and video."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tokpress.errors import ConfigError, InputError
from tokpress.eval.bench.inputs import video_placeholder_id
from tokpress.eval.bench.runner import DTYPES, USER_VIDEO_FRAMES, BenchConfig, Workload
from tokpress.eval.video import DEFAULT_MAX_FRAMES, video_metadata_kwargs

logger = logging.getLogger("tokpress")

DEFAULT_FRAMES = 16


def resolve_device(config: BenchConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is visible; use --device cpu")
    name = config.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if name not in DTYPES:
        raise ConfigError(f"--dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return device, DTYPES[name]


def device_map_arg(config: Any, device: torch.device) -> str | dict[str, str]:
    """``from_pretrained``'s ``device_map``: ``"auto"`` when ``config.device_map`` asks for it (one model over every
    visible GPU, for checkpoints larger than one), else the whole model on ``device``."""
    return "auto" if getattr(config, "device_map", None) == "auto" else {"": str(device)}


def environment(model, device: torch.device, dtype: torch.dtype, attn: str) -> dict[str, str]:
    import transformers

    cpu = f"CPU ({platform.processor() or platform.machine()})"
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokpress": __import__("tokpress").__version__,
        "python": platform.python_version(),
        "dtype": str(dtype).replace("torch.", ""),
        "attn": attn,
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        env["cuda"] = str(torch.version.cuda)
        env["driver"] = _driver_version()
    placed = getattr(model, "hf_device_map", None) or {}
    if len(set(map(str, placed.values()))) > 1:  # device_map="auto" spread the model
        env["device_map"] = "auto: " + ", ".join(sorted(set(map(str, placed.values()))))
    return env


def _driver_version() -> str:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown"
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _video_frames(
    config: BenchConfig, default_frames: int, workdir: Path, multiple_of: int = 1, generated=None, fps: float = 8.0
):
    """``(path, decode)``: the user's video, or a generated one written to ``workdir`` (``generated``: its
    ``[T, H, W, 3]`` frames at ``fps``, default a moving square); ``decode()`` reads it and returns
    ``(frames, sampled fps, seconds)``."""
    from tokpress.eval.tiny.families import VideoSpec, moving_square_video
    from tokpress.eval.video import load_video, write_video

    path = config.video
    wanted = config.frames if config.frames is not None else default_frames
    if path is None:
        path = str(workdir / "generated.mp4")
        if generated is None:
            generated = moving_square_video(VideoSpec(frames=wanted))
        write_video(generated, path, fps=fps)
    # --fps: per second of video; --frames: that count (validated against the file); neither: a generated video
    # gives all its frames, a user's video at most USER_VIDEO_FRAMES uniform ones (all of a shorter clip)
    num_frames = None if config.fps is not None else (wanted if config.video is None or config.frames else None)
    max_frames = USER_VIDEO_FRAMES if num_frames is None and config.fps is None else DEFAULT_MAX_FRAMES
    if config.video is not None and num_frames is None and config.fps is None:
        total = video_frame_count(path)
        if total < USER_VIDEO_FRAMES:
            logger.warning("%s has %d frames (< %d): using all of them", path, total, USER_VIDEO_FRAMES)

    def decode():
        start = time.perf_counter()
        frames, info = load_video(
            path, num_frames=num_frames, fps=config.fps, multiple_of=multiple_of, max_frames=max_frames
        )
        return frames, info.get("sampled_fps") or None, time.perf_counter() - start

    return path, decode


def _processor_workload(
    name,
    model,
    processor,
    config: BenchConfig,
    default_frames: int,
    env,
    generated=None,
    question=None,
    fps=8.0,
    options=None,
) -> Workload:
    device = next(model.parameters()).device
    workdir = Path(tempfile.mkdtemp(prefix="tokpress-bench-"))
    qwen = model.config.model_type in ("qwen2_vl", "qwen2_5_vl")  # temporal patches of 2 frames
    path, decode = _video_frames(config, default_frames, workdir, 2 if qwen else 1, generated, fps)
    text = question or config.question
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    if "video" not in env:
        env["video"] = path if config.video else f"generated moving square ({config.frames or default_frames} frames)"

    last: dict = {}

    def make_inputs():
        frames, sampled_fps, decode_s = decode()
        last.update(frames=frames, fps=sampled_fps)
        env["frames"] = str(len(frames))  # the frames actually used (after sampling / clamping), for report.md
        start = time.perf_counter()
        # the frames are already sampled as the processor would: do not let it resample them; pass their frame
        # rate so Qwen2.5-VL's temporal positions match the clip (without it the processor assumes 24 fps)
        inputs = processor(
            text=[prompt] * config.batch,
            videos=[frames] * config.batch,
            return_tensors="pt",
            do_sample_frames=False,
            **video_metadata_kwargs(processor, len(frames), sampled_fps, config.batch),
        )
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(next(model.parameters()).dtype)
        return inputs, decode_s, time.perf_counter() - start

    def decode_text(ids):
        return processor.tokenizer.decode(ids, skip_special_tokens=True)

    def frame_prepass():
        """QuoTA's scores of the last video's grid frames: the synth task's options (``options``) or QuoTA's
        decoupled entities and yes/no prompt (:mod:`tokpress.frame_relevance`)."""
        from tokpress.frame_relevance import decouple_query, score_frames

        frames, rate = last["frames"], last["fps"]
        if options is not None:
            kwargs = dict(readout="options", options=options, prompt=text)
            return score_frames(model, processor, frames, text, fps=rate, **kwargs)
        entities = decouple_query(model, processor, text)
        return score_frames(model, processor, frames, text, entities=entities, fps=rate)

    return Workload(name, model, make_inputs, decode_text, env, frame_prepass)


def default_workload(config: BenchConfig) -> Workload:
    """The embedded default: the shipped synth model on a synth test video (:func:`synth_workload`) when it is
    installed, else a tiny Qwen2.5-VL with random weights, a generated video and the real (offline) processor."""
    from tokpress.eval.accuracy.workload import SHIPPED_MODEL

    if (SHIPPED_MODEL / "config.json").is_file():
        return synth_workload(config, SHIPPED_MODEL)
    from tokpress.eval.tiny.families import tiny_model
    from tokpress.eval.tiny.processor import tiny_processor

    device, dtype = resolve_device(config)
    model = tiny_model("qwen2_5_vl", attn=config.attn, dtype=dtype).to(device)
    env = environment(model, device, dtype, config.attn)
    env["model"] = "built-in tiny Qwen2.5-VL (random weights, 4 layers, hidden 64)"
    return _processor_workload("tiny-qwen2.5-vl", model, tiny_processor("qwen2_5_vl"), config, DEFAULT_FRAMES, env)


#: The synth test video of the default bench: the needle task, whose answer depends on one temporal token.
BENCH_SYNTH_TASK, BENCH_SYNTH_INDEX = "needle", 0


def synth_workload(config: BenchConfig, path: Path) -> Workload:
    """The trained synth model at ``path`` on a synth test-split video (``--video`` and ``--question`` still apply;
    the default question is the sample's own, in ``tokpress eval``'s prompt format, so answers can be checked)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from tokpress.eval.accuracy.data import format_prompt
    from tokpress.eval.bench.runner import BenchConfig as _Defaults
    from tokpress.eval.synth.tasks import SYNTH_FPS, make_split

    device, dtype = resolve_device(config)
    model = AutoModelForImageTextToText.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation=config.attn,
        device_map=device_map_arg(config, device),
        local_files_only=True,
    ).eval()
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    sample = make_split("test", 1, tasks=[BENCH_SYNTH_TASK], offset=BENCH_SYNTH_INDEX)[0]
    question, options = None, None
    if config.question == _Defaults.question:
        question, options = format_prompt(sample.question, sample.options), list(sample.options)
    env = environment(model, device, dtype, config.attn)
    env["model"] = f"shipped synth model ({path.name}, trained; tokpress.eval.synth.train)"
    if config.video is None:
        env["video"] = (
            f"synth test video {sample.video_id} ({len(sample.frames)} frames at {SYNTH_FPS:g} fps; "
            f"answer: {sample.answer_word})"
        )
    n = len(sample.frames)
    return _processor_workload(
        "synth-qwen2.5-vl", model, processor, config, n, env, sample.frames, question, SYNTH_FPS, options
    )


def arch_workload(config: BenchConfig) -> Workload:
    """A published full-size architecture, or a scaled CPU setting of one, with random weights and synthetic inputs
    of the processor's layout."""
    from tokpress.eval.bench.archs import arch_label, random_weight_model
    from tokpress.eval.bench.inputs import QWEN2_FAMILIES, QWEN3_FAMILIES, synthetic_video_inputs, video_token_layout

    device, dtype = resolve_device(config)
    model = random_weight_model(config.arch, device, dtype, attn=config.attn).eval()
    frames = (
        config.frames or (32 if model.config.model_type == "llava_onevision" else 64)  # validated: None or >= 1
    )
    size = config.extra.get("size", 448)
    inputs = synthetic_video_inputs(model.config, frames, size, size, batch=config.batch, dtype=dtype, device=device)
    env = environment(model, device, dtype, config.attn)
    env["model"] = f"{config.arch} ({arch_label(config.arch)})"
    n_video = int((inputs["input_ids"][0] == video_placeholder_id(model.config)).sum())
    side = size  # Qwen towers take --size; per-frame towers (LLaVA, InternVL) resize to their own image_size
    if model.config.model_type not in QWEN2_FAMILIES + QWEN3_FAMILIES:
        side = video_token_layout(model.config, frames, size, size)["pixels"][-1]
    env["video"] = f"synthetic: {frames} frames of {side}x{side}, {n_video} video tokens"
    env["frames"] = str(frames)

    def show(ids):
        return " ".join(map(str, ids[:8].tolist()))

    return Workload(config.arch, model, lambda: (inputs, 0.0, 0.0), show, env)


def pretrained_workload(config: BenchConfig) -> Workload:
    """A user's checkpoint (local path or cached hub id) with its processor."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device, dtype = resolve_device(config)
    model = AutoModelForImageTextToText.from_pretrained(
        config.model, dtype=dtype, attn_implementation=config.attn, device_map=device_map_arg(config, device)
    ).eval()
    processor = AutoProcessor.from_pretrained(config.model)
    env = environment(model, device, dtype, config.attn)
    env["model"] = config.model
    return _processor_workload(Path(config.model).name, model, processor, config, 32, env)


def video_frame_count(path: str | Path) -> int:
    """Frames in the video file at ``path``, from its container (nothing decoded)."""
    from tokpress.eval.video import _pyav_meta

    try:
        import av
    except ImportError:  # decord-only install: decode the index instead
        import decord

        return len(decord.VideoReader(str(path)))
    try:
        total, _ = _pyav_meta(av, Path(path))
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise InputError(f"{path}: cannot read the video ({type(exc).__name__}: {exc})") from exc
    return total


def make_workload(config: BenchConfig) -> Workload:
    """Validate ``config`` (:meth:`BenchConfig.validate`), then load what it names."""
    config.validate()
    if config.arch:
        return arch_workload(config)
    if config.model and not _is_shipped(config.model):
        return pretrained_workload(config)
    return default_workload(config)  # the shipped model, named or not, runs on its own synth videos


def _is_shipped(model: str) -> bool:
    """Whether ``--model`` names the shipped synth model's folder (however the path is spelled)."""
    from tokpress.eval.accuracy.workload import SHIPPED_MODEL

    path = Path(model).expanduser()
    return path.is_dir() and path.resolve() == SHIPPED_MODEL.resolve()
