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

The clips are painted by :mod:`tokpress.eval.synth.scene` (a static textured background; every object and event
aligned to Qwen's 28 px x 2-frame token cells), the five families' scenes and questions are built by
:mod:`tokpress.eval.synth.questions`, and :mod:`tokpress.eval.synth.export` exports a split as mp4 videos plus
``annotations.jsonl`` (:func:`export_split`) and reads it back (:func:`load_annotations`).

**Options and answers.** Options are short distinct words (:func:`question_vocabulary`): colours, directions,
count words, shape names and quadrants such as ``top-left``. A small model learns to emit the answer *word*, which
trains where fixed A-D letters stall; exported annotations carry letters too. The answer's place among the options
is uniform. A video may carry several questions (:func:`make_questions`; :func:`make_split` with
``all_questions=True``): start and end colour, shape and colour of the needle, one question per quadrant visited.

**Seeds.** A sample is fixed by ``(task, seed, config)``: the same triple gives byte-identical frames.
:func:`make_split` draws split ``s`` from seeds ``SPLIT_SEED_BASE[s] + offset + i``: train uses ``[0, 1e9)``,
val ``[1e9, 2e9)`` and test ``[2e9, 3e9)``, so the splits never share a seed. ``SynthConfig.seed`` is mixed into
every sample's random stream (a benchmark "namespace"), so two namespaces give unrelated videos.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tokpress.errors import ConfigError

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
    from tokpress.eval.synth.questions import BUILDERS  # imports this module: loaded on first use
    from tokpress.eval.synth.scene import Scene

    config = _check(task, seed, config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, TASKS.index(task), int(seed)]))
    scene = Scene(config, rng)
    questions, meta = BUILDERS[task](scene)
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


#: Names of :mod:`tokpress.eval.synth.export` that keep their documented path ``tokpress.eval.synth.tasks.<name>``.
_EXPORT_NAMES = ("export_split", "load_annotations")


def __getattr__(name: str) -> Any:
    """``export_split`` / ``load_annotations`` from :mod:`~tokpress.eval.synth.export` (which imports this module,
    hence the lazy look-up)."""
    if name in _EXPORT_NAMES:
        from tokpress.eval.synth import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
