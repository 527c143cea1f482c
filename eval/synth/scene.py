"""The canvas the task builders of :mod:`tokpress.eval.synth.questions` paint on: background, objects, noise.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokpress.eval.synth.tasks import COLORS, LAMP_OFF, LAMP_ON, LAYOUT_COLORS, SHAPES, SynthConfig, shape_mask


class Scene:
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
        self.layout[t0:t1, cell[0], cell[1]] = (COLOR_CODE[tuple(int(v) for v in rgb)], 1 + SHAPES.index(shape))

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


COLOR_CODE: dict[tuple[int, ...], int] = {
    **{rgb: 1 + i for i, rgb in enumerate(COLORS.values())},
    LAMP_OFF: LAYOUT_COLORS.index("lamp-off"),
    LAMP_ON: LAYOUT_COLORS.index("lamp-on"),
}
