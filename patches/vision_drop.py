"""The vision stage's hooks for encoders that take a variable-length patch sequence (the Qwen ViTs): drop whole
LLM-token patch groups *before* the first encoder layer, run every layer on the kept patches only.

The Qwen vision encoders (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) call every block as
``block(hidden [n, D], cu_seqlens=, max_seqlen=, position_embeddings=(cos, sin), ...)``: attention runs within the
segments ``cu_seqlens`` bounds (a temporal patch, or a Qwen2.5-VL window), so a shorter sequence with re-counted
bounds is a valid input, and each block's output rows follow its input rows. While the model encodes *videos*
(``get_video_features`` wrapped with ``functools.wraps``; images are left alone), hooks removed exactly by
:meth:`PatchDropStage.remove`:

* **the encoder** (pre-hook, before its forward): the vision policy picks the kept units of each video from the pixel
  patches and ``grid_thw`` (a unit = the ``m x m`` patches merged into one LLM token);
* **every block** (pre-hook): the first gathers the kept rows of the hidden states; every one gets the kept rows of
  ``position_embeddings`` and ``cu_seqlens`` / ``max_seqlen`` re-counted over the kept rows (empty segments removed);
  records the rows it processes (``Stats.vision_patches``);
* **the patch mergers** (forward hooks: the final merger and Qwen3-VL's deepstack mergers): their ``[kept units, D']``
  output is spread back to every unit, each dropped unit taking the row of the kept unit it repeats, so the model's
  own code (Qwen2.5-VL's window un-permutation, the split per video, the placeholder scatter) sees the full count.

The kept set of each video is handed to the engine (:meth:`take_kept`); with no outer policy the LLM receives only
the kept tokens. At ``vision_ratio=1`` every unit is kept and no hook changes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from tokpress.config import VisionStage, budget
from tokpress.patches.wrapping import unwrap_call, wrap_call
from tokpress.policies.vision import get_vision_policy
from tokpress.state import Stats

logger = logging.getLogger("tokpress")


@dataclass(frozen=True)
class PatchSequenceSite:
    """Where an adapter's drop-before-the-encoder vision stage hooks in.

    Attributes:
        visual: the vision encoder, called as ``visual(pixels [N, P], grid_thw=[V, 3])``; ``N = sum(t * h * w)``
            patch rows, each LLM token's ``unit`` patches consecutive, tokens in raster order ``(t, row, column)``.
        blocks: its layers, each called as ``block(hidden [n, D], cu_seqlens=, max_seqlen=, position_embeddings=)``.
        mergers: the modules mapping the last hidden states ``[n, D]`` to LLM tokens ``[n / unit, D']``.
        unit: patches per LLM token (``spatial_merge_size ** 2``).
        order: ``order(grid_thw)`` -> ``[U]`` raster index of each unit in the blocks' sequence order (Qwen2.5-VL's
            window order), or ``None`` when the sequence is in raster order.
        encoder: the base-model method that encodes the videos (wrapped to switch the hooks on).
    """

    visual: nn.Module
    blocks: nn.ModuleList
    mergers: tuple[nn.Module, ...]
    unit: int
    order: Callable[[torch.Tensor], torch.Tensor | None] = lambda grid: None
    encoder: str = "get_video_features"
    where: str = "before"

    @property
    def depth(self) -> int:
        return len(self.blocks)


@dataclass
class _Encoding:
    """One video encoding's kept rows, in the blocks' sequence order.

    Attributes:
        rows: ``[n]`` long, the kept rows among the ``total`` patch rows.
        prefix: ``[total + 1]`` long, kept rows before each row (re-counts any segment bound).
        fill: ``[U]`` long, for every unit (sequence order) the row of the mergers' output it takes.
        total: patch rows of the full sequence.
    """

    rows: torch.Tensor
    prefix: torch.Tensor
    fill: torch.Tensor
    total: int
    cache: dict = field(default_factory=dict)  # id(tensor) -> (tensor, its kept form)

    def bounds(self, cu: torch.Tensor, max_len) -> tuple[torch.Tensor, int | None]:
        """``cu_seqlens`` over the kept rows (empty segments dropped) and, when given, the new ``max_seqlen``."""
        hit = self.cache.get(id(cu))
        if hit is None:
            kept = torch.unique_consecutive(self.prefix.to(cu.device)[cu.long()]).to(cu.dtype)
            longest = None if max_len is None else int((kept[1:] - kept[:-1]).max())
            hit = self.cache[id(cu)] = (cu, kept, longest)
        return hit[1], (hit[2] if max_len is not None else None)

    def rows_of(self, pair: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The kept rows of each tensor of ``pair`` (the rotary ``(cos, sin)``, ``[total, d]`` each)."""
        hit = self.cache.get(id(pair))
        if hit is None:
            hit = self.cache[id(pair)] = (pair, tuple(t.index_select(0, self.rows.to(t.device)) for t in pair))
        return hit[1]


class PatchDropStage:
    """Installs and runs one drop-before-the-encoder :class:`~tokpress.config.VisionStage` (module docstring)."""

    #: the LLM follows the kept set when no outer policy is given
    passes_kept = True

    def __init__(self, adapter, config: VisionStage, clock: Callable[[torch.device], float]) -> None:
        self.adapter = adapter
        self.config = config
        self.policy = get_vision_policy(config.policy)(config.options)
        self.clock = clock
        self.active = False
        self.patches: list[int] = []  # per encoder block, patch rows of the last video encoding
        self.frames = 0
        self.patches_in = 0
        self.seconds = 0.0
        self.kept: list[torch.Tensor] = []  # per encoded video, ``[U]`` bool kept units (raster order)
        self._run: _Encoding | None = None
        self._site: PatchSequenceSite | None = None
        self._handles: list = []
        self._wrapper = None

    # ---- install / remove -------------------------------------------------------------------------------------
    def install(self) -> None:
        site: PatchSequenceSite = self.adapter.vision_stage_site()
        self._site = site
        self._wrapper = wrap_call(self.adapter.base, site.encoder, self._start, self._end)
        self._handles.append(site.visual.register_forward_pre_hook(self._plan, with_kwargs=True))
        for i, block in enumerate(site.blocks):
            self._handles.append(block.register_forward_pre_hook(partial(self._on_block, i), with_kwargs=True))
        for merger in site.mergers:
            self._handles.append(merger.register_forward_hook(self._spread))
        self.adapter.vision_units = self.spread_units

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        site = self._site or self.adapter.vision_stage_site()
        unwrap_call(self.adapter.base, site.encoder, self._wrapper)
        if self.adapter.__dict__.get("vision_units") == self.spread_units:
            del self.adapter.vision_units
        self.active, self._run = False, None
        self.kept.clear()

    # ---- per encoding -----------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.active = True
        self.patches, self.frames, self.patches_in, self.seconds = [], 0, 0, 0.0

    def _end(self) -> None:
        self.active, self._run = False, None

    def report(self, stats: Stats) -> None:
        """Copy the last video encoding's counts into ``stats`` (then forget them: one report per encoding)."""
        stats.vision_patches, stats.vision_frames, stats.vision_s = self.patches, self.frames, self.seconds
        stats.vision_patches_in = self.patches_in
        self.patches, self.frames, self.patches_in, self.seconds = [], 0, 0, 0.0

    def take_kept(self) -> list[torch.Tensor]:
        """The ``[U]`` bool kept units of each video encoded since the last call, in encoding order."""
        kept, self.kept = self.kept, []
        return kept

    def spread_units(self, values: torch.Tensor) -> torch.Tensor:
        """``[kept units, ...]`` per-unit values in the blocks' order -> ``[U, ...]`` (each dropped unit takes its
        source's row); unchanged outside a reduced encoding (used by the vision-attention capture)."""
        run = self._run
        if not self.active or run is None or values.shape[0] == run.fill.numel():
            return values
        return values.index_select(0, run.fill.to(values.device))

    # ---- hooks ------------------------------------------------------------------------------------------------
    def _plan(self, module, args, kwargs) -> None:
        """Pick each video's kept units from its pixel patches (before the encoder's forward runs)."""
        if not self.active:
            return None
        pixels = args[0] if args else kwargs["hidden_states"]
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        site = self._site
        t0 = self.clock(pixels.device)
        keeps, sources, row, unit_offset = [], [], 0, 0
        for t, h, w in grid.tolist():
            per_frame = h * w // site.unit
            units = pixels[row : row + t * h * w].reshape(t, per_frame, -1)
            dropped = self.policy.select(units, budget(self.config.ratio, t * per_frame))
            keeps.append(dropped.keep)
            sources.append(dropped.source + unit_offset)
            row, unit_offset = row + t * h * w, unit_offset + t * per_frame
        self.kept.extend(keeps)
        self.frames, self.patches_in = int(grid[:, 0].sum()), row
        keep, source = torch.cat(keeps), torch.cat(sources)
        if bool(keep.all()):
            self._run = None
        else:
            self._run = self._encoding(keep, source, site.order(grid), row)
        self.seconds += self.clock(pixels.device) - t0
        return None

    def _encoding(self, keep: torch.Tensor, source: torch.Tensor, order: torch.Tensor | None, total: int):
        """The kept rows in sequence order and, per unit, the merger-output row it takes."""
        if order is not None:
            order = order.to(keep.device)
            position = torch.argsort(order)  # raster unit -> its place in the sequence
            keep, source = keep[order], position[source[order]]
        rank = keep.cumsum(0) - 1  # place of each kept unit among the kept, sequence order
        rows_kept = keep.repeat_interleave(self._site.unit)
        return _Encoding(
            rows=rows_kept.nonzero().squeeze(1),
            prefix=F.pad(rows_kept.long().cumsum(0), (1, 0)),
            fill=rank[source],
            total=total,
        )

    def _on_block(self, index: int, module, args, kwargs):
        """Give the block the kept rows and the bounds and rotary rows that go with them; record its rows."""
        if not self.active:
            return None
        run = self._run
        hidden = args[0] if args else kwargs["hidden_states"]
        if run is None:
            self.patches.append(int(hidden.shape[0]))
            return None
        t0 = self.clock(hidden.device)
        if hidden.shape[0] == run.total:  # the first block: full sequence in
            hidden = hidden.index_select(0, run.rows.to(hidden.device))
        if kwargs.get("cu_seqlens") is not None:
            kwargs["cu_seqlens"], longest = run.bounds(kwargs["cu_seqlens"], kwargs.get("max_seqlen"))
            if longest is not None:
                kwargs["max_seqlen"] = longest
        if kwargs.get("position_embeddings") is not None:
            kwargs["position_embeddings"] = run.rows_of(kwargs["position_embeddings"])
        self.patches.append(int(hidden.shape[0]))
        self.seconds += self.clock(hidden.device) - t0
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    def _spread(self, module, args, output):
        """Every unit's merger row: the kept units' own, the dropped units' their sources'."""
        run = self._run
        if not self.active or run is None:
            return None
        kept_units = int(run.rows.numel()) // self._site.unit
        if output.shape[0] != kept_units:
            raise RuntimeError(
                f"tokpress vision stage: a patch merger returned {output.shape[0]} rows for {kept_units} kept units"
            )
        return output.index_select(0, run.fill.to(output.device))
