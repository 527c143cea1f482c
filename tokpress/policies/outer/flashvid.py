"""``flashvid`` — FlashVID (Fan et al., ICLR 2026 oral, "FlashVID: Efficient Video Large Language Models via
Training-free Tree-based Spatiotemporal Token Merging"), the vision-side stage. The paper's inner-LLM stage (at layer
20 of 28 keep the 30 % of visual tokens the last query attends to most) is FastV's rule: tokpress's ``fastv`` inner
policy, paired with this one by a preset.

Algorithm, on one video of ``T`` frames of ``P`` tokens:

1. **DySeg** (FastVID's segmentation, :func:`~tokpress.policies.outer.fastvid.dyseg`): a frame's global feature is
   the mean of its tokens; the video is cut after every transition whose adjacent-frame cosine is below
   ``segment_threshold`` and after the ``min_segment_num - 1`` lowest ones.
2. Every frame gets a share ``b_t`` of the budget: ``a_t = ceil(b_t * alpha)`` tokens are *selected* (ADTS) and
   ``b_t - a_t`` go to the segment's merged tokens (TSTM); a segment's merged budget is ``C = sum(b_t - a_t)``.
3. **ADTS** (attention and diversity-based token selection, :func:`adts_order`), per frame: greedy max-min diversity
   on the calibrated distance ``D[i, j] = (1 - cos(x_i, x_j)) * w_j`` — the first pick maximises ``D`` to its
   nearest other token, every next pick maximises its minimum ``D`` to the tokens already picked. The calibration
   ``w`` (:func:`adts_weights`) is, by ``token_selection_method``: ``"attn_div"`` the vision attention the token
   receives; ``"attn_div_v2"`` that attention times the token's *event relevance* ``x_j . g``, ``g`` the mean token
   of the frame's segment (a raw dot product); ``"div"`` 1 (plain max-min diversity); ``"attn"`` is no greedy at
   all but the top-``a_t`` tokens by attention.
4. **TSTM** (tree-based spatiotemporal merging, :func:`tstm_roots`), per segment: every unselected token of a
   frame after the segment's first links to its most cosine-similar *unselected* token of the previous frame when
   that similarity exceeds ``temporal_threshold``; links chain across frames, so the unselected tokens form trees
   whose roots are the tokens that did not link. At most ``S P - sum(b_t)`` tokens link (the most similar first),
   so at least ``C`` roots remain. Each tree becomes one token: the mean of its members, at its root's position.
5. **Spatial merge**, per frame: the segment's ``C`` tokens are split over its frames by their roots (one each, the
   rest in proportion, :func:`cluster_counts`); a frame that must keep fewer tokens than it has roots clusters the
   roots' tree tokens with DPC-kNN (``k = min(clusters, k)``) into the plain mean of each cluster, placed at its
   center's position.

The kept tokens are the selected tokens (unchanged, standing for 1 token) and the tree / cluster tokens (standing
for every token merged into them). Tokens keep their original positions.

Budget mapping. ``retain_ratio`` is the fraction of video tokens *entering the LLM* (tokpress's convention). The
authors' ``retention_ratio`` ``r`` is a budget averaged over the decoder layers: ``ceil(P r * expansion)`` tokens per
frame enter the LLM (``expansion = 1.25``) and the inner stage keeps 30 % of them from layer 20 of 28 on, so
``(20 * 1.25 + 8 * 0.375) / 28 = 1``: the layers see ``r`` on average. The paper's rows ``r = 0.10 / 0.15 / 0.20 /
0.25`` are therefore ``retain_ratio = 1.25 r = 0.125 / 0.1875 / 0.25 / 0.3125`` here. tokpress keeps exactly
``budget`` tokens:

* frame shares ``b_t``: ``floor`` or ``ceil`` of ``budget / T`` (the extra tokens on evenly spread frames), in place
  of the reference's uniform ``ceil(P r * expansion)``; ``a_t = ceil(b_t * alpha)`` as in the reference;
* the TSTM link cap ``S P - sum(b_t)`` leaves a segment at least ``C`` roots (the reference's "lower bound");
* :func:`cluster_counts` splits ``C`` over the frames exactly, where the reference's per-frame ``ceil(n_t C / R)``
  overshoots by up to one token per frame.

``Plan.sizes`` sum to ``N`` unless a segment keeps fewer merged tokens than it has frames with roots (or none at all,
``alpha = 1`` or tiny budgets): the roots that get no cluster are dropped then.

Model families. The authors run LLaVA-OneVision / LLaVA-Video with ``"attn_div_v2"`` and ``min_segment_num = 8``,
Qwen2.5-VL and Qwen3-VL with ``"attn_div"`` and ``min_segment_num = 4``; ``form="auto"`` (default) picks the Qwen
settings when ``VideoTokens.family`` starts with ``qwen`` and the LLaVA ones otherwise (the ``flashvid()`` wrapper's
defaults); ``token_selection_method`` / ``min_segment_num`` override either. The vision attention is the engine's
``"full"`` mode, as the reference computes it: the last vision block's attention map within the frame, averaged
over heads and over *all* queries.

Deviations from the reference code (Fanziyang-v/FlashVID), and why:

* Exact budget (above). The reference's TSTM "soft threshold" (used when too many tokens would link) links the
  tokens *strictly* above the k-th largest similarity — one token fewer than its lower bound allows; tokpress links
  exactly up to the cap, the most similar first (ties to the lower raster index).
* Tree tokens are the mean of all their members. The reference accumulates the members' *sums* down the tree but
  counts only a token's *direct* children, so a chain of three frames becomes ``(x0 + x1 + x2) / 2``.
* One-frame segments: the reference hands *all* the frame's tokens, the selected ones included, to the spatial
  clustering, so a selected token can be emitted twice; tokpress clusters the unselected ones, as for longer
  segments. With ``temporal_threshold >= 1`` the reference skips TSTM *and* the spatial stage, dropping every
  unselected token; tokpress still clusters them (nothing links).
* ADTS masks the tokens already picked for every method (``"attn_div_v2"`` in the reference lacks the mask
  ``"attn_div"`` has, so with non-positive calibrated scores it can pick a token twice and keep fewer); the first
  pick's nearest-other distance excludes the token itself explicitly (the reference takes the column's second
  smallest entry, assuming the self-distance is the smallest). The reference's ``1e6`` attention scale is dropped
  (it scales every score alike).
* DySeg is FastVID's: cut below ``tau`` plus the ``c - 1`` lowest transitions — the same cuts as the reference's
  "below the threshold, then the lowest of the rest", but the count is capped at ``T - 1`` (the reference's
  complementary ``topk`` can re-pick a cut transition when ``T < min_segment_num``, giving empty segments).
  ``do_segment=False`` is ``min_segment_num=1, segment_threshold=-1``; ``complementary_segment=False`` is
  ``min_segment_num=1``.
* DPC-kNN is the shared :func:`~tokpress.ops.dpc_knn` (the reference's rule) with ties broken by index instead of
  random noise; with one cluster (``k = 1``: every density 1) the center is then the frame's first root.
* Vision attention is summed over the 2 x 2 patches merged into a Qwen token (the reference averages them: a
  constant factor that scales every calibrated score alike) and pooled bilinearly for LLaVA-OneVision as the
  reference does (LLaVA-Video's average pooling is not modelled).
* Ties in argmax / sorts go to the lowest index; all similarities and merges run in float32 (the reference works in
  the model dtype), merged features are returned in the input dtype.
* Positions: kept tokens keep their original positions (the reference does so for Qwen; for LLaVA it renumbers
  the shortened sequence contiguously).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import apportion, cosine_matrix, dpc_knn, group_mean, group_size
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.policies.outer.fastvid import dyseg
from tokpress.registry import register_policy

#: ADTS scoring rules (``token_selection_method``)
SELECTIONS = ("attn_div_v2", "attn_div", "attn", "div")
#: per form: (token_selection_method, min_segment_num) the authors' scripts use
FORMS = {"llava": ("attn_div_v2", 8), "qwen": ("attn_div", 4)}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class FlashVIDConfig(PolicyConfig):
    """Options of :class:`FlashVIDPolicy` (the authors' defaults; ``None`` = the form's default)."""

    #: share of each frame's budget selected by ADTS, ``a_t = ceil(b_t * alpha)``; the rest is merged by TSTM
    alpha: float = 0.7
    #: TSTM: a token links to its most similar unselected token of the previous frame above this cosine
    temporal_threshold: float = 0.8
    #: DySeg: cut wherever the cosine of adjacent frames' mean tokens is below this
    segment_threshold: float = 0.9
    #: DySeg: at least this many segments (cuts at the ``min_segment_num - 1`` lowest transitions); None: the form's
    #: (8 LLaVA, 4 Qwen)
    min_segment_num: int | None = None
    #: ADTS calibration: "attn_div_v2" (attention x event relevance), "attn_div" (attention), "div" (none) or "attn"
    #: (attention top-k, no diversity); None: the form's ("attn_div_v2" LLaVA, "attn_div" Qwen)
    token_selection_method: str | None = None
    #: spatial merge: DPC-kNN density over ``min(clusters, k)`` nearest tokens (the token itself included)
    k: int = 7
    #: "auto" (the Qwen settings for Qwen families, the LLaVA ones otherwise), "llava" or "qwen"
    form: str = "auto"

    def validate(self) -> None:
        self.check(
            _is_num(self.alpha) and 0 <= self.alpha <= 1, f"alpha must be a number in [0, 1], got {self.alpha!r}"
        )
        for name in ("temporal_threshold", "segment_threshold"):
            value = getattr(self, name)
            self.check(_is_num(value) and -1 <= value <= 1, f"{name} must be a cosine in [-1, 1], got {value!r}")
        self.check(
            self.min_segment_num is None or (_is_int(self.min_segment_num) and self.min_segment_num >= 1),
            f"min_segment_num must be an int >= 1 (or None for the form's default), got {self.min_segment_num!r}",
        )
        self.check(
            self.token_selection_method is None or self.token_selection_method in SELECTIONS,
            f"token_selection_method must be one of {', '.join(SELECTIONS)} (or None for the form's default), "
            f"got {self.token_selection_method!r}",
        )
        self.check(_is_int(self.k) and self.k >= 1, f"k must be an int >= 1 (DPC-kNN neighbours), got {self.k!r}")
        self.check(self.form in ("auto", *FORMS), f"form must be 'auto', 'llava' or 'qwen', got {self.form!r}")

    def resolve(self, family: str) -> tuple[str, int]:
        """``(token_selection_method, min_segment_num)`` to use on ``family`` (``VideoTokens.family``)."""
        form = self.form if self.form != "auto" else ("qwen" if family.startswith("qwen") else "llava")
        method, segments = FORMS[form]
        return (
            self.token_selection_method if self.token_selection_method is not None else method,
            self.min_segment_num if self.min_segment_num is not None else segments,
        )


def frame_shares(frames: int, budget: int, device=None) -> torch.Tensor:
    """``[T]`` per-frame budgets ``b_t``: ``floor`` or ``ceil`` of ``budget / T``, summing to ``budget``."""
    bounds = torch.div(torch.arange(frames + 1, device=device) * budget, frames, rounding_mode="floor")
    return bounds[1:] - bounds[:-1]


def selected_counts(shares: torch.Tensor, alpha: float) -> torch.Tensor:
    """``[T]`` ADTS picks per frame, ``ceil(b_t * alpha)`` in double precision (the reference's Python floats)."""
    return torch.minimum(torch.ceil(shares.double() * alpha).long(), shares)


def adts_weights(
    x: torch.Tensor, attention: torch.Tensor | None, lengths: torch.Tensor, method: str
) -> torch.Tensor | None:
    """ADTS calibration ``w`` ``[T, P]`` float32 (``None`` for ``"div"``: no calibration).

    Args:
        x: ``[T, P, D]`` token features.
        attention: ``[T, P]`` vision attention each token receives (needed unless ``method == "div"``).
        lengths: ``[n_seg]`` DySeg segment lengths (``"attn_div_v2"``'s event relevance uses the segment's mean).
        method: one of :data:`SELECTIONS`.
    """
    if method == "div":
        return None
    w = attention.float()
    if method == "attn_div_v2":
        seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=x.device), lengths)
        mean = group_mean(x.float().mean(1), seg, lengths.numel())  # [n_seg, D]: mean token of each segment
        w = w * torch.einsum("tpd,td->tp", x.float(), mean[seg])  # event relevance x_j . g (a raw dot product)
    return w


def adts_order(x: torch.Tensor, weight: torch.Tensor | None, k: int) -> torch.Tensor:
    """Greedy calibrated max-min diversity in every frame at once: ``[T, k]`` picks in pick order.

    ``D[t, i, j] = (1 - cos(x_ti, x_tj)) * w_tj``; the first pick of a frame maximises ``min_{i != j} D[i, j]``,
    every next pick ``min_{s picked} D[s, j]`` over the tokens not yet picked (ties: the lowest index).

    Args:
        x: ``[T, P, D]`` token features.
        weight: ``[T, P]`` calibration (``None``: 1).
        k: picks per frame, ``0 <= k <= P``.
    """
    t, p, _ = x.shape
    picks = torch.empty(t, k, dtype=torch.long, device=x.device)
    if k == 0:
        return picks
    dist = 1.0 - cosine_matrix(x)  # [T, P, P] float32
    if weight is not None:
        dist = dist * weight.float()[:, None, :]
    eye = torch.eye(p, dtype=torch.bool, device=x.device)
    pick = dist.masked_fill(eye, float("inf")).amin(1).argmax(-1)  # [T]: nearest *other* token, calibrated
    picks[:, 0] = pick
    row = torch.gather(dist, 1, pick[:, None, None].expand(t, 1, p)).squeeze(1)
    to_set = row.scatter(1, pick[:, None], float("-inf"))  # min calibrated distance to the picks; picked: -inf
    for i in range(1, k):  # greedy: each pick depends on every earlier one (inherently sequential), vectorised over T
        pick = to_set.argmax(-1)
        picks[:, i] = pick
        row = torch.gather(dist, 1, pick[:, None, None].expand(t, 1, p)).squeeze(1)
        to_set = torch.minimum(to_set, row).scatter_(1, pick[:, None], float("-inf"))
    return picks


def adts_select(
    x: torch.Tensor, attention: torch.Tensor | None, lengths: torch.Tensor, counts: torch.Tensor, method: str
) -> torch.Tensor:
    """``[T, P]`` bool: the ``counts[t]`` tokens ADTS selects in each frame ``t`` (see :func:`adts_order`)."""
    t, p, _ = x.shape
    k = int(counts.max()) if t else 0
    if method == "attn":
        order = torch.sort(attention.float(), dim=1, descending=True, stable=True).indices[:, :k]
    else:
        order = adts_order(x, adts_weights(x, attention, lengths, method), k)
    take = torch.arange(k, device=x.device)[None, :] < counts[:, None]  # a frame keeps its first counts[t] picks
    selected = torch.zeros(t, p, dtype=torch.bool, device=x.device)
    return selected.scatter_(1, order, take)


def tstm_roots(
    x: torch.Tensor, selected: torch.Tensor, lengths: torch.Tensor, limit: torch.Tensor, threshold: float
) -> torch.Tensor:
    """TSTM's redundancy trees: ``[T * P]`` flat index of each token's tree root (``-1`` for selected tokens).

    An unselected token of a frame after its segment's first links to its most cosine-similar unselected token of
    the previous frame (ties: the lowest index) when that similarity exceeds ``threshold``; in each segment only the
    ``limit[s]`` most similar candidates link (ties: the lower raster index). A token that does not link is a root.

    Args:
        x: ``[T, P, D]`` token features.
        selected: ``[T, P]`` bool, the ADTS tokens (never linked, never linked to).
        lengths: ``[n_seg]`` segment lengths.
        limit: ``[n_seg]`` the most links each segment may make.
        threshold: the cosine a link must exceed.
    """
    t, p, _ = x.shape
    n, device = t * p, x.device
    seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)  # [T]
    first = lengths.cumsum(0) - lengths  # [n_seg] first frame of each segment
    best = torch.full((t, p), float("-inf"), device=device)
    parent = torch.zeros(t, p, dtype=torch.long, device=device)
    if t > 1:
        sim = cosine_matrix(x[1:], x[:-1]).masked_fill(selected[:-1, None, :], float("-inf"))  # [T-1, P, P]
        parent[1:] = sim.argmax(-1)
        best[1:] = sim.gather(-1, parent[1:, :, None]).squeeze(-1)
    best[first] = float("-inf")  # a segment's first frame has no previous frame
    best = best.masked_fill(selected, float("-inf")).flatten()
    candidate = best > threshold  # never true for -inf
    # rank the candidates of each segment by similarity: sort by similarity, then (stably) by segment
    token_seg = seg.repeat_interleave(p)
    order = torch.sort(best.masked_fill(~candidate, float("-inf")), descending=True, stable=True).indices
    order = order[torch.sort(token_seg[order], stable=True).indices]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=device)
    rank = rank - (first * p)[token_seg]  # a segment's tokens occupy the flat range first*P .. (first+S)*P
    linked = candidate & (rank < limit[token_seg])
    frame = torch.arange(n, device=device) // p
    pointer = torch.where(linked, (frame - 1) * p + parent.flatten(), torch.arange(n, device=device))
    for _ in range(max(1, t.bit_length())):  # pointer doubling: a chain spans at most T - 1 links
        pointer = pointer[pointer]
    return torch.where(selected.flatten(), -1, pointer)


def cluster_counts(roots: torch.Tensor, lengths: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
    """``[T]`` tokens each frame's roots are merged into, summing to ``merged[s]`` over segment ``s``.

    Each frame with roots gets one (when the segment's ``merged`` covers every such frame), the rest is split in
    proportion to the frames' remaining roots (largest remainder, :func:`~tokpress.ops.apportion`); if ``merged``
    is smaller, it is split in proportion to the roots. No frame gets more than its roots.

    Args:
        roots: ``[T]`` roots per frame.
        lengths: ``[n_seg]`` segment lengths.
        merged: ``[n_seg]`` merged tokens per segment (at most its roots).
    """
    out, start = [], 0
    for length, total in zip(lengths.tolist(), merged.tolist()):  # a loop over segments
        n = roots[start : start + length]
        base = (n > 0).long() if total >= int((n > 0).sum()) else torch.zeros_like(n)
        out.append(base + apportion(total - int(base.sum()), n - base))
        start += length
    return torch.cat(out)


def spatial_merge(
    feats: torch.Tensor, sizes: torch.Tensor, k: int, knn: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge one frame's ``n`` tree tokens ``feats`` ``[n, D]`` (standing for ``sizes`` ``[n]``) into ``k`` tokens.

    ``k == n`` keeps them; ``k == 0`` drops them; otherwise DPC-kNN (``min(k, knn)`` neighbours) picks ``k`` centers
    and each cluster becomes the plain mean of its tree tokens, standing for the sum of their sizes.

    Returns:
        ``local [k]`` (the centers, indices into ``feats``), ``features [k, D]`` float32 and ``sizes [k]``.
    """
    n = feats.shape[0]
    if k >= n:
        return torch.arange(n, device=feats.device), feats.float(), sizes
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=feats.device), feats[:0].float(), sizes[:0]
    centers, assign, _ = dpc_knn(feats, k, k=min(k, knn))
    return centers, group_mean(feats, assign, k), group_size(assign, k, sizes)


@register_policy("flashvid", stage="outer")
class FlashVIDPolicy(OuterPolicy):
    config_cls = FlashVIDConfig
    needs_vision_attention = True
    vision_attention = "full"  # the reference averages the last block's attention map over heads and all queries

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        cfg = self.config
        g = video.grid
        t, p, n = g.frames, g.per_frame, g.numel
        x = video.features
        device = x.device
        method, min_segments = cfg.resolve(getattr(video, "family", "") or "")
        att = video.attention
        if att is None and method != "div":
            raise InputError(
                "flashvid needs the vision encoder's attention (VideoTokens.attention), but none was given; use a "
                "model family whose adapter captures vision attention, token_selection_method='div', or another "
                "outer policy (e.g. 'uniform')"
            )
        if att is not None and att.shape != (n,):
            raise InputError(f"flashvid: attention must have shape ({n},), got {tuple(att.shape)}")
        if budget >= n:
            return Plan(torch.arange(n, device=device))
        frames = x.reshape(t, p, -1)
        att = att.to(device).reshape(t, p) if att is not None else None
        lengths = dyseg(frames.float().mean(1), min_segments, cfg.segment_threshold)
        seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)

        shares = frame_shares(t, budget, device)
        picks = selected_counts(shares, cfg.alpha)
        selected = adts_select(frames, att, lengths, picks, method)

        def per_segment(v: torch.Tensor) -> torch.Tensor:
            return torch.zeros(lengths.numel(), dtype=torch.long, device=device).index_add_(0, seg, v)

        merged = per_segment(shares - picks)  # C per segment
        limit = lengths * p - per_segment(shares)  # links allowed: S P - sum(b_t) leaves at least C roots
        root = tstm_roots(frames, selected, lengths, limit, cfg.temporal_threshold)

        flat = x.reshape(n, -1)
        free = root >= 0
        is_root = root == torch.arange(n, device=device)
        root_id = torch.cumsum(is_root.long(), 0) - 1  # roots numbered in raster (hence frame) order
        n_roots = int(is_root.sum())
        members = root_id[root[free]]
        tree_feats = group_mean(flat[free], members, n_roots)  # [R, D] float32: each tree's mean
        tree_sizes = group_size(members, n_roots)
        root_index = is_root.nonzero().squeeze(1)
        roots_per_frame = is_root.view(t, p).sum(1)
        counts = cluster_counts(roots_per_frame, lengths, merged)

        keep = [selected.flatten().nonzero().squeeze(1)]
        feats = [flat[keep[0]].float()]
        sizes = [torch.ones(keep[0].numel(), device=device)]
        bounds = [0, *torch.cumsum(roots_per_frame, 0).tolist()]
        for f, k in enumerate(counts.tolist()):  # a loop over frames: ragged root counts, one DPC-kNN each
            lo, hi = bounds[f], bounds[f + 1]
            if hi == lo:
                continue
            local, merged_feats, merged_sizes = spatial_merge(tree_feats[lo:hi], tree_sizes[lo:hi], k, cfg.k)
            keep.append(root_index[lo:hi][local])
            feats.append(merged_feats)
            sizes.append(merged_sizes)
        keep = torch.cat(keep)
        order = keep.argsort()
        return Plan(keep[order], torch.cat(feats)[order].to(x.dtype), torch.cat(sizes)[order])
