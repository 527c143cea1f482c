"""Method specs as written on the command line: ``none``, a preset (``fastv``), ``outer+inner`` (``evs+fastv``), a
vision policy (``tome``, ``rlt``) or a vision stage stacked on either (``tome@0.5>holitom``, ``rlt@0.5>holitom``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokpress.errors import ConfigError
from tokpress.registry import get_preset, policy_names

#: default vision ratio of a stacked method (``tome>holitom``): the ratio of a bench/eval row is the LLM's
VISION_DEFAULT_RATIO = 0.5


def parse_method(spec: str) -> dict[str, Any] | None:
    """Keyword arguments of :func:`tokpress.apply` for ``spec`` (``None`` for ``"none"``, the uncompressed model).

    Grammar: ``[vision[@r]>]method`` where ``method`` is a preset (``fastv``), ``outer+inner`` (``evs+fastv``) or,
    alone, a vision policy (the row's ratio is the vision ratio; with ``tome`` the LLM sees every token, with ``rlt``
    the kept ones). In a stacked spec the row's ratio is the LLM side's and the vision stage keeps ``r`` (default
    :data:`VISION_DEFAULT_RATIO`) of each frame's patches (``tome``) or of each video's patch groups (``rlt``).

    Examples: ``parse_method("evs+fastv") -> {"outer": "evs", "inner": "fastv"}``;
    ``parse_method("tome@0.25>holitom") -> {"vision": "tome", "vision_ratio": 0.25, "method": "holitom"}``.
    """
    from tokpress.policies.vision import vision_policy_names

    spec = spec.strip()
    if spec in ("", "none"):
        return None
    if ">" in spec:
        head, rest = (part.strip() for part in spec.split(">", 1))
        name, _, ratio = head.partition("@")
        llm = parse_method(rest)
        if name not in vision_policy_names() or llm is None or "vision" in llm:
            raise ConfigError(
                f"{spec!r}: write vision[@ratio]>method with a vision policy ({', '.join(vision_policy_names())}) "
                "and an LLM-side method, e.g. tome@0.5>holitom"
            )
        try:
            vision_ratio = float(ratio) if ratio else VISION_DEFAULT_RATIO
        except ValueError:
            raise ConfigError(f"{spec!r}: the vision ratio after '@' must be a number, got {ratio!r}") from None
        return {"vision": name, "vision_ratio": vision_ratio, **llm}
    if spec in vision_policy_names():
        return {"vision": spec}
    if "+" in spec:
        outer, inner = (part.strip() for part in spec.split("+", 1))
        if outer not in policy_names("outer") or inner not in policy_names("inner"):
            raise ConfigError(
                f"{spec!r}: write outer+inner with an outer policy ({', '.join(policy_names('outer'))}) "
                f"and an inner one ({', '.join(policy_names('inner'))})"
            )
        return {"outer": outer, "inner": inner}
    get_preset(spec)  # raises with the list of methods
    return {"method": spec}


def parse_list(text: str) -> list[str]:
    """Split a comma-separated option value."""
    return [part.strip() for part in text.split(",") if part.strip()]


# ------------------------------------------------------------------------------------------- option checks
#
# Shared by :meth:`BenchConfig.validate <tokpress.eval.bench.runner.BenchConfig.validate>` and
# :meth:`EvalConfig.validate <tokpress.eval.accuracy.runner.EvalConfig.validate>`: every check runs before a model or a
# video is loaded. A failed check raises :class:`ConfigError` whose ``field`` attribute names the config field, so
# the command line can name its flag (``ratios`` -> ``--ratios``).

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
#: Methods the command line cannot run: they need arguments only Python can give.
PYTHON_ONLY_METHODS = {"fixed": "it replays index lists given as outer_options={'keep': ...} / inner_options"}


def option_error(field: str, message: str) -> ConfigError:
    """A :class:`ConfigError` about config field ``field`` (its flag is ``--`` + the field with ``-`` for ``_``)."""
    error = ConfigError(message)
    error.field = field  # type: ignore[attr-defined]
    return error


def check_methods(methods: Sequence[str], field: str = "methods") -> None:
    """Every spec parses, none needs Python-only arguments, and there is at least one."""
    if not [m for m in methods if m.strip()]:
        raise option_error(field, "methods is empty: give at least one, e.g. none,fastv (see `tokpress methods`)")
    for spec in methods:
        try:
            kwargs = parse_method(spec)
        except ConfigError as exc:
            raise option_error(field, str(exc)) from None
        names = set((kwargs or {}).values())
        for name, why in PYTHON_ONLY_METHODS.items():
            if name in names:
                raise option_error(
                    field,
                    f"method {spec!r} cannot run here: {why}; use it from Python "
                    f"(tokpress.apply(model, outer={name!r}, outer_options=...))",
                )


def check_ratios(ratios: Sequence[Any], field: str = "ratios") -> tuple[float, ...]:
    """The ratios as floats; each finite and in (0, 1] (numpy scalars and 0-d tensors are accepted)."""
    if not len(ratios):
        raise option_error(field, "ratios is empty: give retain ratios in (0, 1], e.g. 0.5,0.25")
    out = []
    for r in ratios:
        try:
            value = float(r)
        except (TypeError, ValueError):
            raise option_error(field, f"ratios must be numbers in (0, 1], got {r!r}") from None
        if not math.isfinite(value) or not 0 < value <= 1:
            raise option_error(field, f"ratios must be in (0, 1] (the fraction of video tokens kept), got {r!r}")
        out.append(value)
    return tuple(out)


def check_count(field: str, value: int | None, minimum: int = 1) -> None:
    """``value`` is None or an integer >= ``minimum``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise option_error(field, f"{field} must be an integer >= {minimum}, got {value!r}")


def check_frames_fps(frames: int | None, fps: float | None) -> None:
    """Frame sampling: ``frames`` (a count) or ``fps`` (per second of video), never both."""
    check_count("frames", frames)
    if fps is not None and (not math.isfinite(float(fps)) or fps <= 0):
        raise option_error("fps", f"fps must be > 0 (frames per second of video), got {fps!r}")
    if frames is not None and fps is not None:
        raise option_error(
            "fps",
            "give --frames or --fps, not both: drop --fps to sample a fixed number of frames, "
            "or drop --frames to sample per second of video",
        )


def check_device(device: str | None, dtype: str | None, dtypes: Sequence[str]) -> None:
    """``device`` is cpu, cuda, cuda:N or mps and is available; ``dtype`` one of ``dtypes``."""
    import torch

    if dtype is not None and dtype not in dtypes:
        raise option_error("dtype", f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    if device is None:
        return
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise option_error("device", f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise option_error("device", f"device {device!r}: no CUDA device is visible; use --device cpu")
        if index and int(index) >= count:
            raise option_error("device", f"device {device!r}: only {count} CUDA device(s) visible (cuda:0..)")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise option_error("device", "device 'mps': MPS is not available here; use --device cpu")


def shipped_model_installed() -> bool:
    """True when the trained synth model ships with this install (the default model of bench and eval)."""
    from tokpress.eval.accuracy.workload import SHIPPED_MODEL

    return (SHIPPED_MODEL / "config.json").is_file()


def check_device_map(device_map: str | None, loads_checkpoint: bool) -> None:
    """``device_map`` is None or ``"auto"`` (accelerate spreads a checkpoint over every visible GPU, then CPU), and
    ``"auto"`` only where a checkpoint is loaded: models built in code (``--arch``, the tiny one) live on ``--device``.
    """
    if device_map is None:
        return
    if device_map != "auto":
        raise option_error("device_map", f"device_map must be 'auto' (or left out), got {device_map!r}")
    if not loads_checkpoint:
        raise option_error(
            "device_map",
            "device_map 'auto' applies to a checkpoint (--model, or the shipped model); "
            "models built in code (--arch, tiny) are placed on --device",
        )


def check_attn(attn: str) -> None:
    """A known attention implementation; flash_attention_2 only when flash-attn is installed."""
    import importlib.util

    if attn not in ATTN_IMPLEMENTATIONS:
        raise option_error("attn", f"attn must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {attn!r}")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise option_error(
            "attn", "attn flash_attention_2 needs the flash-attn package (pip install 'tokpress[flash]'); use sdpa"
        )


def looks_local(path: str) -> bool:
    """A model argument meant as a local path (not a hub id): starts with ``.``, ``/`` or ``~``, or exists."""
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def check_model_path(model: str | None, field: str = "model") -> None:
    """A local-looking model path must be an existing folder."""
    if model and looks_local(model) and not Path(model).expanduser().is_dir():
        raise option_error(field, f"model {model!r} is not an existing folder: check the path (or give a hub id)")


def check_writable(out: str | Path, field: str = "out") -> Path:
    """Create ``out`` and write + delete a probe file in it, so a run never ends unable to save its results."""
    folder = Path(out).expanduser()
    probe = folder / f".tokpress-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise option_error(field, f"output folder {str(out)!r} is not writable ({reason}): choose another") from None
    return folder
