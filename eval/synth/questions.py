"""The five task builders: what each task family paints on a :class:`~tokpress.eval.synth.scene.Scene` and asks.

A builder takes a fresh scene (its random stream is the sample's), paints the clip and returns the questions the
video carries (``(variant, question, answer word, three wrong words)``) and the scene's ground truth (JSON-able).
:data:`BUILDERS` maps each name of :data:`~tokpress.eval.synth.tasks.TASKS` to its builder; what each family tests is
in the doc of :mod:`tokpress.eval.synth.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tokpress.eval.synth.scene import Scene
from tokpress.eval.synth.tasks import COLORS, COUNTS, DIRECTIONS, LAMP_OFF, LAMP_ON, POSITIONS, SHAPES, quadrant


def _pick(rng: np.random.Generator, pool: Sequence[str], k: int = 1) -> list[str]:
    """``k`` distinct items of ``pool`` in random order."""
    return [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]


def _wrong(rng: np.random.Generator, answer: str, preferred: Sequence[str], pool: Sequence[str]) -> list[str]:
    """Three wrong options: distinct ``preferred`` words first (things that are in the video), then from ``pool``."""
    chosen: list[str] = []
    for word in preferred:
        if word != answer and word not in chosen and len(chosen) < 3:
            chosen.append(word)
    rest = [w for w in pool if w != answer and w not in chosen]
    return chosen + _pick(rng, rest, 3 - len(chosen))


def _segments(slots: int, parts: int) -> list[tuple[int, int]]:
    """Split ``slots`` into ``parts`` contiguous near-equal ``(start, stop)`` slot ranges."""
    edges = [round(k * slots / parts) for k in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


Question = tuple[str, str, str, list[str]]  # variant, question, answer word, three wrong words


def _color_extremes(scene: Scene) -> tuple[list[Question], dict[str, Any]]:
    rng, slots = scene.rng, scene.config.slots
    start, middle, end = _pick(rng, list(COLORS), 3)
    a = int(rng.integers(1, slots // 2))  # start phase: slots [0, a)
    b = int(rng.integers(slots - slots // 2 + 1, slots))  # end phase: slots [b, slots)
    cell = scene.take_cell()
    for color, (s0, s1) in zip((start, middle, end), ((0, a), (a, b), (b, slots))):
        scene.paint_slots(cell, "square", COLORS[color], s0, s1)
    others = [c for c in COLORS if c not in (start, middle, end)]
    distractors = scene.distractors(others, SHAPES[1:])
    fourth = [distractors[0]["color"]] if distractors else _pick(rng, others)
    meta = {"cell": list(cell), "colors": [start, middle, end], "phase_slots": [[0, a], [a, b], [b, slots]]}
    questions = [
        ("start", "What color is the square at the start?", start, [middle, end, *fourth]),
        ("end", "What color is the square at the end?", end, [start, middle, *fourth]),
    ]
    return questions, meta | {"distractors": distractors}


def _direction(scene: Scene) -> tuple[list[Question], dict[str, Any]]:
    rng, grid, slots = scene.rng, scene.config.grid, scene.config.slots
    direction = DIRECTIONS[int(rng.integers(4))]
    steps = int(rng.integers(2, grid))  # jumps of one cell; steps + 1 cells visited
    sign = 1 if direction in ("right", "down") else -1
    lo = 0 if sign > 0 else steps
    along0 = int(rng.integers(lo, lo + grid - steps))
    across = int(rng.integers(grid))
    color = _pick(rng, list(COLORS))[0]
    cells = []
    for k in range(steps + 1):
        along = along0 + sign * k
        cells.append(scene.take_cell((across, along) if direction in ("left", "right") else (along, across)))
    for cell, (s0, s1) in zip(cells, _segments(slots, steps + 1)):
        scene.paint_slots(cell, "square", COLORS[color], s0, s1)
    distractors = scene.distractors([c for c in COLORS if c != color], SHAPES[1:])
    meta = {"cells": [list(c) for c in cells], "color": color, "direction": direction, "distractors": distractors}
    wrong = [d for d in DIRECTIONS if d != direction]
    return [("direction", "Which way does the square move?", direction, wrong)], meta


def _flash_count(scene: Scene) -> tuple[list[Question], dict[str, Any]]:
    rng, slots = scene.rng, scene.config.slots
    max_count = min(len(COUNTS), (slots + 1) // 2)
    count = int(rng.integers(1, max_count + 1))
    lengths = [1] * count  # slots per flash (1 or 2)
    free = slots - (2 * count - 1)  # slots left after the flashes and the one-slot gaps between them
    for i in rng.permutation(count):
        if free > 0 and rng.random() < 0.5:
            lengths[int(i)] += 1
            free -= 1
    gaps = np.array([0] + [1] * (count - 1) + [0]) + rng.multinomial(free, [1 / (count + 1)] * (count + 1))
    cell = scene.take_cell()
    scene.paint(cell, "square", LAMP_OFF)
    on, start = [], int(gaps[0])
    for i, length in enumerate(lengths):
        scene.paint_slots(cell, "square", LAMP_ON, start, start + length)
        on.append([start, start + length])
        start += length + int(gaps[i + 1])
    distractors = scene.distractors(list(COLORS), SHAPES[1:])
    answer = COUNTS[count - 1]
    wrong = _pick(rng, [w for w in COUNTS[: max(4, max_count)] if w != answer], 3)
    meta = {"cell": list(cell), "count": count, "on_slots": on, "distractors": distractors}
    return [("count", "How many times does the light flash?", answer, wrong)], meta


def _needle(scene: Scene) -> tuple[list[Question], dict[str, Any]]:
    rng, cfg = scene.rng, scene.config
    shape, color = _pick(rng, SHAPES)[0], _pick(rng, list(COLORS))[0]
    slot = int(rng.integers(1, cfg.slots - 1))  # never the first or last slot: that would be a temporal extreme
    cell = scene.take_cell()
    scene.paint(cell, shape, COLORS[color], 2 * slot, 2 * slot + cfg.needle_frames)
    distractors = scene.distractors([c for c in COLORS if c != color], [s for s in SHAPES if s != shape])
    seen_shapes, seen_colors = [d["shape"] for d in distractors], [d["color"] for d in distractors]
    questions = [
        ("shape", "Which shape appears only briefly?", shape, _wrong(rng, shape, seen_shapes, SHAPES)),
        (
            "color",
            "What color is the shape that appears only briefly?",
            color,
            _wrong(rng, color, seen_colors, list(COLORS)),
        ),
    ]
    frames = list(range(2 * slot, 2 * slot + cfg.needle_frames))
    meta = {"cell": list(cell), "shape": shape, "color": color, "frames": frames, "distractors": distractors}
    return questions, meta


def _position(scene: Scene) -> tuple[list[Question], dict[str, Any]]:
    rng, grid, slots = scene.rng, scene.config.grid, scene.config.slots
    half = grid // 2
    quads = [int(q) for q in rng.permutation(4)[:3]]
    colors = _pick(rng, list(COLORS), 3)
    path = []
    for q, color, (s0, s1) in zip(quads, colors, _segments(slots, 3)):
        cell = scene.take_cell((int(rng.integers(half)) + half * (q // 2), int(rng.integers(half)) + half * (q % 2)))
        scene.paint_slots(cell, "square", COLORS[color], s0, s1)
        path.append({"cell": list(cell), "color": color, "position": quadrant(*cell, grid), "slots": [s0, s1]})
    distractors = scene.distractors([c for c in COLORS if c not in colors], SHAPES[1:])
    questions = [
        (
            p["color"],
            f"Where is the square when it is {p['color']}?",
            p["position"],
            [w for w in POSITIONS if w != p["position"]],
        )
        for p in path
    ]
    return questions, {"path": path, "distractors": distractors}


BUILDERS: dict[str, Callable[[Scene], tuple[list[Question], dict[str, Any]]]] = {
    "color_extremes": _color_extremes,
    "direction": _direction,
    "flash_count": _flash_count,
    "needle": _needle,
    "position": _position,
}
