"""``prunevid`` (outer) — the merging stage of PruneVid (Huang et al., ACL 2025, "PruneVid: Visual Token Pruning
for Efficient Video Large Language Models").

Algorithm:

1. **Temporal segments.** Each frame is summarised by the mean of its tokens; DPC-kNN clusters the frames into
   ``int(T * temporal_segment_ratio)`` clusters (at least 1). Clusters are made temporally contiguous as in the
   reference's ``refine_clusters``: each cluster keeps only its longest run(s) of frames (none if all its runs are
   single frames); every other run is relabelled, left to right, with the label of the longer adjacent run (ties:
   the left one; no neighbour at all: one label for everything). Segments are the maximal runs of equal labels.
2. **Static / dynamic split.** In a segment of ``W`` frames, a spatial position is *static* when the mean pairwise
   cosine similarity of its ``W`` tokens (self-pairs excluded) exceeds ``tau``; a one-frame segment has no static
   positions. The static tokens of a segment are averaged over its ``W`` frames (one token per position).
3. **Spatial merging.** The segment's averaged static tokens form one group, each frame's dynamic tokens another;
   DPC-kNN (``knn_k`` neighbours) clusters every group and each cluster becomes the **uniform mean** of its members
   (the reference's ``compute_cluster_vectors``), placed at its **center**'s position: a dynamic cluster in its own
   frame, a static cluster at the center's spatial position in the segment's **first** frame. ``sizes`` count the
   original tokens merged into each (a static token stands for ``W``).

Budget mapping (the paper's output count is content-driven: ``cluster_ratio`` (0.5) of every group that has more
than 14 tokens): let ``M`` be the token count after step 2. tokpress replaces ``cluster_ratio`` by ``budget / M``
and reconciles the rounding so the total is exactly ``budget``: every non-empty group keeps at least one cluster
and the remaining ``budget - G`` clusters are shared in proportion to the groups' sizes (largest remainder, ties to
the earlier group). A group keeping all its tokens is left unclustered. Deviations, with reasons:

* ``budget > M`` (more than the static averaging leaves, e.g. at high ratios): the least static positions (lowest
  mean pairwise similarity first, across segments) are treated as dynamic until ``M >= budget``; at ``budget == N``
  nothing is merged and the output equals the input. The reference cannot go above ``M``.
* ``budget < G`` (fewer tokens than groups): every group is first merged into one cluster, then DPC-kNN clusters
  those ``G`` tokens into ``budget`` (uniform means again, sizes summed), so every original token stays accounted
  for.
* The reference skips clustering for groups of at most 14 tokens; with an exact budget that rule would only move
  the reduction elsewhere, so every group is clustered at the shared ratio.
* DPC-kNN is the shared :func:`tokpress.ops.dpc_knn`, the reference's rule (each point counts among its own ``k``
  nearest) except that ties are broken by index instead of random noise (reproducible runs). ``k`` is clamped to
  the group's size, where the reference's ``topk`` would fail.
* Merged tokens keep the position of their center (the engine's original-position convention); the reference
  re-numbers contiguously and orders each segment as [static][dynamic of frame 1]...; here the kept tokens stay in
  raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.ops import apportion, dpc_knn, group_mean, group_size
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class PruneVidConfig(PolicyConfig):
    """Options of :class:`PruneVidPolicy` (the paper's defaults)."""

    #: a position is static in a segment when its mean pairwise cosine similarity across the frames exceeds this
    tau: float = 0.8
    #: frame clusters before the contiguity refinement: ``int(T * temporal_segment_ratio)``, at least 1
    temporal_segment_ratio: float = 0.25
    #: neighbours of the DPC-kNN density, for both frame and token clustering
    knn_k: int = 7

    def validate(self) -> None:
        tau, seg, k = self.tau, self.temporal_segment_ratio, self.knn_k
        self.check(
            not isinstance(tau, bool) and isinstance(tau, (int, float)) and -1 <= tau <= 1,
            f"tau must be a cosine threshold in [-1, 1], got {tau!r} (the paper uses 0.8)",
        )
        self.check(
            not isinstance(seg, bool) and isinstance(seg, (int, float)) and 0 < seg <= 1,
            f"temporal_segment_ratio must be a number in (0, 1], got {seg!r} (the paper uses 0.25)",
        )
        self.check(
            not isinstance(k, bool) and isinstance(k, int) and k >= 1,
            f"knn_k must be an int >= 1, got {k!r} (the paper uses 7)",
        )


def contiguous_segments(labels: torch.Tensor) -> torch.Tensor:
    """Lengths ``[S]`` of the temporal segments made from per-frame cluster ``labels`` ``[T]`` (step 1 above).

    Pure Python over the ``T`` frame labels: the relabelling is sequential (a relabelled run changes the left
    neighbour of the next one).
    """
    lab = labels.tolist()
    t = len(lab)
    runs, start = [], 0
    for i in range(1, t + 1):
        if i == t or lab[i] != lab[start]:
            runs.append((start, i, lab[start]))
            start = i
    longest: dict[int, int] = {}
    for a, b, label in runs:
        longest[label] = max(longest.get(label, 0), b - a)
    refined = list(lab)
    for a, b, label in runs:
        if longest[label] == 1 or b - a < longest[label]:
            refined[a:b] = [None] * (b - a)
    i = 0
    while i < t:
        if refined[i] is not None:
            i += 1
            continue
        start = i
        while i < t and refined[i] is None:
            i += 1
        left = right = None
        left_len = right_len = 0
        if start > 0:
            left, j = refined[start - 1], start - 1
            while j >= 0 and refined[j] == left:
                j -= 1
            left_len = start - 1 - j
        if i < t:
            right, j = refined[i], i
            while j < t and refined[j] == right:
                j += 1
            right_len = j - i
        new = left if left is not None and left_len >= right_len else right
        refined[start:i] = [0 if new is None else new] * (i - start)
    lengths, start = [], 0
    for i in range(1, t + 1):
        if i == t or refined[i] != refined[start]:
            lengths.append(i - start)
            start = i
    return torch.tensor(lengths, dtype=torch.long, device=labels.device)


def static_scores(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[S, P]`` mean pairwise cosine similarity (self-pairs excluded) of each position over each segment's
    frames (``frames`` ``[T, P, D]``, segment ``lengths`` ``[S]``); ``-inf`` for one-frame segments."""
    seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=frames.device), lengths)
    unit = F.normalize(frames.float(), dim=-1)
    sums = torch.zeros(lengths.numel(), *unit.shape[1:], device=frames.device).index_add_(0, seg, unit)
    w = lengths.float()[:, None]
    # sum over ordered pairs w != t of cos = |sum of unit vectors|^2 - W
    score = ((sums**2).sum(-1) - w) / (w * (w - 1)).clamp_min(1)
    return score.masked_fill(w == 1, float("-inf"))


@register_policy("prunevid", stage="outer")
class PruneVidPolicy(OuterPolicy):
    config_cls = PruneVidConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        cfg = self.config
        g = video.grid
        t, p = g.frames, g.per_frame
        x = video.features.reshape(t, p, -1).float()
        device = x.device
        n = g.numel

        # 1. temporal segments
        if t > 1:
            _, labels, _ = dpc_knn(x.mean(1), max(1, int(t * cfg.temporal_segment_ratio)), cfg.knn_k)
            lengths = contiguous_segments(labels)
        else:
            lengths = torch.ones(1, dtype=torch.long, device=device)
        num_seg = lengths.numel()
        seg = torch.repeat_interleave(torch.arange(num_seg, device=device), lengths)  # [T] segment of each frame
        first = torch.cumsum(lengths, 0) - lengths  # [S] first frame of each segment

        # 2. static / dynamic split, then enough demotions that the budget fits (see the module docstring)
        score = static_scores(x, lengths)
        static = score > cfg.tau
        saved = lengths - 1  # tokens one static position saves in its segment
        remaining = n - int((static.sum(1) * saved).sum())
        if budget > remaining:
            cand = static.nonzero()  # (segment, position), row-major
            order = torch.sort(score[cand[:, 0], cand[:, 1]], stable=True).indices  # least static first
            gain = saved[cand[order, 0]].cumsum(0)
            m = int(torch.searchsorted(gain, torch.tensor(budget - remaining, device=device))) + 1
            demote = cand[order[:m]]
            static[demote[:, 0], demote[:, 1]] = False

        # the tokens after step 2, grouped contiguously: static groups 0..S-1, then one dynamic group per frame
        seg_mean = torch.zeros(num_seg, p, x.shape[-1], device=device).index_add_(0, seg, x) / lengths[:, None, None]
        s_idx = static.nonzero()
        d_idx = (~static[seg]).nonzero()
        feats = torch.cat([seg_mean[s_idx[:, 0], s_idx[:, 1]], x[d_idx[:, 0], d_idx[:, 1]]])
        pos = torch.cat([first[s_idx[:, 0]] * p + s_idx[:, 1], d_idx[:, 0] * p + d_idx[:, 1]])
        weight = torch.cat([lengths[s_idx[:, 0]].float(), torch.ones(d_idx.shape[0], device=device)])
        group = torch.cat([s_idx[:, 0], num_seg + d_idx[:, 0]])
        sizes_g = torch.bincount(group, minlength=num_seg + t)
        nonempty = sizes_g > 0
        num_groups = int(nonempty.sum())

        # 3. clusters per group: at least one each, the rest in proportion to the group sizes
        extra = apportion(max(0, budget - num_groups), (sizes_g - 1).clamp_min(0))
        clusters = nonempty.long() + extra
        out_f, out_p, out_s = [], [], []
        pieces = zip(
            feats.split(sizes_g.tolist()), pos.split(sizes_g.tolist()), weight.split(sizes_g.tolist()), clusters
        )
        for f, q, w, c in pieces:  # loop over groups (one per segment and one per frame)
            c = int(c)
            if c == 0:  # an empty group
                continue
            if c < f.shape[0]:
                centers, assign, _ = dpc_knn(f, c, cfg.knn_k)
                f, q, w = group_mean(f, assign, c), q[centers], group_size(assign, c, w)
            out_f.append(f)
            out_p.append(q)
            out_s.append(w)
        feats, pos, sizes = torch.cat(out_f), torch.cat(out_p), torch.cat(out_s)
        if budget < num_groups:  # fewer tokens than groups: cluster the one-per-group tokens once more
            centers, assign, _ = dpc_knn(feats, budget, cfg.knn_k)
            feats, pos, sizes = group_mean(feats, assign, budget), pos[centers], group_size(assign, budget, sizes)
        order = pos.argsort()
        return Plan(pos[order], feats[order], sizes[order])
