"""Helpers shared by the benchmark readers: files that must exist, parquet / JSON tables, option letters and
frame folders."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokpress.errors import InputError
from tokpress.eval.accuracy.data import LETTERS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LETTERED = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*)$", re.DOTALL)


def need(path: Path, source: str) -> Path:
    """``path`` when it exists; else an InputError naming it and where the benchmark comes from."""
    if not path.exists():
        raise InputError(f"{path} not found: download {source}")
    return path


def read_parquet(path: Path, source: str) -> list[dict[str, Any]]:
    """The rows of a parquet file (needs pyarrow) as dicts."""
    need(path, source)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow.lib.ArrowInvalid and friends
        raise InputError(f"{path} is not a readable parquet file ({exc}); download it again from {source}") from exc


def read_json(path: Path, source: str) -> Any:
    """A JSON file's content; a malformed file names itself."""
    need(path, source)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); download it again from {source}") from exc


def first_parquet(folder: Path, default: str, source: str) -> Path:
    """``folder/test-*.parquet`` (the first shard), else an InputError naming ``folder/default``."""
    found = sorted(folder.glob("test-*.parquet")) if folder.is_dir() else []
    return found[0] if found else need(folder / default, source)


def get(rec: dict[str, Any], key: str, where: str) -> Any:
    """``rec[key]``, or an InputError naming the row and the field."""
    if rec.get(key) is None:
        raise InputError(f"{where}: no {key!r} field; is this the official release?")
    return rec[key]


def split_letter(option: str) -> tuple[str | None, str]:
    """``"B. red"`` -> ``("B", "red")``; an option without a letter -> ``(None, option)``."""
    match = _LETTERED.match(str(option))
    return (match.group(1), match.group(2).strip()) if match else (None, str(option).strip())


def lettered(options: Sequence[str], sep: str = ". ") -> list[str]:
    """``["A. red", "B. blue"]`` (``sep`` between letter and text)."""
    return [f"{LETTERS[i]}{sep}{o}" for i, o in enumerate(options)]


def find_file(candidates: Sequence[Path], source: str) -> Path:
    """The first existing path of ``candidates``; else an InputError naming the first."""
    for path in candidates:
        if path.exists():
            return path
    return need(candidates[0], source)


def letter_index(letter: str, n_options: int) -> int:
    """Index of an extracted letter, -1 when empty or beyond the options."""
    index = LETTERS.find(letter) if letter else -1
    return index if 0 <= index < n_options else -1


def frame_files(folder: Path) -> list[Path]:
    """The images of a frame folder in frame order (numbers in names compared as numbers)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def load_frame_dir(
    folder: str | Path, count: int, clip: tuple[float, float] | None = None, fps: float = 3.0
) -> tuple[np.ndarray, float]:
    """``count`` frames spread uniformly over a folder of images (``clip``: only those between ``start`` and
    ``end`` seconds, the folder holding ``fps`` frames per second, as MVBench's TVQA frames).

    Returns:
        uint8 ``[T, H, W, 3]`` RGB and the frame rate of the sampled frames.
    """
    from PIL import Image

    from tokpress.eval.video import uniform_indices

    files = frame_files(Path(folder))
    if clip is not None:
        first = max(0, int(clip[0] * fps))
        files = files[first : max(first + 1, int(clip[1] * fps) + 1)]
    if not files:
        raise InputError(f"{folder}: no frames (.jpg/.png) to read; check the download")
    picked = [files[i] for i in uniform_indices(len(files), count)]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in picked]
    return np.stack(frames), fps * len(picked) / len(files)
