"""``scissor`` — LLaVA-Scissor (Sun, Zhao, Wei, Hou, 2025, arXiv 2506.21862, "LLaVA-Scissor: Token Compression with
Semantic Connected Components for Video LLMs").

Algorithm. SCC (semantic connected components) at a threshold ``tau``: two tokens are linked when their cosine
similarity is ``> tau``; every connected component becomes one token, the plain mean of its members, represented by
its highest-degree member (degree = how many of the graph's tokens, itself included, are ``> tau`` similar to it;
ties go to the lower index), and the components are ordered by that member.

1. **Spatial** — SCC of each frame's tokens; the frames' components one after the other.
2. **Temporal** — SCC, at the same ``tau``, of the graph over *all* the spatial means (across frames); a temporal
   token is the plain mean of its spatial means.
3. **Re-merge** — every original token joins its most cosine-similar temporal token (ties: the earlier one), and a
   temporal token ``f`` that ``count`` tokens joined becomes ``(f + sum(joined)) / (count + 1)``.

Budget mapping. The paper has no budget: ``tau`` (0.9 in the README, ``mm_zip_tau``) decides how many tokens remain.
tokpress searches the threshold so that exactly ``budget`` tokens remain (:func:`scissor`):

* The components at ``tau`` are those of the graph's **maximum spanning forest** (MSF) cut to its edges ``> tau``
  (single linkage), so a stage's count at any ``tau`` is ``nodes - #{MSF edges > tau}``. The MSFs come from
  vectorised Borůvka (:func:`spanning_forest` on the per-frame matrices, :func:`forest_in_order` on the temporal
  edge list) under a strict edge order (weight, then node pair), so ties are split deterministically.
* Stage 1 changes only at the distinct weights ``u_1 < ... < u_m`` of the per-frame MSF edges: *config* ``i`` is
  the spatial result for ``tau`` in ``[u_i, u_{i+1})`` (``u_0 = -inf``, ``u_{m+1} = +inf``), with ``M_i`` tokens
  (known for every ``i`` without running stage 2). On that interval the temporal count rises with ``tau`` up to
  ``hi_i`` = the number of components of the temporal graph ``sim >= u_{i+1}``.
* The search finds adjacent configs ``lo, hi = lo + 1`` with ``hi_lo < budget <= hi_hi``: the last config (all
  singletons) gives ``N``, configs with ``M_i < budget`` are skipped (``hi_i <= M_i``), and each step evaluates one
  config (stage 1 + the temporal similarities + a component count): interpolation in ``M_i`` with the Illinois
  correction, and a bisection step whenever an interpolation step did not halve the bracket, so ``O(log N)``
  evaluations. When ``hi_i`` rises with ``tau`` (the usual case) config ``hi`` holds the lowest shared threshold
  that yields ``budget`` tokens; otherwise a crossing of it.
* Exact count: stage 2 of config ``hi`` keeps its ``M - budget`` strongest temporal MSF edges, which leaves exactly
  ``budget`` components. If one shared threshold reproduces both stages — ``tau*`` = the larger of ``u_hi`` and
  the strongest dropped weight, when it is below both ``u_{hi+1}`` and the weakest kept weight — both stages use
  ``tau*`` (also for the degrees), exactly the reference at ``tau = tau*``. Otherwise the count jumps past the
  budget at ``u_hi`` or tied weights straddle the cut, and stage 2 merges a little below ``u_hi``: degrees are
  counted at ``tau1 = u_hi`` (stage 1) and ``tau2`` = the strongest dropped weight (stage 2), ties split by index.
  :class:`ScissorResult` reports ``tau1`` and ``tau2``.

Cost: the tokens' Gram matrix ``x x^T`` (``O(N^2 D)``, once; every similarity derives from it, so a token pair has the
same value in both stages), a bit-for-bit check that it is symmetric (as CPU BLAS makes it; otherwise its transpose is
kept as well) and the per-frame MSFs. An evaluation then builds only what its component count needs
(:class:`_Temporal`), never the ``[M, M]`` temporal matrix: a spatial pass (``O(N P)``); the similarity rows of the
``G`` components of two or more tokens (their ``U`` members' Gram rows summed, in index order as the dense form sums
them: ``O(U N + G N)``); and the edges between single-token components, which are token pairs, filtered from a cached
list of the token pairs at or above the threshold (``O(N^2)`` once, again only when a lower threshold comes). The final
merge lists the temporal edges down to the strongest dropped one (lowering a threshold in doubling steps) and takes
their spanning forest. A graph with more than ``_EDGE_CAP`` edges at a threshold falls back to the dense ``[M, M]``
form. Every value is the dense form's bit for bit (on CPU, whose ``index_add_`` sums in index order), so the result is
too (``tests/test_scissor_speed.py`` restates the dense form). Measured on a shared 2-core CPU, fp32, one thread, old
and new form interleaved in one process: 32 x 196 tokens took 4-6 s at ``D = 3584`` (dense form 26-30 s; the Gram
matrix and the re-merge's ``[N, k]`` cosines, two matmuls, are most of it) and 1.0-1.3 s at ``D = 448`` (dense form
14-16 s); 64 x 256 tokens at ``D = 448`` 10.5 s (dense form 210 s). Memory ``O(N^2)`` (the Gram matrix).

Positions: a kept token sits at the original index of its temporal representative's spatial representative. Those
are ascending in the reference's own component order (within a frame by representative, frames in order, then by
temporal representative), so ``Plan.keep`` lists the tokens in the reference's output order.

``Plan.sizes``: the re-merge averages ``count + 1`` summands (the joined tokens and the component mean), ``N +
budget`` summands for ``N`` tokens, so a kept token stands for ``(count + 1) N / (N + budget)`` tokens: positive
(a temporal token nobody joins still carries its component mean) and summing to ``N``. With ``remerge=False`` it is
the number of original tokens in the token's temporal component.

Deviations from the reference code (HumanMLLM/LLaVA-Scissor, ``llava/model/llava_arch_zip.py``), and why:

* Exact budget by the threshold search above, instead of a fixed ``tau`` and a count that varies per video.
* Exact, deterministic components. The reference runs union-find from a random sample of ``ceil(ln n / eps^2)``
  nodes (``mm_zip_epsilon = 0.05``): every node while ``n < 3234`` (always for a frame), but for larger temporal
  graphs links between two unsampled nodes are lost and the result is random. tokpress always computes the true
  components (what the sample estimates), so there is no ``epsilon`` option.
* Positions: the reference concatenates the compressed tokens with fresh, contiguous positions; tokpress keeps
  each token at its representative's original position (the engine's convention for every policy), which keeps the
  same order while the rotary / M-RoPE positions still say where and when in the video a token came from.
* Similarities are float32, symmetrised (``(S + S^T) / 2``) so the edge order is well-defined, and computed from
  the Gram matrix (the temporal ones as ``<sum_A, sum_B> / (|sum_A| |sum_B|)``, the cosine of the means up to
  rounding) so that a token pair has one value in both stages. Means and the re-merge are float32 (the reference:
  the model dtype); the features are cast back to the input dtype.
* The reference forces ``mm_patch_merge_type = "flat"`` and so drops LLaVA-OneVision's newline token; tokpress's
  engine keeps it (it is protected, outside the grid).
* ``budget == N`` returns every token unmerged (the identity plan), so ``retain_ratio = 1`` is exact.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch

from tokpress.errors import InputError
from tokpress.ops import connected_components, cosine_matrix, group_mean, group_size, primal
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.policies.outer.scissor_graph import (
    _Temporal,
    _Tokens,
    cosine_from_dots,
    count_components,
    edge_order,
    forest_in_order,
    group_by_representative,
    spanning_forest,
    true_indices,
)
from tokpress.registry import register_policy

_INF = math.inf


@dataclass(frozen=True)
class ScissorConfig(PolicyConfig):
    """Options of :class:`ScissorPolicy` (the paper's defaults; the threshold is searched, see the module)."""

    #: step 3: merge every original token into its most similar kept token (``False``: keep the SCC means)
    remerge: bool = True

    def validate(self) -> None:
        self.check(
            isinstance(self.remerge, bool),
            f"remerge must be True or False, got {self.remerge!r} (True is the paper's final token merge)",
        )


@dataclass
class ScissorResult:
    """What :func:`scissor` produced.

    Attributes:
        keep: ``[k]`` sorted original indices of the kept tokens.
        features: ``[k, D]`` float32 replacement features.
        sizes: ``[k]`` float32 tokens each kept token stands for (sums to ``N``).
        tau_spatial: the threshold stage 1 used (``-inf``: each frame is one component).
        tau_temporal: the threshold stage 2 used (equal to ``tau_spatial`` when one shared threshold gives
            ``budget`` tokens).
    """

    keep: torch.Tensor
    features: torch.Tensor
    sizes: torch.Tensor
    tau_spatial: float
    tau_temporal: float


def scissor(frames: torch.Tensor, budget: int, remerge: bool = True) -> ScissorResult:
    """LLaVA-Scissor on one video's tokens ``frames`` ``[T, P, D]``, keeping exactly ``budget`` (``1 <= budget <= T
    P``) tokens; the threshold search of the module docstring.

    Python loops run over the search's evaluations (``O(log N)``), the Borůvka and hooking rounds (``O(log N)``
    each), the final threshold's lowering steps, tiles of the symmetry check and row chunks of the key matrix and the
    pair scans, never over tokens or components.
    """
    t, p, dim = frames.shape
    n = t * p
    x = frames.reshape(n, dim).float()
    # Every similarity derives from the tokens' dot products (Gram matrix): stage 1 uses its per-frame blocks, stage 2
    # sums it over the spatial components (the dot product of two components' sums), so a pair has one value
    # wherever it appears, and a config's temporal similarities cost O(N^2) at most whatever D is.
    xs = primal(x)  # similarities select; only the merges below follow a dual tangent (tokpress.ops.dual)
    tokens = _Tokens(xs @ xs.T)  # [N, N]
    blocks = tokens.gram.view(t, p, t, p).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # [T, P, P] per-frame dots
    norm = tokens.norm.view(t, p)
    blocks = blocks / norm[:, :, None] / norm[:, None, :]
    sim1 = (blocks + blocks.mT).mul_(0.5).add_(0.0)  # the per-frame blocks of cosine_from_dots(gram)
    a1, b1, w1 = spanning_forest(sim1)  # [T, P, P] per-frame maximum spanning trees
    weights, counts = torch.unique(w1, return_counts=True)  # ascending distinct weights u_1 < ... < u_m
    cuts = [-_INF, *weights.tolist()]
    above = torch.cat([counts.flip(0).cumsum(0).flip(0), counts.new_zeros(1)])  # #{w1 > u_i} for config i
    sizes_m = [n - int(c) for c in above.tolist()]  # M_i (a forest: nodes - linked edges), non-decreasing

    def spatial(i: int, tau_degree: float, previous: _Temporal | None = None) -> _Temporal:
        link = (w1 > cuts[i]).nonzero().squeeze(1)
        labels = connected_components(n, a1.index_select(0, link), b1.index_select(0, link))
        groups, reps = group_by_representative(labels, (sim1 > tau_degree).sum(-1).flatten())
        if previous is not None and torch.equal(groups, previous.groups):
            return previous.with_reps(reps)  # the same components, maybe other representatives
        return _Temporal(tokens, groups, reps)

    def upper(i: int) -> float:
        return cuts[i + 1] if i + 1 < len(cuts) else _INF

    # Search over configs for adjacent lo, hi with hi_lo < budget <= hi_hi. The last config (all singletons, no
    # temporal link above every weight) gives N; configs with M_i < budget cannot reach it since hi_i <= M_i.
    # Steps interpolate linearly in M_i (Illinois-style: an end kept twice in a row has its excess halved) and fall
    # back to a bisection step whenever an interpolation step did not halve the bracket.
    last = len(cuts) - 1
    lo, hi = bisect.bisect_left(sizes_m, budget) - 1, last
    # excess hi_i - budget + 0.5 at each end (negative at lo; at a skipped lo, M_lo bounds hi_lo), maybe halved
    f_lo, f_hi = (sizes_m[lo] if lo >= 0 else 0) - budget + 0.5, n - budget + 0.5
    st_hi, kept_side, bisect_next = None, 0, False
    while hi - lo > 1:
        width = hi - lo
        if lo < 0:
            mid = 0  # the first config that might reach the budget
        elif bisect_next:
            mid = (lo + hi) // 2
        else:
            target = sizes_m[lo] + (-f_lo) * (sizes_m[hi] - sizes_m[lo]) / (f_hi - f_lo)
            mid = min(max(bisect.bisect_left(sizes_m, target), lo + 1), hi - 1)
        st = spatial(mid, cuts[mid])
        excess = st.count(upper(mid)) - budget + 0.5
        if excess > 0:
            hi, f_hi, st_hi = mid, excess, st
            if kept_side == -1:  # lo kept twice in a row
                f_lo /= 2
            kept_side = -1
        else:
            lo, f_lo = mid, excess
            if kept_side == 1:
                f_hi /= 2
            kept_side = 1
        bisect_next = not bisect_next and lo >= 0 and 2 * (hi - lo) > width
    chosen = hi
    st = st_hi if st_hi is not None else spatial(chosen, cuts[chosen])
    m = st.m
    drop = m - budget  # keep the `drop` strongest temporal edges: m - drop = budget components
    # the forest's edges down to the strongest dropped one (all of them when drop = m - 1)
    start = min(upper(chosen), 1.0)
    a2, b2, w2 = st.forest(min(drop + 1, m - 1), start)
    weakest_kept = float(w2[drop - 1]) if drop > 0 else _INF
    strongest_dropped = float(w2[drop]) if drop < m - 1 else -_INF
    shared = max(cuts[chosen], strongest_dropped)
    if shared < min(upper(chosen), weakest_kept):
        tau1 = tau2 = shared
        if tau1 != cuts[chosen]:  # degrees at tau*: representatives (and so the node order) may change
            moved = spatial(chosen, tau1, previous=st)
            if not torch.equal(moved.groups, st.groups):
                a2, b2, w2 = moved.forest(min(drop + 1, m - 1), start)
            st = moved
    else:
        tau1, tau2 = cuts[chosen], strongest_dropped

    labels2 = connected_components(m, a2[:drop], b2[:drop])
    groups2, reps2 = group_by_representative(labels2, st.degrees(tau2))
    final = group_mean(group_mean(x, st.groups, m), groups2, budget)  # plain mean of the spatial means
    keep = st.reps.index_select(0, reps2)  # ascending: reps2 ascending, st.reps ascending
    if remerge:
        assign = cosine_matrix(x, final).argmax(-1)  # ties: the earlier kept token
        count = group_size(assign, budget)
        final = (final + torch.zeros_like(final).index_add_(0, assign, x)) / (count + 1)[:, None]
        sizes = (count + 1) * (n / (n + budget))
    else:
        sizes = group_size(groups2.index_select(0, st.groups), budget)
    return ScissorResult(keep, final, sizes, tau1, tau2)


@register_policy("scissor", stage="outer")
class ScissorPolicy(OuterPolicy):
    config_cls = ScissorConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        x = video.features
        if x.shape[0] != g.numel:
            raise InputError(f"scissor: features must have {g.numel} rows (the grid), got {x.shape[0]}")
        if budget >= g.numel:
            return Plan(torch.arange(g.numel, device=x.device))
        if not bool(torch.isfinite(x).all()):
            raise InputError(
                "scissor: the video features contain NaN or inf, so similarities are undefined; check the vision "
                "tower's dtype (e.g. run it in bfloat16 or float32 instead of float16)"
            )
        out = scissor(x.reshape(g.frames, g.per_frame, -1), budget, self.config.remerge)
        return Plan(out.keep, out.features.to(x.dtype), out.sizes)


__all__ = [
    "ScissorConfig",
    "ScissorPolicy",
    "ScissorResult",
    "cosine_from_dots",
    "count_components",
    "edge_order",
    "forest_in_order",
    "group_by_representative",
    "scissor",
    "spanning_forest",
    "true_indices",
]
