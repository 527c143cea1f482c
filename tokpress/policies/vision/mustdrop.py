"""``mustdrop`` (vision stage) — MustDrop's local spatial merging inside the vision encoder (Liu et al., arXiv
2411.10803; code ``liuting20/MustDrop``, ``local_merge.py`` and ``clip_encoder.py``), for SigLIP (LLaVA-OneVision).

Algorithm: after encoder layer ``k`` (the authors': the first, ``k = 0``) each frame's square patch grid is tiled
into ``window x window`` windows (the authors' 3x3; SigLIP's 27x27 grid has 81) and a window's similarity is the
mean cosine similarity of its patches' distinct pairs (float32, on the layer's output). The most similar windows
merge: their patches become one token, the size-weighted mean (the authors' ``merge_wavg``), which takes the place
of the window's last patch (their ``dst``). Later layers run on the merged tokens *without* proportional attention
(the authors' encoder passes no size bias); at the layer whose output the model reads, every merged token is copied
back to the patches it absorbed (the vision stage's usual restore), so the projector, the pooling and the LLM see
the original grid. The key token set is the outer stage's part (``mustdrop`` outer policy): it reads the encoder's
attention at the feature layer and marks the tokens no later stage may drop.

Budget mapping: ``vision_ratio`` r keeps ``round(r * N)`` tokens per frame in every layer after ``k``. The authors
merge every window whose similarity is at least 0.8, the same number in every frame of the batch (the minimum over
frames); tokpress merges each frame's ``R // (window**2 - 1)`` most similar windows (``R = N - target``), then the
``R mod (window**2 - 1)`` left over from part of the next window (its last patches into its last one); with
``spatial_threshold`` set, only windows at or above it in every frame (the authors' rule). When the windows cannot
remove enough (``r`` below about ``1 / window**2``, or few windows above the threshold), ToMe's bipartite rounds
(:mod:`tokpress.policies.vision.merge`) finish the per-frame budget — a tokpress addition, so the promised count
holds.

Deviations: a promised count instead of the threshold (above); frames are merged independently, each by its own
windows' similarities, but every frame merges the same count (the authors' code takes one count for the whole
encoder batch, the minimum over its images); grids that are not square (a CLIP [CLS] token, odd tilings) are
refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.policies.base import Grid, PolicyConfig
from tokpress.policies.outer.mustdrop import check_window_options, window_members, window_similarity
from tokpress.policies.vision.merge import bipartite_slots, compose, merge_schedule, merge_weighted
from tokpress.policies.vision.tome import Merged


@dataclass(frozen=True)
class MustDropVisionConfig(PolicyConfig):
    """Options of the ``mustdrop`` vision policy."""

    #: side of the merging windows, in patches (the authors' 3)
    window: int = 3
    #: ``None``: merge the most similar windows up to the budget; a cosine: only windows at or above it (0.8)
    spatial_threshold: float | None = None

    def validate(self) -> None:
        check_window_options(self)


def window_counts(similarity: torch.Tensor, remove: int, per: int, threshold: float | None) -> tuple[int, int]:
    """``(full, left)``: whole windows each frame merges (``per`` patches removed each) and the patches a partial
    next window gives, towards removing ``remove`` patches per frame; ``similarity`` ``[F, W]``."""
    usable = similarity.shape[1]
    if threshold is not None:  # the authors' rule: windows at or above it, the same number in every frame
        usable = int((similarity >= threshold).sum(1).min())
    full = min(remove // per, usable)
    left = remove - full * per if full < usable else 0
    return full, min(left, per)


class MustDropVision:
    """MustDrop's window merging after one encoder layer (see the module docstring)."""

    name = "mustdrop"
    config_cls = MustDropVisionConfig
    #: runs inside the encoder, after one of its layers
    where = "inside"
    #: later layers get no ``log(size)`` bias: the authors' encoder runs the merged tokens as they are
    proportional_attention = False
    #: matches by the layer's output, not its keys
    needs_keys = False

    def __init__(self, config: MustDropVisionConfig) -> None:
        self.config = config

    @staticmethod
    def default_layer(depth: int) -> int:
        """The authors merge after the encoder's first layer."""
        return 0

    def merge(self, hidden: torch.Tensor, metric: torch.Tensor, target: int) -> Merged:
        """Merge each frame's ``n`` patches down to ``target`` tokens: windows first, bipartite rounds after.

        Args:
            hidden: ``[F, n, D]`` the layer's output; ``n`` must be a square grid.
            metric: ``[F, n, d]`` what windows are compared by (``hidden`` itself here).
            target: tokens per frame to keep, ``1 <= target <= n``.
        """
        frames, n, _ = hidden.shape
        side = math.isqrt(n)
        if side * side != n:
            raise InputError(
                f"vision policy 'mustdrop' tiles a square patch grid; this encoder's frames have {n} tokens "
                "(a [CLS] token or a non-square tiling): use vision='tome'"
            )
        device = hidden.device
        members = window_members(Grid(1, side, side), self.config.window).to(device)  # [W, m]
        group = torch.arange(n, device=device).repeat(frames, 1)  # [F, n]: the patch each patch merges into
        if members.numel():
            similarity = window_similarity(metric, members)
            order = torch.sort(similarity, dim=1, descending=True, stable=True).indices  # [F, W]
            full, left = window_counts(similarity, n - target, members.shape[1] - 1, self.config.spatial_threshold)
            chosen = members[order[:, :full]]  # [F, full, m]
            group.scatter_(1, chosen.flatten(1), chosen[..., -1:].expand_as(chosen).flatten(1))
            if left and full < order.shape[1]:
                tail = members[order[:, full]][:, -(left + 1) :]  # [F, left + 1]
                group.scatter_(1, tail, tail[:, -1:].expand_as(tail))
        alive = group == torch.arange(n, device=device)
        rank = alive.long().cumsum(1) - 1
        slot = rank.gather(1, group)
        out = int(alive[0].sum())
        size = torch.ones(frames, n, device=device)
        merged, merged_size = merge_weighted(hidden, size, slot, out)
        source = slot
        for r in merge_schedule(out, target):  # the windows could not reach the target: ToMe's rounds finish it
            step = bipartite_slots(merged, r)
            merged, merged_size = merge_weighted(merged, merged_size, step, merged.shape[1] - r)
            source = compose(source, step)
        return Merged(merged, merged_size, source)
