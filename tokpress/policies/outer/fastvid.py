"""``fastvid`` — FastVID (Shen et al., NeurIPS 2025, "FastVID: Dynamic Density Pruning for Fast Video Large
Language Models"). The authors ship two forms, and tokpress has both: the LLaVA-OneVision "parallel" form (below)
and the Qwen2.5-VL form (section "Qwen form"); ``form="auto"`` (default) picks the Qwen form for the Qwen families
(``VideoTokens.family`` starting with ``qwen``) and the LLaVA form otherwise, as the authors do.

Algorithm:

1. **DySeg** — each frame's global feature ``g_t`` is the mean of its tokens; with ``s_t = cos(g_t, g_{t+1})`` the
   video is cut after transition ``t`` when ``s_t`` is one of the ``c - 1`` lowest similarities *or* ``s_t < tau``
   (:func:`dyseg`). Segments are the runs of frames between cuts.
2. **STPrune** — every frame gets a share ``keep`` of the budget, split into ``salient = keep - int(keep * d)`` and
   ``context = int(keep * d)`` tokens.
   * *Salient* tokens: a frame's ``salient`` tokens that receive the most vision-encoder attention
     (:attr:`VideoTokens.attention`), kept unchanged.
   * *Context* tokens: a segment's context budget goes to its **anchor frames** only — the segment's last frame and
     every ``p``-th frame counting back from it (:func:`anchor_frames`). An anchor frame's anchors are the
     density peaks among its non-salient tokens (DPC-kNN score ``density * delta``, ``k = 4``).
   * **DTM** (density-weighted temporal merge) — every non-salient token of *every* frame of the segment joins the
     most cosine-similar anchor of each anchor frame (with two anchor frames a token joins one anchor of each); an
     anchor that ``n`` tokens joined (itself included) becomes ``w x_anchor + (1 - w) mean(joined)`` with
     ``w = max(1 / (n + 1), beta)`` (:func:`dtm_merge`). The merged token sits at its **anchor's** position.
3. Survivors keep their original positions (FastVID does the same, in every port).

Layout: DySeg and the budget counts live in :mod:`~tokpress.policies.outer.fastvid_segments`, the DTM and the plan
assembly in :mod:`~tokpress.policies.outer.fastvid_merge`; their public names are re-exported here.

Cost. Per segment, its non-salient tokens' unit rows are gathered once (``Q x D``); per anchor frame, one DPC-kNN
over its ``n`` non-salient tokens (``n^2 D``; skipped when the frame's share takes all ``n``: then every token is an
anchor) and one ``Q x m`` cosine matrix, argmax and group sums reading the segment's tokens in place; the output is
written once, straight to its sorted rows. Python loops run over segments and anchor frames (about ``T / p`` plus
the segments), never over tokens. Host syncs: a fixed few for the counts, plus one per anchor frame in the Qwen
form (its list of joining tokens). Every matrix product has the shapes of the straightforward form, so the result
is bit-identical to it on CPU (tests/test_selection_speedups_16.py restates that form).

Budget mapping. The reference keeps ``int(P * r)`` tokens per frame for ``retain_ratio = r``; tokpress keeps exactly
``budget`` (``round(r * N)``), reconciled as follows (:func:`stprune_counts`):

* frame shares: each frame gets ``floor`` or ``ceil`` of ``budget / T`` (the extra tokens on evenly spread frames);
* per frame ``salient = keep - int(keep * d)`` and ``context = keep - salient`` (the reference's split);
* a segment's context budget ``C`` (the sum over its frames) is split over its ``A = ceil(S / p)`` anchor frames:
  ``C // A`` each, the remainder ``C % A`` one token each to the anchor frames nearest the segment's end;
* an anchor frame has only ``P - salient`` candidate anchors: what it cannot hold goes first to the segment's
  other anchor frames with room, then to its non-anchor frames as extra salient tokens (both filled from the
  segment's end backwards). The segment's frames always have room for it, so the total is exactly ``budget``.

``Plan.sizes`` are floats: a salient token stands for 1 token; an anchor that ``n`` tokens joined stands for
``n / A'`` tokens (``A'`` = the segment's anchor frames that hold anchors, since each token joins one anchor in each
of them). They sum to ``N`` unless a segment's context budget is zero (then its non-salient tokens are dropped).

Deviations from the reference code, and why:

* Vision attention: for LLaVA the reference reads the SigLIP attention-pooling (MAP) head's probe attention, but HF
  LLaVA-OneVision checkpoints ship the vision tower without that head (``vision_use_head=False``). tokpress uses the
  engine's mean-query proxy of the last vision block for every family — FastVID's own choice for Qwen2.5-VL.
* Frame global feature: the mean of the frame's projected tokens for every family (the Qwen2.5-VL port's choice);
  the LLaVA ports use the MAP head's pooled output, unavailable for the same reason.
* Exact budget (above). The reference keeps ``T * int(P * r)`` tokens less the anchor remainders ``C % A`` it drops
  (at most 608 of LLaVA-OneVision's 6272 at ``r = 0.1``, where ``round(r N) = 627``), and it fails when an anchor
  frame's share exceeds its non-salient tokens (from ``r`` ~0.45 on with ``p = 4``).
* DTM is applied uniformly: every segment's anchor frames absorb all non-salient tokens of the segment. The
  reference picks its single-frame path by testing ``anchor share == per-frame context``, which also catches
  multi-frame segments (always with ``p = 1``, and e.g. ``S = 3, p = 2`` with one context token per frame); there
  each anchor frame merges only its own tokens and the non-anchor frames' tokens are dropped.
* DySeg asks for ``min(c - 1, T - 1)`` lowest similarities (the reference's ``topk`` fails on short videos); ties go to
  the earlier transition. Salient and anchor ties go to the lower index (stable sorts).
* DPC-kNN is tokpress's :func:`~tokpress.ops.dpc_knn` (shared with HoliTom and PruneVid), the reference's rule —
  ``topk(k = 4)`` of the distance row counts the token itself, so the density averages it and its 3 nearest others;
  the densest token's ``delta`` is the frame's largest distance — with ties broken by index instead of the
  reference's ``1e-6`` random noise (reproducible runs).
* An anchor always joins its own group (the reference relies on ``cos(x, x)`` being the unique maximum).
* ``budget == N`` returns every token unmerged (the identity plan), so ``retain_ratio = 1`` is exact; the rule above
  would otherwise still merge the anchors of a segment's anchor frames into each other.

Qwen form (the authors' Qwen2.5-VL code, their defaults ``tau = 0.84``, ``ignore = 0.95``; :func:`qwen_counts`):

1. DySeg as above (with ``tau = 0.84``).
2. Per segment of ``S`` frames with budget ``R`` (the sum of its frames' shares): ``C = max(int(R d), 1)`` context
   tokens — every segment keeps at least one merged token — and ``R - C`` salient tokens.
3. A one-frame segment puts both on its frame. A longer segment is cut again into **sub-segments** wherever the
   adjacent-frame similarity of the global features is below ``ignore``; only each sub-segment's *last* frame gets
   tokens. The salient tokens are split evenly over the ``V`` sub-segments (the remainder to the earliest); the
   context tokens evenly over the ``ceil(V / p)`` anchor sub-segments — the last one and every ``p``-th counting
   back (the remainder to those nearest the end) — each capped at ``P // 2``; a frame's salient count is capped at
   ``P`` minus its context.
4. Salient tokens: top attention of their frame. Anchors: DPC-kNN peaks (``k = 4``) among the frame's non-salient
   tokens.
5. DTM per anchor frame ``f``: every token of the segment that is neither salient nor one of ``f``'s own anchors
   joins ``f``'s most cosine-similar anchor; an anchor joined by ``n`` tokens becomes ``w x_anchor + (1 - w)
   mean(joined)`` with ``w = max(1 / (n + 1), beta)`` — the average excludes the kept tokens (the LLaVA form's
   includes the anchor itself) and an anchor nothing joined stays as it is.

Qwen-form budget: the reference loses what its caps cut off (it keeps 24.1 % at ``r = 0.27``); tokpress gives those
tokens to the segment as extra salient tokens — first on its sub-segments' last frames (latest first), then on its
other frames (latest first) — so the total is exactly ``budget``. ``C`` is at most ``R`` (a segment with ``R = 0``
keeps nothing). ``Plan.sizes``: a salient token stands for 1; an anchor for itself plus ``1 / A'`` of each joining
token that is not another frame's anchor (``A'`` = the segment's anchor frames), so the sizes of a segment with
``R > 0`` sum to its token count. The reference's dead assignment after the ``P // 2`` cap changes nothing and is
not reproduced.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import cosine_adjacent, dpc_knn, primal, rows_reduce_alike
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.policies.outer.fastvid_merge import (
    assemble_plan,
    dtm_merge,
    dtm_merge_excluding,
    dtm_rows,
    dtm_rows_excluding,
    gathered_unit_rows,
    unit_rows,
)
from tokpress.policies.outer.fastvid_segments import anchor_frames, dyseg, qwen_counts, stprune_counts
from tokpress.registry import register_policy

__all__ = [
    "FastVIDConfig",
    "FastVIDPolicy",
    "anchor_frames",
    "dtm_merge",
    "dtm_merge_excluding",
    "dyseg",
    "gathered_unit_rows",
    "qwen_counts",
    "stprune_counts",
    "unit_rows",
]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class FastVIDConfig(PolicyConfig):
    """Options of :class:`FastVIDPolicy` (the paper's defaults)."""

    #: DySeg: at least ``c`` segments — cut at the ``c - 1`` lowest adjacent-frame similarities
    c: int = 8
    #: DySeg: also cut wherever the adjacent-frame similarity of the global features is below ``tau``; ``None``: the
    #: form's default (0.9 LLaVA, 0.84 Qwen)
    tau: float | None = None
    #: STPrune: share of each frame's tokens that are context (merged anchors); ``salient = keep - int(keep * d)``
    d: float = 0.4
    #: DTM: anchor frames are a segment's last frame and every ``p``-th frame counting back from it
    p: int = 4
    #: DTM: lower bound of an anchor's own weight, ``w = max(1 / (n + 1), beta)``
    beta: float = 0.6
    #: DPC-kNN: the density of a token averages its ``k`` smallest squared distances (itself, at 0, included)
    k: int = 4
    #: ``"auto"`` (Qwen form for Qwen families, LLaVA form otherwise), ``"llava"`` or ``"qwen"``
    form: str = "auto"
    #: Qwen form: inside a segment, cut sub-segments where the adjacent-frame similarity is below ``ignore``
    ignore: float = 0.95

    def tau_for(self, form: str) -> float:
        """DySeg's ``tau`` for ``form`` (``"llava"`` / ``"qwen"``): the option, or the authors' default."""
        if self.tau is not None:
            return float(self.tau)
        return 0.84 if form == "qwen" else 0.9

    def form_for(self, family: str) -> str:
        """The form to run on ``family`` (``VideoTokens.family``)."""
        if self.form != "auto":
            return self.form
        return "qwen" if family.startswith("qwen") else "llava"

    def validate(self) -> None:
        self.check(_is_int(self.c) and self.c >= 1, f"c must be an int >= 1 (minimum segments), got {self.c!r}")
        self.check(
            self.tau is None or (_is_num(self.tau) and -1 <= self.tau <= 1),
            f"tau must be a cosine threshold in [-1, 1] (or None for the form's default), got {self.tau!r}",
        )
        self.check(
            _is_num(self.ignore) and -1 <= self.ignore <= 1,
            f"ignore must be a cosine threshold in [-1, 1], got {self.ignore!r}",
        )
        self.check(
            self.form in ("auto", "llava", "qwen"), f"form must be 'auto', 'llava' or 'qwen', got {self.form!r}"
        )
        self.check(_is_num(self.d) and 0 <= self.d <= 1, f"d must be a number in [0, 1], got {self.d!r}")
        self.check(_is_int(self.p) and self.p >= 1, f"p must be an int >= 1 (anchor-frame spacing), got {self.p!r}")
        self.check(_is_num(self.beta) and 0 <= self.beta <= 1, f"beta must be a number in [0, 1], got {self.beta!r}")
        self.check(_is_int(self.k) and self.k >= 1, f"k must be an int >= 1 (DPC-kNN neighbours), got {self.k!r}")


@register_policy("fastvid", stage="outer")
class FastVIDPolicy(OuterPolicy):
    config_cls = FastVIDConfig
    needs_vision_attention = True

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        cfg = self.config
        g = video.grid
        t, p, n = g.frames, g.per_frame, g.numel
        att = video.attention
        if att is None:
            raise InputError(
                "fastvid needs the vision encoder's attention (VideoTokens.attention), but none was given; "
                "use a model family whose adapter captures vision attention, or another outer policy (e.g. 'uniform')"
            )
        if att.shape != (n,):
            raise InputError(f"fastvid: attention must have shape ({n},), got {tuple(att.shape)}")
        x = video.features
        device = x.device
        if budget >= n:
            return Plan(torch.arange(n, device=device))
        form = cfg.form_for(video.family)
        global_features = primal(x).reshape(t, p, -1).float().mean(1)
        lengths = dyseg(global_features, cfg.c, cfg.tau_for(form))
        if form == "qwen":
            sim = cosine_adjacent(global_features[:, None, :]).squeeze(1)
            salient, anchors = qwen_counts(lengths, sim, p, budget, cfg.d, cfg.p, cfg.ignore)
        else:
            salient, anchors = stprune_counts(lengths, p, budget, cfg.d, cfg.p)

        # salient tokens: the top-`salient[t]` of each frame by attention (stable: ties to the lower index)
        order = torch.sort(att.reshape(t, p).float(), dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(p, device=device).expand(t, p))
        is_salient = (rank < salient[:, None]).flatten()
        top = is_salient.nonzero().squeeze(1)
        pieces = [(top, x.index_select(0, top), torch.ones(top.numel(), device=device))]
        free = (~is_salient).nonzero().squeeze(1)  # [N - salient] every frame's non-salient tokens, frame by frame
        pieces += self._merges(x, p, form, lengths, anchors, free, (p - salient).tolist())
        return assemble_plan(x, pieces)

    def _centers(self, x: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
        """An anchor frame's ``count`` anchors among its non-salient grid rows ``rows`` ``[n]``: indices into ``rows``.

        DPC-kNN peaks; when the frame's share covers all ``n`` tokens every token is a peak, which is
        :func:`~tokpress.ops.dpc_knn`'s answer too (``arange(n)``) without its ``n x n`` distances."""
        if count >= rows.numel():
            return torch.arange(rows.numel(), device=rows.device)
        return dpc_knn(x.index_select(0, rows), count, k=self.config.k)[0]

    def _merges(
        self,
        x: torch.Tensor,
        p: int,
        form: str,
        lengths: torch.Tensor,
        anchors: torch.Tensor,
        free: torch.Tensor,
        n_free: list[int],
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """DTM of every segment: one ``(grid indices, merged features, sizes)`` per anchor frame.

        ``x`` ``[T * p, D]`` the features, ``lengths`` ``[n_seg]`` the segments, ``anchors`` ``[T]`` anchors per
        frame, ``free`` ``[N - salient]`` every frame's non-salient grid indices in order, ``n_free`` their count per
        frame.

        Python loops over the segments and their anchor frames (about T / p + segments iterations, never over
        tokens): segments are ragged (lengths, anchor frames, anchors per frame) and each anchor frame absorbs the
        whole segment on its own, so every iteration is one vectorised DPC-kNN + merge over a segment's tokens.
        Batching all segments at once would need a tokens x anchors matrix across segments, quadratic in T. A
        segment's tokens are read in place (its slice of the grid, the salient rows routed to a spare group); only
        its pool's unit rows are gathered, once."""
        cfg = self.config
        anchors_l, pieces = anchors.tolist(), []
        first_free = [0, *itertools.accumulate(n_free)]  # where each frame's non-salient tokens start in `free`
        row_local = rows_reduce_alike(x)
        start = 0
        for length in lengths.tolist():
            stop = start + length
            absorbing = [f for f in range(start, stop) if anchors_l[f] > 0]  # at most ceil(length / p) frames
            if absorbing:
                pool = free[first_free[start] : first_free[stop]]  # [Q] grid indices, ascending
                members = pool - start * p  # the pool's rows in the segment's slice
                segment = x[start * p : stop * p].float()  # a view for float32 features
                unit = gathered_unit_rows(x, pool) if row_local else None  # [Q, D], once for all anchor frames
                x_pool = None if row_local else x.index_select(0, pool).float()
                centers = []
                for f in absorbing:
                    offset = first_free[f] - first_free[start]  # the frame's first row in `pool`
                    centers.append(self._centers(x, pool[offset : offset + n_free[f]], anchors_l[f]) + offset)
                if form == "qwen":  # every anchor of the segment: the joining rows that are kept tokens themselves
                    is_anchor = torch.zeros(pool.numel(), dtype=torch.bool, device=x.device)
                    is_anchor[torch.cat(centers)] = True
                for own in centers:
                    if form == "qwen":
                        other = is_anchor.clone()
                        other[own] = False
                        merged, size = dtm_rows_excluding(
                            segment, members, x_pool, unit, own, cfg.beta, other, len(absorbing)
                        )
                    else:
                        merged, joined = dtm_rows(segment, members, x_pool, unit, own, cfg.beta)
                        size = joined / len(absorbing)
                    pieces.append((pool.index_select(0, own), merged, size))
            start = stop
        return pieces
