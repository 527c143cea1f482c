"""``holitom`` (outer stage) — HoliTom (Shao et al., NeurIPS 2025, "HoliTom: Holistic Token Merging for Fast Video
Large Language Models"), the outer-LLM part: global temporal merging, then spatial merging / attention pruning.

Algorithm, on the ``T x P`` grid of one video:

1. ``s[t, p] = cos(x[t, p], x[t + 1, p])`` in float32; a pair is *static* when ``s > tau``.
2. :func:`segment_frames` splits the frames into contiguous segments by dynamic programming, maximising
   ``sum over segments of (#positions static over the whole segment) x (length - 1)``, i.e. the number of tokens
   that averaging static positions over their segment removes (``R``), with segments at most ``max_window`` long.
3. In a segment of ``L > 1`` frames every static position becomes one token, the mean of its ``L`` frames; these
   segment means are clustered with DPC-kNN (``tokpress.ops.dpc_knn``) and each center absorbs its cluster as
   ``beta * center + (1 - beta) * mean(the cluster's other members)`` (a center alone is kept as is).
4. Dynamic tokens (every token of a one-frame segment, the non-static positions of a longer one) are pruned per
   frame, keeping those that receive the most vision-encoder attention (``VideoTokens.attention``).

Budget mapping: ``retain_ratio`` r (``budget = round(r N)``) is re-targeted as in the paper to
``r' = r M / (M - R)`` over the ``M - R`` tokens left after temporal averaging, so the final count is about r M.
The reference then keeps ``round(n_static r')`` centers per segment and ``ceil(n_dynamic r')`` tokens per frame,
which misses the target by up to one token per group; tokpress apportions ``budget`` exactly over these groups by
the largest-remainder rule on exact integers (group g gets ``floor(n_g budget / (M - R))``, the leftover tokens go
to the largest remainders, ties to the earlier group in time order, a segment's static group before its frames).
``tau`` (default 0.8; the paper's scripts use 0.65 at r = 0.10), ``beta``, ``k`` and ``max_window`` are the
reference's ``T``, ``BETA``, ``K`` and ``MAX_WINDOW_SIZE``.

Where kept tokens sit: a merged static token sits at its spatial position in its segment's *first* frame (as the
reference's LLaVA-Video layout attaches static tokens to that frame); dynamic tokens stay where they are. Every
kept token keeps its original position (the engine handles positions). ``Plan.sizes`` counts the original tokens
each kept token stands for: ``L x (1 + absorbed)`` for a static center, 1 for a dynamic token. Pruned dynamic tokens
are represented by no kept token, so the sizes sum to ``N`` minus the pruned count (exactly ``N`` only when
nothing is pruned, i.e. ``budget >= M - R``).

Deviations from the reference code (cokeshao/HoliTom), with reasons:

- Exact budget: largest-remainder apportionment instead of round/ceil per group (the engine promises an exact
  count). Within a group the selection rule is the paper's (DPC-kNN centers, attention top-k).
- ``budget > M - R`` (high ratios on static videos): the reference caps ``r' <= 1`` and returns only ``M - R``
  tokens. tokpress undoes part of the temporal averaging instead: the ``budget - (M - R)`` extra tokens are
  apportioned over the static (segment, position) runs in proportion to ``L - 1`` (largest remainder), a run given
  ``e`` extra tokens is cut into ``e + 1`` contiguous, evenly sized chunks of frames, and each chunk is averaged and
  placed at its first frame. Nothing is clustered or pruned then; ``budget = N`` keeps every token unchanged.
- Order and positions: the reference emits each segment as [static tokens] + [dynamic tokens per frame] and
  renumbers positions contiguously; tokpress returns kept indices in raster order with original positions.
- DPC-kNN is the shared ``tokpress.ops.dpc_knn``, which computes the reference's densities, deltas and scores
  (the token itself among its ``k`` nearest, the densest token's ``delta`` the largest distance overall) but breaks
  ties by index instead of adding 1e-6 random noise, so runs are reproducible. ``k`` is capped by the number of
  centers as in the reference.
- The reference's VisionZip-style "contextual" share ``D`` of dynamic tokens defaults to 0 there; it is not
  implemented (dynamic tokens are pure attention top-k).
- Vision attention is whatever the adapter supplies (see ``VideoTokens.attention``: summed over the patches merged
  into a token); the reference pools the attention map like the features (bilinear for LLaVA-OneVision), which can
  order near-equal tokens differently.
- Similarities and merges run in float32 whatever the input dtype; features are returned in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import apportion, cosine_adjacent, dpc_knn, group_mean, group_size
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class HoliTomConfig(PolicyConfig):
    tau: float = 0.8
    """Cosine similarity to the previous frame above which a token counts as static (the paper's T)."""
    beta: float = 0.6
    """Weight of a cluster's center in the static merge ``beta * center + (1 - beta) * mean(other members)``."""
    k: int = 7
    """Neighbours in the DPC-kNN density of the static tokens (capped by the number of centers)."""
    max_window: int = 1024
    """Longest temporal segment, in frames (1 disables temporal merging)."""

    def validate(self) -> None:
        self.check(_is_real(self.tau) and -1 <= self.tau <= 1, f"tau must be a cosine in [-1, 1], got {self.tau!r}")
        self.check(_is_real(self.beta) and 0 <= self.beta <= 1, f"beta must be in [0, 1], got {self.beta!r}")
        self.check(_is_int(self.k) and self.k >= 1, f"k must be an int >= 1, got {self.k!r}")
        self.check(
            _is_int(self.max_window) and self.max_window >= 1,
            f"max_window must be an int >= 1 (frames), got {self.max_window!r}",
        )


def static_runs(static: torch.Tensor, longest: int) -> torch.Tensor:
    """``[T - 1, P]`` number of consecutive static pairs ending at each pair, capped at ``longest``.

    ``static[t, p]`` says whether frames ``t`` and ``t + 1`` agree at position ``p``; the run at ``(t, p)`` is the
    largest ``m`` with ``static[t - m + 1 .. t, p]`` all true, so frames ``t + 1 - m .. t + 1`` agree at ``p``.
    """
    pairs = torch.arange(static.shape[0], device=static.device)[:, None].expand_as(static)
    last_break = torch.where(static, -1, pairs).cummax(0).values  # latest non-static pair <= t (or -1)
    return (pairs - last_break).clamp(max=longest)


def window_gains(similarity: torch.Tensor, tau: float, max_window: int) -> torch.Tensor:
    """``gain [T - 1, W]``: ``gain[j - 1, m]`` = tokens saved by averaging frames ``j - m .. j`` (``m + 1`` frames).

    That is ``m`` times the number of positions static over the whole window; ``W = min(T, max_window)`` and column 0
    (a single frame) is 0.
    """
    width = max(1, min(similarity.shape[0] + 1, max_window))
    runs = static_runs(similarity.float() > tau, width - 1)
    hist = torch.zeros(runs.shape[0], width, dtype=torch.long, device=runs.device)
    hist.scatter_add_(1, runs, torch.ones_like(runs))
    at_least = hist.flip(1).cumsum(1).flip(1)  # [:, m] = positions whose run is >= m
    return at_least * torch.arange(width, device=runs.device)


def segment_frames(similarity: torch.Tensor, tau: float, max_window: int = 1024) -> list[tuple[int, int]]:
    """HoliTom's global temporal segmentation.

    Args:
        similarity: ``[T - 1, P]`` cosine of each position to the same position in the next frame.
        tau: a pair is static when its similarity is strictly above ``tau``.
        max_window: longest segment, in frames.

    Returns:
        The segments ``(first, last)`` (inclusive) covering ``0 .. T - 1`` in order, maximising the sum over
        segments of ``(last - first) x #positions static over all the segment's pairs``. Ties go to the single-frame
        option first, then to the shortest window (as the reference's strict ``>`` scan does).
    """
    frames = similarity.shape[0] + 1
    gain = window_gains(similarity.detach().cpu(), tau, max_window)  # small; the DP below runs on the CPU
    width = gain.shape[1]
    best = torch.zeros(frames + 1, dtype=torch.long)  # best[i]: optimum over frames 0 .. i - 1
    start = list(range(frames))
    # Sequential over frames (a DP); each step scores all window lengths ending at frame j at once.
    for j in range(frames):
        best[j + 1] = best[j]  # frame j alone
        longest = min(j, width - 1)
        if longest == 0:
            continue
        m = torch.arange(1, longest + 1)
        cand = best[j - m] + gain[j - 1, 1 : longest + 1]
        arg = int(cand.argmax())  # first maximum: the shortest window among ties
        if cand[arg] > best[j]:
            best[j + 1] = cand[arg]
            start[j] = j - int(m[arg])
    segments, j = [], frames - 1
    while j >= 0:
        segments.append((start[j], j))
        j = start[j] - 1
    return segments[::-1]


@register_policy("holitom", stage="outer")
class HoliTomOuterPolicy(OuterPolicy):
    config_cls = HoliTomConfig
    needs_vision_attention = True
    vision_attention = "full"  # the paper averages the whole attention map over queries

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g, cfg = video.grid, self.config
        frames, per_frame, device = g.frames, g.per_frame, video.features.device
        if video.attention is None or video.attention.numel() != g.numel:
            raise InputError(
                "outer policy 'holitom' needs VideoTokens.attention ([N] vision-encoder attention per token); "
                "the engine must pass it for policies with needs_vision_attention (the model family's adapter "
                "has to compute it)"
            )
        if budget >= g.numel:
            return Plan(torch.arange(g.numel, device=device))
        x = video.features.reshape(frames, per_frame, -1).float()
        sim = cosine_adjacent(x)  # [T - 1, P] float32
        segments = segment_frames(sim, cfg.tau, cfg.max_window)
        static = torch.zeros(frames, per_frame, dtype=torch.bool, device=device)
        for first, last in segments:  # loop over segments
            if last > first:
                static[first : last + 1] = (sim[first:last] > cfg.tau).all(0)
        first_frame = torch.tensor([a for a, b in segments for _ in range(b - a + 1)], device=device)
        length = torch.tensor([b - a + 1 for a, b in segments for _ in range(b - a + 1)], device=device)
        n_static = static[first_frame == torch.arange(frames, device=device)].sum(-1)  # [S]: per segment
        seg_len = torch.tensor([b - a + 1 for a, b in segments], device=device)
        after_temporal = g.numel - int((n_static * (seg_len - 1)).sum())  # M - R
        if budget >= after_temporal:
            return self._unmerge(x, static, first_frame, length, budget - after_temporal)
        return self._select(x, video.attention, static, segments, n_static, budget)

    def _select(self, x, attention, static, segments, n_static, budget) -> Plan:
        """``budget < M - R``: DPC-kNN + beta-merge on each segment's static means, attention top-k per frame."""
        frames, per_frame, dim = x.shape
        device, cfg = x.device, self.config
        # groups in time order: a segment's static group, then the dynamic group of each of its frames
        weights, is_static = [], []
        for (first, last), ns in zip(segments, n_static.tolist()):
            weights.append(ns)
            is_static.append(True)
            weights.extend((per_frame - static[first : last + 1].sum(-1)).tolist())
            is_static.extend([False] * (last - first + 1))
        counts = apportion(budget, torch.tensor(weights))
        is_static = torch.tensor(is_static)
        static_count, dynamic_count = counts[is_static].tolist(), counts[~is_static].to(device)

        # dynamic tokens: per frame, the dynamic_count[t] best by vision attention (static ones rank last)
        score = attention.reshape(frames, per_frame).float().masked_fill(static, float("-inf"))
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(per_frame, device=device).expand_as(order))
        dyn_keep = ((rank < dynamic_count[:, None]) & ~static).flatten().nonzero().squeeze(1)
        index, feats, sizes = [dyn_keep], [x.reshape(-1, dim)[dyn_keep]], [torch.ones(dyn_keep.numel(), device=device)]

        # static tokens: one mean per position over the segment, then DPC-kNN with the beta-merge
        for (first, last), c in zip(segments, static_count):  # loop over segments: one clustering each
            if c == 0:
                continue
            pos = static[first].nonzero().squeeze(1)
            means = x[first : last + 1, pos].mean(0)  # [n_s, D]
            centers, assign, _ = dpc_knn(means, c, k=min(cfg.k, c))
            member = torch.ones(pos.numel(), dtype=torch.bool, device=device)
            member[centers] = False
            absorbed = group_size(assign[member], c)
            pooled = group_mean(means[member], assign[member], c)
            merged = torch.where(
                absorbed[:, None] > 0, cfg.beta * means[centers] + (1 - cfg.beta) * pooled, means[centers]
            )
            index.append(first * per_frame + pos[centers])
            feats.append(merged)
            sizes.append((last - first + 1) * (1 + absorbed))
        return _assemble(index, feats, sizes)

    def _unmerge(self, x, static, first_frame, length, extra) -> Plan:
        """``budget >= M - R``: keep every dynamic token and split static runs into ``e + 1`` averaged chunks."""
        frames, per_frame, dim = x.shape
        device = x.device
        # static (segment, position) runs of the segments' first frames, in time then raster order
        heads = static & (first_frame == torch.arange(frames, device=device))[:, None]  # [T, P]
        head_frame, head_pos = heads.nonzero(as_tuple=True)
        e = apportion(extra, length[head_frame] - 1)  # extra chunks per run, <= L - 1
        chunks = torch.zeros(frames, per_frame, dtype=torch.long, device=device)
        chunks[head_frame, head_pos] = e + 1
        chunks = chunks[first_frame]  # broadcast each run's chunk count to its frames
        offset = torch.arange(frames, device=device)[:, None] - first_frame[:, None]  # frame within the segment
        chunk = torch.div(offset * chunks, length[:, None], rounding_mode="floor")
        # first frame of chunk i of L frames cut into n: ceil(i L / n)
        chunk_start = torch.div(chunk * length[:, None] + chunks - 1, chunks.clamp_min(1), rounding_mode="floor")
        rep_frame = torch.where(
            static, first_frame[:, None] + chunk_start, torch.arange(frames, device=device)[:, None]
        )
        rep = (rep_frame * per_frame + torch.arange(per_frame, device=device)).flatten()
        keep, group = torch.unique(rep, sorted=True, return_inverse=True)
        flat = x.reshape(-1, dim)
        return Plan(keep, group_mean(flat, group, keep.numel()), group_size(group, keep.numel()))


def _assemble(index: list, feats: list, sizes: list) -> Plan:
    index = torch.cat(index)
    order = index.argsort()
    return Plan(index[order], torch.cat(feats)[order], torch.cat(sizes).float()[order])
