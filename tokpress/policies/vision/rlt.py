"""``rlt`` — drop patches that repeat the previous temporal patch *before* the vision encoder runs (training-free
Run-Length Tokenization: Choudhury et al., NeurIPS 2024, "Don't Look Twice: Faster Video Transformers with
Run-Length Tokenization"; the criterion is also EVS's, moved from the LLM input to the pixels).

Algorithm: a video's pixel patches are grouped into *units* — the ``m x m`` patches of one temporal patch that the
model merges into one LLM token (Qwen: 2 x 2). Each unit is scored by how much it changed since the same unit of the
previous temporal patch: the mean absolute difference of its pixel values (RLT's L1 test; ``metric="cosine"``:
``1 - cos``, EVS's dissimilarity). Units of the first temporal patch have nothing to repeat and score ``+inf``. The
``budget`` highest-scoring units are kept (ties to the earlier unit); the encoder runs on the kept units only and each
dropped unit reuses the output of the unit it repeats (:attr:`Dropped.source`): the latest kept unit at the same
position in an earlier temporal patch.

Budget mapping: ``vision_ratio`` r keeps ``round(r * U)`` of a video's ``U`` units (= its LLM tokens), at least 1.
With no outer policy the LLM receives exactly the kept units, so r is also the LLM's token ratio.

Deviations from RLT: RLT drops every patch whose difference is below a threshold (``tau = 0.1`` on [0, 1] pixels),
so its token count depends on the content, and it adds a learned run-length embedding to the kept tokens; tokpress
keeps a promised count (the top-``budget`` differences, on the processor's normalised pixels) and adds nothing, since
the model was not trained with run lengths. A unit is the LLM token's patch group (not a single patch), so the kept
set maps onto whole LLM tokens. When the budget is smaller than one temporal patch's units, the first temporal patch
is thinned evenly in raster order (every unit of it still scores ``+inf``), and a dropped unit with no kept unit at its
position in any earlier temporal patch reuses the kept unit nearest in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.ops import topk_sorted
from tokpress.policies.base import PolicyConfig

METRICS = ("l1", "cosine")


@dataclass(frozen=True)
class RunLengthConfig(PolicyConfig):
    """Options of the ``rlt`` vision policy."""

    #: how a unit's change since the previous temporal patch is measured: ``"l1"`` (mean absolute pixel difference,
    #: RLT) or ``"cosine"`` (``1 - cos`` of the pixel vectors, EVS's dissimilarity)
    metric: str = "l1"

    def validate(self) -> None:
        self.check(self.metric in METRICS, f"metric must be one of {METRICS}, got {self.metric!r}")


@dataclass
class Dropped:
    """Which units of one video the encoder runs on.

    Attributes:
        keep: ``[U]`` bool, raster order ``(t, row, column)`` of units; exactly ``budget`` True.
        source: ``[U]`` long, for every unit the kept unit whose encoder output it takes (itself when kept).
    """

    keep: torch.Tensor
    source: torch.Tensor


class RunLengthVision:
    """Keep the units that changed most since the previous temporal patch (see the module docstring)."""

    name = "rlt"
    config_cls = RunLengthConfig
    #: runs before the encoder's first layer, on pixel patches
    where = "before"

    def __init__(self, config: RunLengthConfig) -> None:
        self.config = config

    def scores(self, units: torch.Tensor) -> torch.Tensor:
        """``[T, S]`` float32 change of each unit since the previous temporal patch (``+inf`` for ``t = 0``).

        Args:
            units: ``[T, S, P]`` pixel values of ``S`` units per temporal patch (``P`` values per unit).
        """
        x = units.float()
        if self.config.metric == "l1":  # one [T - 1, S, P] buffer, made absolute in place (memory-bound on CPU)
            change = torch.sub(x[1:], x[:-1]).abs_().mean(-1)
        else:
            change = 1.0 - F.cosine_similarity(x[1:], x[:-1], dim=-1)
        first = torch.full((1, x.shape[1]), float("inf"), device=x.device)
        return torch.cat([first, change])

    def select(self, units: torch.Tensor, budget: int) -> Dropped:
        """Keep ``budget`` of the ``T * S`` units of one video.

        Args:
            units: ``[T, S, P]`` pixel values per unit.
            budget: units to keep, ``1 <= budget <= T * S``.
        """
        frames, per_frame, _ = units.shape
        total = frames * per_frame
        if not 1 <= budget <= total:
            raise ValueError(f"budget must be in [1, {total}], got {budget}")
        device = units.device
        if budget < per_frame:  # the first temporal patch alone is over budget: thin it evenly
            chosen = torch.linspace(0, per_frame - 1, budget, device=device).round().long()
        else:
            chosen = topk_sorted(self.scores(units).flatten(), budget)
        keep = torch.zeros(total, dtype=torch.bool, device=device)
        keep[chosen] = True
        return Dropped(keep, repeat_source(keep.view(frames, per_frame)))


def repeat_source(keep: torch.Tensor) -> torch.Tensor:
    """For every unit the kept unit it repeats, as a flat index into ``keep`` ``[T, S]`` (raster order).

    A kept unit is its own source; a dropped one takes the latest kept unit at the same position ``s`` in an earlier
    temporal patch, else the kept unit nearest in raster order (the earlier on a tie). Needs at least one kept unit.

    Example: ``keep = [[1, 1], [0, 1], [0, 0]]`` -> ``[0, 1, 0, 3, 0, 3]``.
    """
    frames, per_frame = keep.shape
    device = keep.device
    flat = torch.arange(frames * per_frame, device=device).view(frames, per_frame)
    latest = torch.where(keep, flat, torch.full_like(flat, -1)).cummax(dim=0).values  # [T, S]
    kept = keep.flatten().nonzero().squeeze(1)
    units = flat.flatten()
    at = torch.searchsorted(kept, units)  # first kept unit at or after each unit, in [0, len(kept)]
    has_after, has_before = at < kept.numel(), at > 0
    after = kept[at.clamp(max=kept.numel() - 1)]
    before = kept[(at - 1).clamp(min=0)]
    nearest = torch.where(has_before & (~has_after | (units - before <= after - units)), before, after)
    return torch.where(latest.flatten() >= 0, latest.flatten(), nearest)
