"""Hand-written solvers for the procedural video QA tasks of :mod:`tokpress.eval.synth.tasks`.

Each solver reads only what a model would get: the raw frames (``[T, H, W, 3]`` uint8, straight from the generator
or decoded from an exported mp4), the question text and the four options. It never reads a sample's metadata, and it
does not reuse the generator's drawing code (shapes are told apart by their own geometric rules below), so a solver
that scores 100 % shows that the labels agree with the pixels. What it knows is the benchmark's public convention:
the colour palette, that the background and the distractors are static, and that a lamp is dark or white.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from tokpress.eval.synth.tasks import COLORS, COUNTS, POSITIONS

logger = logging.getLogger(__name__)

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float64)
MOVING_THRESHOLD = 90  # summed |frame - temporal median| over RGB above which a pixel shows a moving object
CHANGING_STD = 20.0  # temporal std (summed over RGB) above which a pixel changes over time


def nearest_color(rgb: np.ndarray) -> str:
    """The palette colour closest (Euclidean RGB) to ``rgb``."""
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE - np.asarray(rgb, np.float64)) ** 2).sum(-1)))]


def moving_mask(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W]`` bool: pixels that differ from the per-pixel temporal median (the static scene)."""
    video = frames.astype(np.int16)
    median = np.median(video, axis=0).astype(np.int16)
    return np.abs(video - median).sum(-1) > MOVING_THRESHOLD


def changing_mask(frames: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: pixels whose value varies over time (colour changes, flashes)."""
    return frames.astype(np.float32).std(axis=0).sum(-1) > CHANGING_STD


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def _color_in(frame: np.ndarray, mask: np.ndarray) -> str:
    return nearest_color(np.median(frame[mask].astype(np.float64), axis=0))


def classify_shape(mask: np.ndarray) -> str:
    """Name of the shape drawn by the bool ``mask``, from the filled state of a few points of its bounding box.

    In box coordinates ``u`` (right) and ``v`` (down) in ``[-1, 1]``: an empty centre is a ring; four filled corners a
    square; filled bottom corners with empty top corners a triangle (apex up); filled diagonal points at
    ``(±0.6, ±0.6)`` a circle; at ``(±0.45, ±0.45)`` a diamond; otherwise a cross.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return ""
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float64)
    h, w = box.shape

    def filled(u: float, v: float) -> bool:
        r, c = round((v + 1) / 2 * h - 0.5), round((u + 1) / 2 * w - 0.5)
        return box[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].mean() > 0.5

    def all4(a: float) -> bool:
        return all(filled(su * a, sv * a) for su in (-1, 1) for sv in (-1, 1))

    if not filled(0, 0):
        return "ring"
    if all4(0.85):
        return "square"
    if filled(-0.7, 0.8) and filled(0.7, 0.8) and not filled(-0.7, -0.8) and not filled(0.7, -0.8):
        return "triangle"
    if all4(0.6):
        return "circle"
    return "diamond" if all4(0.45) else "cross"


def solve_color_extremes(frames: np.ndarray, question: str) -> str:
    """The colour of the pixels that change colour, in the first (``start``) or last frame."""
    mask = changing_mask(frames)
    return _color_in(frames[0] if "start" in question else frames[-1], mask)


def solve_direction(frames: np.ndarray, question: str) -> str:
    """The direction from the moving object's centroid in its first frame to its centroid in its last frame."""
    moving = moving_mask(frames)
    shown = [t for t in range(len(frames)) if moving[t].any()]
    (y0, x0), (y1, x1) = _centroid(moving[shown[0]]), _centroid(moving[shown[-1]])
    if abs(x1 - x0) > abs(y1 - y0):
        return "right" if x1 > x0 else "left"
    return "down" if y1 > y0 else "up"


def solve_flash_count(frames: np.ndarray, question: str) -> str:
    """The number of dark-to-bright runs of the changing pixels' brightness."""
    mask = changing_mask(frames)
    level = frames[:, mask].astype(np.float64).mean(axis=(1, 2))
    on = level > (level.min() + level.max()) / 2
    runs = int(on[0]) + int((on[1:] & ~on[:-1]).sum())
    return COUNTS[runs - 1] if 1 <= runs <= len(COUNTS) else str(runs)


def _needle_mask(frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
    moving = moving_mask(frames)
    area = moving.sum(axis=(1, 2))
    shown = [t for t in range(len(frames)) if area[t] > 0.25 * area.max()]
    return moving[shown].any(axis=0), shown


def solve_needle(frames: np.ndarray, question: str) -> str:
    """The shape (or colour) of the only thing that differs from the static scene, in the frames it shows."""
    mask, shown = _needle_mask(frames)
    if "color" in question:
        return nearest_color(np.median(frames[shown][:, mask].reshape(-1, 3).astype(np.float64), axis=0))
    return classify_shape(mask)


def solve_position(frames: np.ndarray, question: str) -> str:
    """The quadrant where the moving object is in the frames where it has the asked colour (majority vote)."""
    color = next(w for w in question.rstrip("?").split() if w in COLORS)
    moving = moving_mask(frames)
    height, width = frames.shape[1:3]
    votes: Counter[str] = Counter()
    for t in range(len(frames)):
        if moving[t].sum() < 16 or _color_in(frames[t], moving[t]) != color:
            continue
        y, x = _centroid(moving[t])
        votes[POSITIONS[2 * int(y >= height / 2) + int(x >= width / 2)]] += 1
    return votes.most_common(1)[0][0] if votes else ""


SOLVERS: dict[str, Callable[[np.ndarray, str], str]] = {
    "color_extremes": solve_color_extremes,
    "direction": solve_direction,
    "flash_count": solve_flash_count,
    "needle": solve_needle,
    "position": solve_position,
}


def solve(task: str, frames: np.ndarray, question: str, options: Sequence[str]) -> int:
    """Index of the option the solver of ``task`` picks, or -1 when its answer is not among ``options``."""
    word = SOLVERS[task](np.asarray(frames), question)
    if word not in options:
        logger.debug("solver for %s answered %r, not among %s", task, word, list(options))
        return -1
    return list(options).index(word)
