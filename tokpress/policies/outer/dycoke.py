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

Below the paper's floor. TTM keeps every anchor frame whole, so it cannot keep fewer than ``A * P`` tokens
(``A / T`` of the video: 3/8 at 8 frames, 5/16 at 16, 9/32 at 32); at the floor itself the compared frames keep
nothing (the paper's ``k = 1``). For ``budget < A * P`` the paper has no answer, and tokpress does not drop whole
time steps (the old rule — compared frames empty, anchors thinned — took the synthetic benchmark from 91.5 % at
``r = 0.5`` to 57 % at ``r = 0.25``). ``below_floor`` decides:

- ``"spread"`` (default): every frame keeps ``floor`` or ``ceil`` of ``budget / T`` tokens (the extra ones go to the
  anchor frames first, in time order, then to evenly spaced compared frames), chosen by TTM's own score: the tokens
  least similar to the same position of the frame's reference. A compared frame's reference is its TTM reference;
  an anchor's is the previous anchor (the chain of window heads); the first frame has none and keeps evenly spaced
  tokens (no similarity order to prune it by; even spacing covers every row). Every time step keeps tokens as long
  as ``budget >= T``.
- ``"error"``: refuse with an :class:`~tokpress.errors.InputError` naming the lowest ratio this video allows.

Deviations from the reference code (``KD-TAO/DyCoke``, ``llava_arch.dycole_ttm``):

- Exact budget instead of a fixed per-frame count (above); the per-frame count is the same at the reference's own
  ratio.
- Kept tokens stay in raster order at their original positions (the engine's convention); the reference
  concatenates each frame's survivors in similarity-rank order and renumbers positions contiguously.
- With an odd number of frames the reference's pair loop silently drops the unpaired last frame. tokpress applies
  the window rule to it: it is an anchor (window start, or the last window's third frame).
- Ties in similarity are broken towards the lower position (stable sort) for determinism.
- The layout-specific newline token (LLaVA-OneVision) is not part of the grid; the engine keeps it.
- Below the floor (above): the reference cannot go there at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import cosine_pairs, evenly_spaced, topk_sorted
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class DyCokeTTMConfig(PolicyConfig):
    last_window_third_whole: bool = True
    """Keep frame ``a+2`` of the last window whole, as the reference code does; False compares it with ``a``."""
    below_floor: str = "spread"
    """Budgets below the anchors' floor: ``"spread"`` over every frame by TTM's score, or ``"error"``."""

    def validate(self) -> None:
        self.check(
            isinstance(self.last_window_third_whole, bool),
            f"last_window_third_whole must be True or False, got {self.last_window_third_whole!r}",
        )
        self.check(
            self.below_floor in ("spread", "error"),
            f"below_floor must be 'spread' or 'error', got {self.below_floor!r}",
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


def ttm_floor(frames: int, per_frame: int, last_window_third_whole: bool = True) -> int:
    """The fewest tokens TTM can keep: its anchor frames whole (``A * P``)."""
    return int((frame_references(frames, last_window_third_whole) < 0).sum()) * per_frame


def spread_keep(x: torch.Tensor, budget: int, ref: torch.Tensor) -> torch.Tensor:
    """Below the floor: sorted indices of ``budget`` tokens of ``x`` ``[T, P, D]``, an even share per frame.

    Args:
        ref: ``[T]`` TTM references (``-1`` for anchors). Anchors are scored against the previous anchor instead.
    """
    frames, per_frame = x.shape[:2]
    device = x.device
    anchor = ref < 0
    t = torch.arange(frames, device=device)
    previous = torch.cummax(torch.where(anchor, t, -1), 0).values  # latest anchor at or before each frame
    prev_anchor = torch.cat([torch.tensor([-1], device=device), previous[:-1]])
    spread_ref = torch.where(anchor, prev_anchor, ref)  # frame 0 stays -1
    share = torch.full((frames,), budget // frames, dtype=torch.long, device=device)
    extra = budget % frames
    heads = anchor.nonzero().squeeze(1)[:extra]  # the extra tokens: anchors first, in time order
    share[heads] += 1
    rest = extra - heads.numel()
    if rest:
        others = (~anchor).nonzero().squeeze(1)
        share[others[evenly_spaced(others.numel(), rest, device)]] += 1
    has_ref = spread_ref >= 0
    score = torch.zeros(frames, per_frame, device=device)  # frame 0: rank positions so that evenly spaced come first
    score[has_ref] = cosine_pairs(x, has_ref.nonzero().squeeze(1), spread_ref[has_ref])
    order = torch.sort(score, dim=1, stable=True).indices  # least similar first, ties: lower position
    rank = torch.arange(per_frame, device=device)
    chosen = rank[None] < share[:, None]
    kept = (t[:, None] * per_frame + order)[chosen & has_ref[:, None]]
    if not bool(has_ref[0]) and share[0] > 0:
        kept = torch.cat([kept, evenly_spaced(per_frame, int(share[0]), device)])
    return kept.sort().values


def ttm_keep(
    x: torch.Tensor, budget: int, last_window_third_whole: bool = True, below_floor: str = "spread"
) -> torch.Tensor:
    """Sorted indices of the ``budget`` tokens TTM keeps of ``x`` ``[T, P, D]`` (raster order ``t * P + p``)."""
    frames, per_frame = x.shape[:2]
    device = x.device
    ref = frame_references(frames, last_window_third_whole, device)
    anchors = (ref < 0).nonzero().squeeze(1)
    compared = (ref >= 0).nonzero().squeeze(1)
    floor = anchors.numel() * per_frame
    if budget < floor:
        if below_floor == "error":
            raise InputError(
                f"dycoke keeps every window's first frame whole, so on this {frames}-frame video it keeps at least "
                f"{floor} of {frames * per_frame} tokens (retain_ratio >= {floor / (frames * per_frame):.4f}); "
                f"asked for {budget}. Raise retain_ratio, or use below_floor='spread'"
            )
        return spread_keep(x, budget, ref)
    if budget == floor:  # the paper's k = 1: the anchors whole, nothing of the compared frames
        return (anchors[:, None] * per_frame + torch.arange(per_frame, device=device)[None]).flatten()
    # budget > floor implies at least one compared frame
    sim = cosine_pairs(x, compared, ref[compared])  # [C, P]
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
        return Plan(ttm_keep(frames, budget, self.config.last_window_third_whole, self.config.below_floor))
