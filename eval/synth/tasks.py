"""Procedural video question answering: a benchmark that needs no download, deterministic by seed.

Each sample is a short RGB video (``[T, H, W, 3]`` uint8), a question, four option *words* and the answer. Five task
families each need a different kind of information, so compression methods are told apart by what they throw away:

- ``color_extremes`` (temporal extremes): a square is one colour at the start, another in the middle and a third at
  the end; "What color is the square at the start / at the end?". All three colours are options, so knowing which
  colours occur is not enough: the first (last) temporal token must survive, and its order must be known. Fails for
  methods that drop or merge away the first/last frames, or pool the clip over time.
- ``direction`` (temporal change): a square jumps cell by cell left, right, up or down. Needs where the object is
  early *and* late. Fails for methods that keep a single frame or average positions over time.
- ``flash_count`` (dense temporal counting): a lamp turns on 1-4 times (16 frames), each flash one or two temporal
  tokens long with at least one token of darkness between flashes. Fails for frame dropping and for temporal
  merging/pooling that joins neighbouring tokens: flashes are then lost or fused.
- ``needle`` (temporal needle): a shape shows in only one temporal token (two frames; ``needle_frames=1`` for one)
  in the middle of the clip, next to static distractor shapes that stay all the time and are also offered as
  options. "Which shape / what color appears only briefly?". Uniform frame dropping, keyframe selection and
  aggressive temporal merging lose it; saliency alone does not find it because the distractors are as salient.
- ``position`` (spatial detail): a square visits three quadrants, with a different colour in each;
  "Where is the square when it is red?". One token holds the answer (colour and place together), so spatial
  pruning or pooling that drops or blurs that token, or merges it with another place, fails.

All scenes sit on a **static textured background** (gratings plus blocky noise, a tinted mid-grey, with weak
per-frame sensor noise), so most tokens are near-duplicates of the same token in the previous frame: there is
real redundancy for temporal merging to exploit, and the evidence is in the few tokens that change.
``distractors`` static objects (non-square shapes, colours that are not the answer) are added on free cells.

**Token-cell alignment.** Qwen2-VL / Qwen2.5-VL cut frames into 14 px patches, merge 2x2 patches, and join 2
frames (the temporal patch) per LLM token: one video token covers 28x28 pixels x 2 frames. Objects are therefore
drawn inside ``cell`` x ``cell`` cells of the frame grid (default 28 px), and every event starts on an even frame
and lasts a whole number of 2-frame steps ("slots"). Then each piece of evidence lands in whole tokens instead of
being averaged with the background or with a neighbouring frame inside one token, so an accuracy drop can be
blamed on the compression method, not on tokenisation blur, and a tiny model can learn the tasks from 16 frames
of 112x112 (4x4 cells x 8 slots = 128 tokens). ``needle_frames=1`` breaks the rule on purpose (a harder needle).
Other model families (LLaVA-OneVision: one frame per token group) are unaffected by the alignment.

**Options and answers.** Options are short distinct words (:func:`question_vocabulary`): colours, directions,
count words, shape names and quadrants such as ``top-left``. A small model learns to emit the answer *word*, which
trains where fixed A-D letters stall; exported annotations carry letters too. The answer's place among the options
is uniform. A video may carry several questions (:func:`make_questions`; :func:`make_split` with
``all_questions=True``): start and end colour, shape and colour of the needle, one question per quadrant visited.

**Seeds.** A sample is fixed by ``(task, seed, config)``: the same triple gives byte-identical frames.
:func:`make_split` draws split ``s`` from seeds ``SPLIT_SEED_BASE[s] + offset + i``: train uses ``[0, 1e9)``,
val ``[1e9, 2e9)`` and test ``[2e9, 3e9)``, so the splits never share a seed. ``SynthConfig.seed`` is mixed into
every sample's random stream (a benchmark "namespace"), so two namespaces give unrelated videos.

**Export layout** (:func:`export_split`), readable by a generic local-dataset loader as Video-MME / MVBench are::

    out_dir/
      videos/<video_id>.mp4       H.264 (yuv420p), ``fps`` frames per second (default 2: qwen-vl-utils' default
                                  sampling rate, so the default loader sees exactly the T frames)
      annotations.jsonl           one JSON object per question, fields below
      info.json                   config, tasks, vocabulary, counts

    {"video": "videos/<video_id>.mp4", "video_id", "videoID" (Video-MME), "question_id", "task", "task_type",
     "question", "options": ["A. red", "B. blue", ...] (Video-MME), "candidates": ["red", "blue", ...] (MVBench),
     "answer": "A" (letter), "answer_text": "red", "answer_index": 0, "num_frames", "fps", "duration",
     "split", "seed", "metadata": {...ground truth of the scene...}}
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tokpress.errors import ConfigError, InputError
from tokpress.eval.video import write_video

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("color_extremes", "direction", "flash_count", "needle", "position")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 200),
    "orange": (250, 130, 0),
    "cyan": (0, 210, 225),
    "pink": (255, 120, 200),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
COUNTS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six")
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond", "ring")
POSITIONS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
LAMP_OFF: tuple[int, int, int] = (40, 40, 40)
LAMP_ON: tuple[int, int, int] = (250, 250, 250)
LETTERS = "ABCD"
SPLIT_SEED_BASE: dict[str, int] = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}
SPLIT_SEED_SPAN = 1_000_000_000
#: Colour codes of :attr:`Sample.layout` (code = index; 0 = nothing painted on the cell).
LAYOUT_COLORS: tuple[str, ...] = ("none", *COLORS, "lamp-off", "lamp-on")
#: Frame rate of a synth video (the export writes it; the shipped model's temporal positions assume it).
SYNTH_FPS = 2.0
ANNOTATION_FILE = "annotations.jsonl"
INFO_FILE = "info.json"


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (defaults: 16 frames of 112x112, 4x4 cells of 28 px = Qwen's token cells)."""

    frames: int = 16  # T; even (2-frame temporal patch), >= 8
    size: int = 112  # frame height and width in pixels; a multiple of ``cell``
    cell: int = 28  # object cell in pixels (Qwen-VL: 14 px patch x 2x2 merge); the grid side size // cell is even
    distractors: int = 2  # static distractor objects per video (clipped to the free cells)
    seed: int = 0  # namespace mixed into every sample's random stream
    texture: bool = True  # textured background; False: flat tinted grey
    noise: float = 2.0  # std of the per-frame sensor noise in grey levels
    needle_frames: int = 2  # frames the needle shows: 2 (one temporal token) or 1 (half a token, harder)

    def __post_init__(self) -> None:
        if self.frames < 8 or self.frames % 2:
            raise ConfigError(f"frames must be even and >= 8 (2-frame temporal slots), got {self.frames}")
        if self.cell < 8 or self.cell % 2 or self.size % self.cell:
            raise ConfigError(f"size ({self.size}) must be a multiple of an even cell >= 8 (got cell={self.cell})")
        if self.grid < 4 or self.grid % 2:
            raise ConfigError(f"size // cell must be even and >= 4 (quadrants, paths), got {self.grid}")
        if self.distractors < 0 or self.noise < 0 or self.seed < 0:
            raise ConfigError("distractors, noise and seed must be >= 0")
        if self.needle_frames not in (1, 2):
            raise ConfigError(f"needle_frames must be 1 or 2, got {self.needle_frames}")

    @property
    def grid(self) -> int:
        """Cells per side."""
        return self.size // self.cell

    @property
    def slots(self) -> int:
        """2-frame temporal slots (one Qwen temporal token each)."""
        return self.frames // 2


@dataclass
class Sample:
    """One question about one video. Samples from :func:`make_questions` share one ``frames`` array."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    task: str
    question: str
    options: list[str]  # four distinct words
    answer: int  # index into ``options``
    answer_word: str
    metadata: dict[str, Any] = field(default_factory=dict)  # ground truth of the scene (JSON-serialisable)
    seed: int = 0
    video_id: str = ""
    layout: np.ndarray | None = None  # [T, grid, grid, 2] uint8: (LAYOUT_COLORS code, 1 + SHAPES index), 0 = empty

    @property
    def answer_letter(self) -> str:
        """The answer as a letter A-D."""
        return LETTERS[self.answer]


@functools.lru_cache(maxsize=64)
def shape_mask(shape: str, cell: int) -> np.ndarray:
    """``[cell, cell]`` bool mask of ``shape`` drawn in a cell, with a margin of ``cell // 14`` pixels."""
    margin = max(1, cell // 14)
    inner = cell - 2 * margin
    c = (np.arange(inner, dtype=np.float64) + 0.5) / inner * 2 - 1  # pixel centres in [-1, 1]
    v, u = np.meshgrid(c, c, indexing="ij")  # v: down, u: right
    r2 = u * u + v * v
    masks = {
        "square": np.ones_like(u, dtype=bool),
        "circle": r2 <= 1.0,
        "ring": (r2 <= 1.0) & (r2 >= 0.55**2),
        "diamond": np.abs(u) + np.abs(v) <= 1.0,
        "cross": (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34),
        "triangle": np.abs(u) <= (v + 1) / 2,  # apex up, base at the bottom
    }
    if shape not in masks:
        raise ConfigError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    out = np.zeros((cell, cell), dtype=bool)
    out[margin : margin + inner, margin : margin + inner] = masks[shape]
    out.setflags(write=False)
    return out


def question_vocabulary() -> list[str]:
    """Every option word of every task, in a fixed order."""
    return [*COLORS, *DIRECTIONS, *COUNTS, *SHAPES, *POSITIONS]


def quadrant(row: int, col: int, grid: int) -> str:
    """The :data:`POSITIONS` word of cell ``(row, col)`` in a ``grid`` x ``grid`` layout."""
    half = grid // 2
    return POSITIONS[2 * int(row >= half) + int(col >= half)]


class _Scene:
    """Float frames under construction: a static background, objects painted per slot range, then noise."""

    def __init__(self, config: SynthConfig, rng: np.random.Generator) -> None:
        self.config, self.rng = config, rng
        self.frames = np.broadcast_to(self._background(), (config.frames, config.size, config.size, 3)).copy()
        self.free = [(r, c) for r in range(config.grid) for c in range(config.grid)]
        self.layout = np.zeros((config.frames, config.grid, config.grid, 2), dtype=np.uint8)

    def _background(self) -> np.ndarray:
        cfg, rng = self.config, self.rng
        base = rng.uniform(95, 145)
        tint = rng.uniform(-10, 10, size=3)
        grey = np.full((cfg.size, cfg.size), base, dtype=np.float64)
        if cfg.texture:
            yy, xx = np.mgrid[0 : cfg.size, 0 : cfg.size].astype(np.float64)
            for _ in range(2):  # two random gratings, periods 6-24 px
                theta, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 24), rng.uniform(0, 2 * np.pi)
                wave = np.sin(2 * np.pi / period * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
                grey += rng.uniform(5, 11) * wave
            block = int(rng.choice([4, 7, 14]))
            side = -(-cfg.size // block)
            blocks = rng.uniform(-9, 9, size=(side, side))
            grey += np.repeat(np.repeat(blocks, block, 0), block, 1)[: cfg.size, : cfg.size]
        return np.clip(grey[..., None] + tint, 0, 255).astype(np.float32)

    def take_cell(self, cell: tuple[int, int] | None = None) -> tuple[int, int]:
        """Reserve ``cell`` (or a random free one) so no other object is drawn there."""
        if cell is None:
            cell = self.free[int(self.rng.integers(len(self.free)))]
        self.free.remove(cell)
        return cell

    def paint(self, cell: tuple[int, int], shape: str, rgb: Sequence[int], t0: int = 0, t1: int | None = None) -> None:
        """Draw ``shape`` in ``rgb`` on ``cell`` for frames ``[t0, t1)``."""
        size = self.config.cell
        y, x = cell[0] * size, cell[1] * size
        self.frames[t0:t1, y : y + size, x : x + size][:, shape_mask(shape, size)] = np.asarray(rgb, np.float32)
        self.layout[t0:t1, cell[0], cell[1]] = (_COLOR_CODE[tuple(int(v) for v in rgb)], 1 + SHAPES.index(shape))

    def paint_slots(self, cell: tuple[int, int], shape: str, rgb: Sequence[int], s0: int, s1: int) -> None:
        """Draw for the 2-frame slots ``[s0, s1)``."""
        self.paint(cell, shape, rgb, 2 * s0, 2 * s1)

    def distractors(self, colors: Sequence[str], shapes: Sequence[str]) -> list[dict[str, Any]]:
        """Static objects on free cells; shapes and colours from ``shapes`` / ``colors``, distinct where possible."""
        n = min(self.config.distractors, len(self.free))
        out = []
        for i in range(n):
            shape_pool = list(shapes) if n > len(shapes) else [s for s in shapes if s not in {d["shape"] for d in out}]
            color_pool = list(colors) if n > len(colors) else [c for c in colors if c not in {d["color"] for d in out}]
            shape = shape_pool[int(self.rng.integers(len(shape_pool)))]
            color = color_pool[int(self.rng.integers(len(color_pool)))]
            cell = self.take_cell()
            self.paint(cell, shape, COLORS[color])
            out.append({"cell": list(cell), "shape": shape, "color": color, "index": i})
        return out

    def render(self) -> np.ndarray:
        """Add sensor noise, round and clip to ``[T, H, W, 3]`` uint8."""
        frames = self.frames
        if self.config.noise > 0:
            frames = frames + self.rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(self.config.noise)
        return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


_COLOR_CODE: dict[tuple[int, ...], int] = {
    **{rgb: 1 + i for i, rgb in enumerate(COLORS.values())},
    LAMP_OFF: LAYOUT_COLORS.index("lamp-off"),
    LAMP_ON: LAYOUT_COLORS.index("lamp-on"),
}


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


def _color_extremes(scene: _Scene) -> tuple[list[Question], dict[str, Any]]:
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


def _direction(scene: _Scene) -> tuple[list[Question], dict[str, Any]]:
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


def _flash_count(scene: _Scene) -> tuple[list[Question], dict[str, Any]]:
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


def _needle(scene: _Scene) -> tuple[list[Question], dict[str, Any]]:
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


def _position(scene: _Scene) -> tuple[list[Question], dict[str, Any]]:
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


_BUILDERS = {
    "color_extremes": _color_extremes,
    "direction": _direction,
    "flash_count": _flash_count,
    "needle": _needle,
    "position": _position,
}


def _check(task: str, seed: int, config: SynthConfig | None) -> SynthConfig:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    return SynthConfig() if config is None else config


def make_questions(task: str, seed: int, config: SynthConfig | None = None) -> list[Sample]:
    """Every question the video of ``(task, seed, config)`` carries (1-3), all sharing one ``frames`` array.

    ``color_extremes``: start and end colour; ``needle``: shape and colour; ``position``: one per quadrant visited;
    ``direction`` and ``flash_count``: one. Option order is random per question (uniform answer position).
    """
    config = _check(task, seed, config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, TASKS.index(task), int(seed)]))
    scene = _Scene(config, rng)
    questions, meta = _BUILDERS[task](scene)
    frames = scene.render()
    video_id = f"{task}_{int(seed):010d}" if config.seed == 0 else f"n{config.seed}_{task}_{int(seed):010d}"
    samples = []
    for variant, text, answer, wrong in questions:
        words = [answer, *wrong]
        options = [words[int(i)] for i in rng.permutation(4)]
        samples.append(
            Sample(
                frames=frames,
                task=task,
                question=text,
                options=options,
                answer=options.index(answer),
                answer_word=answer,
                metadata={"variant": variant, **meta},
                seed=int(seed),
                video_id=video_id,
                layout=scene.layout,
            )
        )
    return samples


def make_sample(task: str, seed: int, config: SynthConfig | None = None) -> Sample:
    """One sample of ``task``: the video of ``(task, seed, config)`` and one of its questions, chosen by the seed."""
    config = _check(task, seed, config)
    samples = make_questions(task, seed, config)
    pick = np.random.default_rng(np.random.SeedSequence([config.seed, TASKS.index(task), int(seed), 1]))
    return samples[int(pick.integers(len(samples)))]


def split_seeds(split: Literal["train", "val", "test"], n: int, offset: int = 0) -> range:
    """The seeds of samples ``offset .. offset + n - 1`` of ``split`` (disjoint ranges, see the module doc)."""
    if split not in SPLIT_SEED_BASE:
        raise ConfigError(f"unknown split {split!r}; choose one of {tuple(SPLIT_SEED_BASE)}")
    if n < 0 or offset < 0 or offset + n > SPLIT_SEED_SPAN:
        raise ConfigError(f"need 0 <= offset and offset + n <= {SPLIT_SEED_SPAN}, got offset={offset}, n={n}")
    base = SPLIT_SEED_BASE[split]
    return range(base + offset, base + offset + n)


def split_of_seed(seed: int) -> str:
    """The split whose seed range holds ``seed``."""
    for split, base in SPLIT_SEED_BASE.items():
        if base <= seed < base + SPLIT_SEED_SPAN:
            return split
    raise ConfigError(f"seed {seed} is outside every split range")


def make_split(
    split: Literal["train", "val", "test"],
    n: int,
    config: SynthConfig | None = None,
    tasks: Sequence[str] | None = None,
    *,
    offset: int = 0,
    all_questions: bool = False,
) -> list[Sample]:
    """``n`` videos of ``split``, tasks in turn (video ``i`` has task ``tasks[i % len(tasks)]``).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; each has its own seed range, so splits never share a video.
        n: number of videos.
        config: generator knobs (default :class:`SynthConfig()`).
        tasks: task names (default all of :data:`TASKS`).
        offset: skip the first ``offset`` videos of the split (draw fresh training data in chunks).
        all_questions: one sample per question of each video (:func:`make_questions`) instead of one per video.
    """
    config = SynthConfig() if config is None else config
    tasks = TASKS if tasks is None else tuple(tasks)
    if not tasks or any(t not in TASKS for t in tasks):
        raise ConfigError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
    out: list[Sample] = []
    for i, seed in enumerate(split_seeds(split, n, offset), start=offset):
        task = tasks[i % len(tasks)]
        batch = make_questions(task, seed, config) if all_questions else [make_sample(task, seed, config)]
        for sample in batch:
            sample.metadata["split"] = split
        out.extend(batch)
    logger.debug("made %d %s samples from %d videos", len(out), split, n)
    return out


def export_split(
    samples: Sequence[Sample],
    out_dir: str | Path,
    *,
    fps: float = SYNTH_FPS,
    codec: str | None = None,
    crf: int = 10,
) -> Path:
    """Write ``samples`` as mp4 videos plus ``annotations.jsonl`` and ``info.json`` (layout in the module doc).

    Samples that share a video (same ``video_id``) share one file. Returns the annotation file's path.

    Args:
        samples: from :func:`make_split`, :func:`make_questions` or :func:`make_sample`.
        out_dir: created if missing; existing files of the same names are overwritten.
        fps: frame rate written into the files (default 2, the default sampling rate of qwen-vl-utils).
        codec: an FFmpeg encoder name; default the first available of libx264, h264, libopenh264, mpeg4.
        crf: x264 quality (lower is closer to the frames; 10 keeps colours and edges for the solvers).
    """
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    written: dict[str, np.ndarray] = {}
    per_video: dict[str, int] = {}
    codecs: set[str] = set()
    records = []
    for s in samples:
        rel = f"videos/{s.video_id}.mp4"
        if s.video_id not in written:
            codecs.add(write_video(s.frames, out / rel, fps, codec=codec, crf=crf))
            written[s.video_id] = s.frames
        elif written[s.video_id] is not s.frames and not np.array_equal(written[s.video_id], s.frames):
            raise InputError(f"two samples named {s.video_id} have different frames (mixed configs?); export apart")
        k = per_video[s.video_id] = per_video.get(s.video_id, -1) + 1
        records.append(
            {
                "video": rel,
                "video_id": s.video_id,
                "videoID": s.video_id,
                "question_id": f"{s.video_id}_q{k}",
                "task": s.task,
                "task_type": s.task,
                "question": s.question,
                "options": [f"{LETTERS[i]}. {w}" for i, w in enumerate(s.options)],
                "candidates": list(s.options),
                "answer": s.answer_letter,
                "answer_text": s.answer_word,
                "answer_index": s.answer,
                "num_frames": int(s.frames.shape[0]),
                "fps": fps,
                "duration": s.frames.shape[0] / fps,
                "split": s.metadata.get("split"),
                "seed": s.seed,
                "metadata": s.metadata,
            }
        )
    path = out / ANNOTATION_FILE
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    tasks = sorted({r["task"] for r in records})
    info = {
        "format": "tokpress-synth-v1",
        "annotations": ANNOTATION_FILE,
        "num_videos": len(written),
        "num_questions": len(records),
        "questions_per_task": {t: sum(r["task"] == t for r in records) for t in tasks},
        "codecs": sorted(codecs),
        "fps": fps,
        "vocabulary": question_vocabulary(),
        "frame_shapes": sorted({tuple(int(d) for d in f.shape) for f in written.values()}),
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    logger.info("exported %d questions on %d videos to %s", len(records), len(written), out)
    return path


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Records of an exported ``annotations.jsonl`` (or of the directory holding one); ``video`` is relative to it."""
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATION_FILE
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not a JSON object ({e.msg}); one JSON object per line") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records
