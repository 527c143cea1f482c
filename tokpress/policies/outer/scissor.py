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
  (single linkage), so a stage's count at any ``tau`` is ``nodes - #{MSF edges > tau}``. The MSFs come from a
  vectorised Borůvka (:func:`spanning_forest`) under a strict edge order (weight, then node pair), so ties are
  split deterministically.
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

Cost: the tokens' Gram matrix ``x x^T`` (``O(N^2 D)``, once; every similarity derives from it, so a token pair
has the same value in both stages) and the per-frame MSFs, then per evaluation a spatial pass (``O(N P)``), the
temporal similarities (the Gram matrix summed over the components: ``O(N^2)``) and a sparse component count; one
``[M, M]`` MSF at the end. About 1.5-8 s for 32 x 196 tokens with ``D = 896`` on 2 CPU cores; memory ``O(N^2)``.

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


def cosine_from_dots(dots: torch.Tensor) -> torch.Tensor:
    """``[m, m]`` cosines from a matrix of dot products ``dots`` ``[m, m]`` (e.g. ``x x^T``), exactly symmetric.

    Elementwise only, so a pair gets bit-for-bit the same value in every matrix it appears in with the same dot
    products (a token pair in stage 1 and the same two tokens, as singletons, in stage 2). ``-0.0`` becomes ``0.0``.
    """
    norm = dots.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
    d = dots / norm[:, None] / norm[None, :]
    return (d + d.T).mul_(0.5).add_(0.0)


def edge_order(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Permutation ``[E]`` sorting edges ``(a, b)`` of weights ``w`` strongest first; ties go to the lower
    ``(min(a, b), max(a, b))`` pair. A strict total order, so the spanning forest and the cuts are unique."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    order = torch.sort(hi, stable=True).indices
    order = order.index_select(0, torch.sort(lo.index_select(0, order), stable=True).indices)
    return order.index_select(0, torch.sort(w.index_select(0, order), descending=True, stable=True).indices)


_LOW = 2**31 - 1  # the low 31 bits of an edge key hold the (inverted) node pair
_NONE = torch.iinfo(torch.int64).min  # key of "no edge"
_CHUNK = 1 << 22  # similarity entries turned into keys at a time (bounds the int64 scratch memory)
_MAX_NODES = 46340  # n * n < 2^31: a node pair fits the key's low 31 bits


def _edge_keys(w: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """int64 keys whose order is :func:`edge_order`'s: the float32 weight's bits made monotone (negative floats have
    their 31 low bits flipped) in the high bits, ``2^31 - 1 - pair`` (``pair = min * n + max``) in the low 31."""
    bits = (w + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes 0.0, which compares equal to it
    bits = torch.where(bits < 0, bits ^ _LOW, bits)
    return (bits.long() << 31) | (_LOW - pair)


def _local_ids(labels: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Renumber components within each of ``B`` graphs.

    Args:
        labels: ``[B * n]`` root label (a global node index) of every node.
        real: ``[B, n]`` which nodes exist (padding nodes get id 0 and are never referenced by a real node).

    Returns:
        ``[B, n]`` component id of each node within its graph (ascending with the root) and the largest count.
    """
    bsz, n = real.shape
    roots = (labels == torch.arange(bsz * n, device=labels.device)).view(bsz, n) & real
    rank = roots.long().cumsum(1) - 1
    local = rank.flatten().index_select(0, labels).view(bsz, n).clamp_min(0)
    return local, int(roots.sum(1).max())


def spanning_forest(sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum spanning tree of each of ``B`` complete graphs, by Borůvka with the order of :func:`edge_order`.

    Round 1: every node's strongest edge (a row-wise ``argmax``; ties go to the lower column, which is the edge
    order). The graph is then contracted to its components: ``K[c, c']`` holds the best :func:`_edge_keys` key
    between components ``c`` and ``c'`` (two ``scatter_reduce`` maxima; the keys are built a chunk of rows at a
    time), and every later round takes each component's best key and contracts again. At least half the components
    merge per round and the contracted matrix shrinks with them, so the work is a few passes over ``sim``.

    Args:
        sim: ``[B, n, n]`` float32 symmetric finite edge weights (``n <= 46340``); the diagonal is ignored (it is
            overwritten during the first round and restored).

    Returns:
        ``a, b, w`` ``[B (n - 1)]``: the tree edges as global node ids ``graph * n + node`` (``a < b``) and their
        weights.
    """
    bsz, n, _ = sim.shape
    if n > _MAX_NODES:
        raise InputError(
            f"scissor: a graph of {n} tokens is larger than the {_MAX_NODES} its exact edge order supports; "
            "sample fewer frames or lower the resolution of the video"
        )
    total = bsz * n
    device = sim.device
    ids = torch.arange(total, device=device)
    graph = torch.div(ids, n, rounding_mode="floor")
    node = ids - graph * n
    flat = sim.reshape(-1)
    a = torch.empty(0, dtype=torch.long, device=device)
    b, w = a.clone(), torch.empty(0, device=device)
    if n == 1:
        return a, b, w

    def add(src: torch.Tensor, dst: torch.Tensor) -> None:  # global node ids; duplicates allowed
        nonlocal a, b, w
        key = torch.unique(torch.minimum(src, dst) * total + torch.maximum(src, dst))
        lo = torch.div(key, total, rounding_mode="floor")
        hi = key - lo * total
        g = torch.div(lo, n, rounding_mode="floor")
        a, b = torch.cat([a, lo]), torch.cat([b, hi])
        w = torch.cat([w, flat.index_select(0, g * n * n + (lo - g * n) * n + (hi - g * n))])

    diag = sim.diagonal(dim1=1, dim2=2)
    saved = diag.clone()
    diag.fill_(-math.inf)
    best = sim.argmax(-1).flatten()  # round 1: each node alone is a component
    diag.copy_(saved)
    add(ids, graph * n + best)
    local, kmax = _local_ids(connected_components(total, a, b), torch.ones(bsz, n, dtype=torch.bool, device=device))

    keys = torch.full((bsz * kmax, kmax), _NONE, device=device)
    rows = sim.reshape(total, n)
    cols = torch.arange(n, device=device)
    step = max(1, _CHUNK // n)
    for r0 in range(0, total, step):  # chunks of rows, only to bound the int64 scratch memory
        r = ids[r0 : r0 + step]
        i = node[r0 : r0 + step, None]
        k = _edge_keys(rows[r0 : r0 + step], torch.minimum(i, cols) * n + torch.maximum(i, cols))
        g = graph[r0 : r0 + step]
        per_col = torch.full((r.numel(), kmax), _NONE, device=device)
        per_col.scatter_reduce_(1, local.index_select(0, g), k, "amax")
        target = g * kmax + local.reshape(-1).index_select(0, r)
        keys.scatter_reduce_(0, target[:, None].expand(-1, kmax), per_col, "amax")
    keys = keys.view(bsz, kmax, kmax)

    while True:
        keys.diagonal(dim1=1, dim2=2).fill_(_NONE)  # a component's edges to itself
        top, other = keys.max(-1)  # [B, kmax]
        valid = (top > _NONE).flatten()
        if not bool(valid.any()):
            return a, b, w
        sel = valid.nonzero().squeeze(1)
        g = torch.div(sel, kmax, rounding_mode="floor")
        pair = _LOW - (top.flatten().index_select(0, sel) & _LOW)
        lo = torch.div(pair, n, rounding_mode="floor")
        add(g * n + lo, g * n + pair - lo * n)
        merged = connected_components(bsz * kmax, sel, g * kmax + other.flatten().index_select(0, sel))
        real = torch.arange(kmax, device=device) <= local.max(1, keepdim=True).values  # [B, kmax]: not padding
        new, kmax2 = _local_ids(merged, real)
        local = new.gather(1, local)
        half = torch.full((bsz, kmax, kmax2), _NONE, device=device)
        half.scatter_reduce_(2, new[:, None, :].expand(-1, kmax, -1), keys, "amax")
        keys = torch.full((bsz, kmax2, kmax2), _NONE, device=device)
        keys.scatter_reduce_(1, new[:, :, None].expand(-1, -1, kmax2), half, "amax")
        kmax = kmax2


def group_by_representative(labels: torch.Tensor, degree: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Number components by their representative, the highest-degree member (ties: the lower index).

    Args:
        labels: ``[n]`` component label of each node (the index of one node of the component).
        degree: ``[n]`` degree of each node.

    Returns:
        ``groups [n]`` (component id ``0..k-1`` of each node, ids ascending with the representative) and
        ``reps [k]`` (ascending node indices).
    """
    n = labels.numel()
    device = labels.device
    idx = torch.arange(n, device=device)
    top = torch.full((n,), -1, dtype=degree.dtype, device=device).scatter_reduce(0, labels, degree, "amax")
    candidate = torch.where(degree == top.index_select(0, labels), idx, n)
    rep_of = torch.full((n,), n, dtype=torch.long, device=device).scatter_reduce(0, labels, candidate, "amin")
    roots = torch.unique(labels)
    reps, perm = torch.sort(rep_of.index_select(0, roots))
    rank = torch.empty(n, dtype=torch.long, device=device)
    rank.index_copy_(0, roots.index_select(0, perm), torch.arange(roots.numel(), device=device))
    return rank.index_select(0, labels), reps


@dataclass
class _Spatial:
    """Stage 1 at one config, and the temporal similarities of its means."""

    groups: torch.Tensor  # [N] spatial component of each token
    reps: torch.Tensor  # [M] original index of each spatial representative, ascending
    sim: torch.Tensor  # [M, M] temporal similarities (symmetric float32)


def count_components(sim: torch.Tensor, threshold: float, max_edges: int = 1 << 22) -> int:
    """Number of connected components of the graph ``sim >= threshold`` (``sim`` ``[M, M]`` symmetric).

    The graph is usually sparse at the thresholds the search tries, so its edges are listed and joined by
    :func:`~tokpress.ops.connected_components`; a denser graph (over ``max_edges`` edges) is counted on its spanning
    forest instead.
    """
    m = sim.shape[0]
    adj = sim >= threshold
    adj.fill_diagonal_(False)
    if int(adj.sum()) > max_edges:
        _, _, w = spanning_forest(sim[None])
        return m - int((w >= threshold).sum())
    a, b = adj.nonzero().unbind(1)
    labels = connected_components(m, a, b)
    return int((labels == torch.arange(m, device=sim.device)).sum())


def scissor(frames: torch.Tensor, budget: int, remerge: bool = True) -> ScissorResult:
    """LLaVA-Scissor on one video's tokens ``frames`` ``[T, P, D]``, keeping exactly ``budget`` (``1 <= budget <= T
    P``) tokens; the threshold search of the module docstring.

    Python loops run over the search's evaluations (``O(log N)``), the Borůvka and hooking rounds (``O(log N)``
    each) and row chunks of the key matrix, never over tokens.
    """
    t, p, dim = frames.shape
    n = t * p
    x = frames.reshape(n, dim).float()
    # Every similarity derives from the tokens' dot products (Gram matrix): stage 1 uses its per-frame blocks, stage 2
    # sums it over the spatial components (the dot product of two components' sums), so a pair has one value
    # wherever it appears, and a config's temporal similarities cost O(N^2) whatever D is.
    xs = primal(x)  # similarities select; only the merges below follow a dual tangent (tokpress.ops.dual)
    gram = xs @ xs.T  # [N, N]
    sim1 = cosine_from_dots(gram).view(t, p, t, p).diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()
    a1, b1, w1 = spanning_forest(sim1)  # [T, P, P] per-frame maximum spanning trees
    weights, counts = torch.unique(w1, return_counts=True)  # ascending distinct weights u_1 < ... < u_m
    cuts = [-_INF, *weights.tolist()]
    above = torch.cat([counts.flip(0).cumsum(0).flip(0), counts.new_zeros(1)])  # #{w1 > u_i} for config i
    sizes_m = [n - int(c) for c in above.tolist()]  # M_i (a forest: nodes - linked edges), non-decreasing

    def temporal_similarity(groups: torch.Tensor, m: int) -> torch.Tensor:
        """``[M, M]`` cosines of the spatial means: the Gram matrix summed over the components' members."""
        dots = torch.zeros(m, n, device=x.device).index_add_(0, groups, gram)
        return cosine_from_dots(torch.zeros(m, m, device=x.device).index_add_(1, groups, dots))

    def spatial(i: int, tau_degree: float, previous: _Spatial | None = None) -> _Spatial:
        link = (w1 > cuts[i]).nonzero().squeeze(1)
        labels = connected_components(n, a1.index_select(0, link), b1.index_select(0, link))
        groups, reps = group_by_representative(labels, (sim1 > tau_degree).sum(-1).flatten())
        if previous is not None and torch.equal(groups, previous.groups):
            return _Spatial(groups, reps, previous.sim)
        return _Spatial(groups, reps, temporal_similarity(groups, reps.numel()))

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
        excess = count_components(st.sim, upper(mid)) - budget + 0.5
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
    a2, b2, w2 = spanning_forest(st.sim[None])
    m = st.reps.numel()
    order = edge_order(w2, a2, b2)
    drop = m - budget  # keep the `drop` strongest temporal edges: m - drop = budget components
    weakest_kept = float(w2[order[drop - 1]]) if drop > 0 else _INF
    strongest_dropped = float(w2[order[drop]]) if drop < m - 1 else -_INF
    shared = max(cuts[chosen], strongest_dropped)
    if shared < min(upper(chosen), weakest_kept):
        tau1 = tau2 = shared
        if tau1 != cuts[chosen]:  # degrees at tau*: representatives (and so the node order) may change
            moved = spatial(chosen, tau1, previous=st)
            if moved.sim is not st.sim:
                a2, b2, w2 = spanning_forest(moved.sim[None])
                order = edge_order(w2, a2, b2)
            st = moved
    else:
        tau1, tau2 = cuts[chosen], strongest_dropped

    kept = order[:drop]
    labels2 = connected_components(m, a2.index_select(0, kept), b2.index_select(0, kept))
    groups2, reps2 = group_by_representative(labels2, (st.sim > tau2).sum(-1))
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
