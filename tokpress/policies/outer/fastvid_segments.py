"""FastVID's segmentation and budget counts (helpers of :mod:`tokpress.policies.outer.fastvid`).

* :func:`dyseg` — DySeg: cut a video into segments of similar frames.
* :func:`anchor_frames` — a segment's anchor frames (its last frame and every ``p``-th counting back).
* :func:`stprune_counts` — the LLaVA form's salient and anchor counts per frame, summing to exactly ``budget``.
* :func:`qwen_counts` — the Qwen form's counts (sub-segments, caps), summing to exactly ``budget``.

The rules, and how they differ from the authors' code, are in :mod:`tokpress.policies.outer.fastvid`'s docstring.
"""

from __future__ import annotations

import torch

from tokpress.ops import cosine_adjacent


def dyseg(global_features: torch.Tensor, c: int, tau: float) -> torch.Tensor:
    """DySeg: ``[n_seg]`` lengths (``torch.long``, summing to ``T``) of the segments of ``T`` frames.

    Args:
        global_features: ``[T, D]`` one global feature per frame.
        c: cut at the ``c - 1`` lowest adjacent-frame similarities (all transitions when ``c - 1 >= T - 1``).
        tau: also cut at every similarity below ``tau``.

    The cut after transition ``t`` (between frames ``t`` and ``t + 1``) ends a segment at frame ``t``.
    """
    t = global_features.shape[0]
    device = global_features.device
    sim = cosine_adjacent(global_features[:, None, :]).squeeze(1)  # [T - 1]: cos(g_t, g_{t+1})
    cut = sim < tau
    lowest = torch.sort(sim, stable=True).indices[: max(0, min(c - 1, t - 1))]  # ties: the earlier transition
    cut[lowest] = True
    ends = torch.cat([cut.nonzero().squeeze(1), torch.tensor([t - 1], device=device)])
    return torch.diff(ends, prepend=torch.tensor([-1], device=device))


def anchor_frames(lengths: torch.Tensor, p: int) -> torch.Tensor:
    """``[T]`` bool: frame ``i`` of a segment of length ``S`` is an anchor frame iff ``(S - 1 - i) % p == 0`` — the
    segment's last frame and every ``p``-th frame counting back from it."""
    return _frames_from_end(lengths) % p == 0


def _frames_from_end(lengths: torch.Tensor) -> torch.Tensor:
    """``[T]``: how many frames after each frame its segment ends (0 for a segment's last frame)."""
    seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    last = (lengths.cumsum(0) - 1)[seg]
    return last - torch.arange(seg.numel(), device=lengths.device)


def _fill_from_end(amount: torch.Tensor, room: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pour each segment's ``amount`` into its frames' ``room`` ``[T]``, last frame first; ``[T]`` poured."""
    seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    total = room.cumsum(0)
    later = total[lengths.cumsum(0) - 1][seg] - total  # room in the segment's later frames
    return torch.minimum((amount[seg] - later).clamp_min(0), room)


def stprune_counts(
    lengths: torch.Tensor, per_frame: int, budget: int, d: float, p: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Salient and anchor counts per frame (``[T]`` each, ``torch.long``) summing to exactly ``budget``.

    See :mod:`tokpress.policies.outer.fastvid`'s docstring for the rule; anchors are non-zero only on
    :func:`anchor_frames`, and ``salient + anchors <= per_frame`` in every frame.
    """
    device = lengths.device
    t = int(lengths.sum())
    n_seg = lengths.numel()
    seg = torch.repeat_interleave(torch.arange(n_seg, device=device), lengths)
    bounds = torch.div(torch.arange(t + 1, device=device) * budget, t, rounding_mode="floor")
    keep = bounds[1:] - bounds[:-1]  # [T], floor or ceil of budget / T
    context = torch.floor(keep.double() * d).long()  # the reference's int(keep * d)
    salient = keep - context
    back = _frames_from_end(lengths)
    is_anchor = back % p == 0
    seg_context = torch.zeros(n_seg, dtype=torch.long, device=device).index_add_(0, seg, context)
    n_anchor = torch.div(lengths + p - 1, p, rounding_mode="floor")[seg]
    share = torch.div(seg_context[seg], n_anchor, rounding_mode="floor")
    extra = (torch.div(back, p, rounding_mode="floor") < seg_context[seg] % n_anchor).long()
    want = torch.where(is_anchor, share + extra, 0)
    room = per_frame - salient  # non-salient tokens of each frame
    anchors = torch.minimum(want, room)

    def overflow(placed):
        return seg_context - torch.zeros_like(seg_context).index_add_(0, seg, placed)

    anchors = anchors + _fill_from_end(overflow(anchors), torch.where(is_anchor, room - anchors, 0), lengths)
    salient = salient + _fill_from_end(overflow(anchors), torch.where(is_anchor, 0, room), lengths)
    return salient, anchors


def qwen_counts(
    lengths: torch.Tensor, sim: torch.Tensor, per_frame: int, budget: int, d: float, p: int, ignore: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Qwen form's salient and anchor counts per frame (``[T]`` each, ``torch.long``), summing to ``budget``.

    Args:
        lengths: ``[n_seg]`` DySeg segment lengths.
        sim: ``[T - 1]`` cosine of adjacent frames' global features (sub-segments cut where ``sim < ignore``).
        per_frame: tokens per frame ``P``.

    See :mod:`tokpress.policies.outer.fastvid`'s docstring ("Qwen form"). A Python loop over frames (never tokens):
    the counts are small ints.
    """
    t = int(lengths.sum())
    share = [(i + 1) * budget // t - i * budget // t for i in range(t)]  # floor or ceil of budget / T
    cut = (sim < ignore).tolist()
    salient, anchors = [0] * t, [0] * t
    start = 0
    for length in lengths.tolist():
        stop = start + length
        seg_budget = sum(share[start:stop])
        context = min(max(int(seg_budget * d), 1), seg_budget)
        spread = seg_budget - context
        if length == 1:
            salient[start], anchors[start] = spread, context
        else:
            ends = [f for f in range(start, stop - 1) if cut[f]] + [stop - 1]  # last frames of the sub-segments
            v, a = len(ends), -(-len(ends) // p)
            for i, f in enumerate(ends):
                back = v - 1 - i  # sub-segments after this one; anchors every p-th counting back, the last first
                anchors[f] = min(context // a + (back // p < context % a), per_frame // 2) if back % p == 0 else 0
                salient[f] = min(spread // v + (i < spread % v), per_frame - anchors[f])
            lost = seg_budget - sum(salient[start:stop]) - sum(anchors[start:stop])
            rest = [f for f in range(stop - 1, start - 1, -1) if f not in ends]
            for f in ends[::-1] + rest:  # what the caps cut off: extra salient tokens, latest frames first
                add = min(lost, per_frame - salient[f] - anchors[f])
                salient[f] += add
                lost -= add
        start = stop
    device = lengths.device
    return torch.tensor(salient, device=device), torch.tensor(anchors, device=device)
