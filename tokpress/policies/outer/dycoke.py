"""``dycoke`` (outer) — DyCoke's temporal token merging, TTM (Tao et al., CVPR 2025, "DyCoke: Dynamic Compression of
Tokens for Fast Video Large Language Models"). The decode-time KV selection is the inner policy of the same name.

Algorithm: frames are taken in windows of four, ``a .. a+3``. Frame ``a`` is kept whole (an *anchor*). Frames
``a+1`` and ``a+2`` are compared with frame ``a``, frame ``a+3`` with frame ``a+2``: per spatial position, the
cosine similarity (float32) between the token and the token at the same position of its reference frame; a compared
frame keeps its least similar tokens and drops the most similar ones (the "merge" is a drop, no averaging).
Similarities are always taken between original features, so all compared frames are scored in one batched op.

Last window (as the reference code and methods.md Appendix B): its frame ``a+2`` is not compared with ``a`` but
kept whole, because the reference's second pass stops one window early (``range(0, T - 4, 4)``); frame ``a+3`` is
still compared with ``a+2``. ``last_window_third_whole=False`` compares it with ``a`` like every other window.

Budget mapping: the paper's knob is the pruning rate ``k`` — every compared frame keeps ``int((1 - k) * P)`` of its
``P`` tokens, anchors keep all. tokpress solves for the per-frame count instead, so that the total is exactly
``budget``: with ``A`` anchor frames and ``C`` compared frames, ``R = budget - A * P`` tokens are shared by the
compared frames, ``q = R // C`` each (i.e. ``k = 1 - q / P``), and the ``R mod C`` leftover tokens go one each to
the compared frames whose next candidate (its ``q + 1``-th least similar token) is least similar to its reference
(ties: earlier frame). ``ttm_retain_ratio(k, T, P)`` gives the ``retain_ratio`` at which the reference's ``k``
is reproduced exactly (e.g. ``k = 0.7``, ``T = 32``, ``P = 196``: 3098 / 6272 = 0.4939).

Below the paper's floor (``budget < A * P``: the anchors alone exceed the budget) every compared frame keeps
nothing and the anchors are thinned like ``uniform``: each anchor frame keeps ``floor`` or ``ceil`` of
``budget / A`` tokens, evenly spaced in raster order. An anchor has no reference frame, so there is no similarity
order to prune it by, and even spacing keeps every row of the frame covered.

Deviations from the reference code (``KD-TAO/DyCoke``, ``llava_arch.dycole_ttm``):

- Exact budget instead of a fixed per-frame count (above); the per-frame count is the same at the reference's own
  ratio.
- Kept tokens stay in raster order at their original positions (the engine's convention); the reference
  concatenates each frame's survivors in similarity-rank order and renumbers positions contiguously.
- With an odd number of frames the reference's pair loop silently drops the unpaired last frame. tokpress applies
  the window rule to it: it is an anchor (window start, or the last window's third frame).
- Ties in similarity are broken towards the lower position (stable sort) for determinism.
- The layout-specific newline token (LLaVA-OneVision) is not part of the grid; the engine keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.ops import topk_sorted
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.policies.outer.uniform import uniform_indices
from tokpress.registry import register_policy


@dataclass(frozen=True)
class DyCokeTTMConfig(PolicyConfig):
    last_window_third_whole: bool = True
    """Keep frame ``a+2`` of the last window whole, as the reference code does; False compares it with ``a``."""

    def validate(self) -> None:
        self.check(
            isinstance(self.last_window_third_whole, bool),
            f"last_window_third_whole must be True or False, got {self.last_window_third_whole!r}",
        )


def frame_references(frames: int, last_window_third_whole: bool = True, device=None) -> torch.Tensor:
    """``[T]`` reference frame of every frame, ``-1`` for anchors (frames kept whole by the window rule).

    Example: ``frame_references(8) -> [-1, 0, 0, 2, -1, 4, -1, 6]`` (the last window's third frame is an anchor).
    """
    t = torch.arange(frames, device=device)
    offset = t % 4
    start = t - offset
    ref = torch.where(offset == 2, start, t - 1)  # a+1 -> a, a+2 -> a, a+3 -> a+2
    anchor = offset == 0
    if last_window_third_whole:
        anchor |= (offset == 2) & (start + 4 >= frames)
    return ref.masked_fill(anchor, -1)


def ttm_retain_ratio(k: float, frames: int, per_frame: int, last_window_third_whole: bool = True) -> float:
    """Fraction of tokens the reference keeps with pruning rate ``k``: anchors whole, ``int((1-k) P)`` elsewhere."""
    ref = frame_references(frames, last_window_third_whole)
    anchors = int((ref < 0).sum())
    return (anchors * per_frame + (frames - anchors) * int((1 - k) * per_frame)) / (frames * per_frame)


def ttm_keep(x: torch.Tensor, budget: int, last_window_third_whole: bool = True) -> torch.Tensor:
    """Sorted indices of the ``budget`` tokens TTM keeps of ``x`` ``[T, P, D]`` (raster order ``t * P + p``)."""
    frames, per_frame = x.shape[:2]
    device = x.device
    ref = frame_references(frames, last_window_third_whole, device)
    anchors = (ref < 0).nonzero().squeeze(1)
    compared = (ref >= 0).nonzero().squeeze(1)
    floor = anchors.numel() * per_frame
    if budget <= floor:  # the anchors alone fill the budget: thin them evenly, drop every compared frame
        idx = uniform_indices(anchors.numel(), per_frame, budget, device)
        return (anchors[idx // per_frame] * per_frame + idx % per_frame).sort().values
    # budget > floor implies at least one compared frame
    sim = F.cosine_similarity(x[compared].float(), x[ref[compared]].float(), dim=-1)  # [C, P]
    sorted_sim, order = torch.sort(sim, dim=1, stable=True)  # least similar first, ties: lower position
    q, rem = divmod(budget - floor, compared.numel())
    counts = torch.full((compared.numel(),), q, dtype=torch.long, device=device)
    if rem:  # q < P here; the leftover tokens go to the frames whose next candidate is least similar
        counts[topk_sorted(-sorted_sim[:, q], rem)] += 1
    rank = torch.arange(per_frame, device=device)
    chosen = rank[None] < counts[:, None]  # [C, P] over ranks
    kept_compared = (compared[:, None] * per_frame + order)[chosen]
    kept_anchors = (anchors[:, None] * per_frame + rank[None]).flatten()
    return torch.cat([kept_anchors, kept_compared]).sort().values


@register_policy("dycoke", stage="outer")
class DyCokeTTMPolicy(OuterPolicy):
    config_cls = DyCokeTTMConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        frames = video.features.reshape(g.frames, g.per_frame, -1)
        return Plan(ttm_keep(frames, budget, self.config.last_window_third_whole))
