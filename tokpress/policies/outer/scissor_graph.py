"""The graph machinery of ``scissor`` (LLaVA-Scissor): cosine from dot products, Kruskal-ordered spanning forests,
component counts at a threshold, sparse thresholded edge lists over tokens and the temporal component graph.

Split out of :mod:`tokpress.policies.outer.scissor` (which documents the algorithm and its cost); every function is
pure tensor code and exact (the fast paths reproduce the dense forms bit for bit, ``tests/test_scissor_speed.py``).
"""

from __future__ import annotations

import copy
import math

import torch

from tokpress.errors import InputError
from tokpress.ops import connected_components

_INF = math.inf


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


def count_components(sim: torch.Tensor, threshold: float, max_edges: int = 1 << 22) -> int:
    """Number of connected components of the graph ``sim >= threshold`` (``sim`` ``[M, M]`` symmetric).

    The dense form (:class:`_Temporal` falls back to it when a graph has more than ``_EDGE_CAP`` edges): the edges
    are listed and joined by :func:`~tokpress.ops.connected_components`; a denser graph (over ``max_edges`` edges)
    is counted on its spanning forest instead.
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


_EDGE_CAP = 1 << 22  # edges a sparse similarity list may hold; a denser graph takes the dense [M, M] form
_Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a, b, w [E]: node pairs a < b and their similarities


def true_indices(mask: torch.Tensor) -> torch.Tensor:
    """Ascending flat indices ``[K]`` of the ``True`` entries of a contiguous bool tensor, as
    ``mask.flatten().nonzero()``; eight entries are tested at once (as one int64), which pays when few are set."""
    flat = mask.reshape(-1)
    whole = flat.numel() // 8 * 8
    words = flat[:whole].view(torch.int64).nonzero().squeeze(1)
    cand = (words[:, None] * 8 + torch.arange(8, device=mask.device)).flatten()
    return torch.cat([cand[flat.index_select(0, cand)], flat[whole:].nonzero().squeeze(1) + whole])


def _symmetric(gram: torch.Tensor, tile: int = 128) -> bool:
    """Whether ``gram`` ``[N, N]`` equals its transpose bit for bit, compared in square tiles: the transposed reads
    stay in cache, and a tile is too small for torch to split across threads (which costs more than it saves). A
    GPU compares it whole (one synchronisation)."""
    if gram.device.type != "cpu":
        return torch.equal(gram, gram.T)
    n = gram.shape[0]
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            if not torch.equal(gram[i : i + tile, j : j + tile], gram[j : j + tile, i : i + tile].T):
                return False
    return True


class _Tokens:
    """Token-level similarities shared by every config: the Gram matrix ``gram`` ``[N, N]`` (and whether it is
    symmetric), the one-sided cosines ``d[a, b] = gram[a, b] / |x_a| / |x_b|`` (:func:`cosine_from_dots` before it
    symmetrises) computed where needed, and a cached list of the token pairs whose cosine is ``>= theta`` (rebuilt,
    in row chunks of ``gram``, when a lower threshold is asked for)."""

    def __init__(self, gram: torch.Tensor):
        self.gram = gram
        self.n = gram.shape[0]
        self.norm = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
        self.gram_t = None if _symmetric(gram) else gram.T.contiguous()  # None: symmetric (usual on CPU BLAS)
        self.theta = _INF  # the cached list's threshold
        self.too_dense: float | None = None  # a threshold whose list was over the cap (so is any lower one)
        self.pairs = (gram.new_zeros(0, dtype=torch.long), gram.new_zeros(0, dtype=torch.long), gram.new_zeros(0))

    def one_sided(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[E]`` ``d[a, b]``, the same operations as :func:`cosine_from_dots`."""
        return self.gram.view(-1).index_select(0, a * self.n + b) / self.norm[a] / self.norm[b]

    def cos(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[E]`` symmetric cosines of token pairs, bit for bit :func:`cosine_from_dots` ``(gram)[a, b]``."""
        return (self.one_sided(a, b) + self.one_sided(b, a)).mul_(0.5).add_(0.0)

    def scan(self, tokens: torch.Tensor | None, theta: float) -> _Edges | None:
        """Pairs ``a < b`` of ``tokens`` (``[s]`` ascending; ``None``: all) with cosine ``>= theta`` and their
        cosines, or ``None`` when there are more than ``_EDGE_CAP``. Candidates are the pairs with ``max(d[a, b],
        d[b, a]) >= theta`` (a superset: a float sum halved never exceeds the larger term), found row chunk by row
        chunk in reused buffers without a transpose; each pair is then evaluated exactly."""
        idx = torch.arange(self.n, device=self.gram.device) if tokens is None else tokens
        s = idx.numel()
        step = max(1, min(s, _CHUNK // max(1, s)))
        buf = self.gram.new_empty(step, s)
        hit = torch.empty(step, s, dtype=torch.bool, device=self.gram.device)
        rows, cols, total = [idx[:0]], [idx[:0]], 0
        for r0 in range(0, s, step):
            r = idx[r0 : r0 + step]
            d = buf[: r.numel()]
            if tokens is None:
                torch.div(self.gram[r0 : r0 + step], self.norm[r, None], out=d)
            else:
                torch.index_select(self.gram.index_select(0, r), 1, idx, out=d).div_(self.norm[r, None])
            d.div_(self.norm[None, idx])  # the operations of cosine_from_dots, in place
            flat = true_indices(torch.ge(d, theta, out=hit[: r.numel()]))
            total += flat.numel()
            if total > 2 * _EDGE_CAP + s:
                return None
            rows.append(torch.div(flat, s, rounding_mode="floor") + r0)
            cols.append(flat % s)
        i, j = torch.cat(rows), torch.cat(cols)
        a, b = idx[i], idx[j]
        once = (i < j) | ((i > j) & (self.one_sided(b, a) < theta))  # a pair found both ways: from its i < j side
        a, b = a[once], b[once]
        a, b = torch.minimum(a, b), torch.maximum(a, b)
        w = self.cos(a, b)
        keep = w >= theta
        return a[keep], b[keep], w[keep]

    def among(self, tokens: torch.Tensor, mask: torch.Tensor, theta: float) -> _Edges | None:
        """:meth:`scan` of ``tokens`` (``mask`` ``[N]`` marks them). A few tokens are scanned directly (``s^2``);
        many filter the cached list of all pairs (rebuilt, one pass over ``N^2``, when ``theta`` is below it)."""
        if theta < self.theta and 16 * tokens.numel() ** 2 <= self.n**2:
            return self.scan(tokens, theta)
        if theta < self.theta:
            dense = self.too_dense is not None and theta <= self.too_dense
            found = None if dense else self.scan(None, theta)
            if found is None:
                self.too_dense = theta if self.too_dense is None else max(self.too_dense, theta)
                return None
            self.theta, self.pairs = theta, found
        a, b, w = self.pairs
        hit = (w >= theta) & mask.index_select(0, a) & mask.index_select(0, b)
        return a[hit], b[hit], w[hit]


def forest_in_order(m: int, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Indices ``[F]`` of the maximum spanning forest of the graph on ``m`` nodes with edges ``(a, b)`` of weights
    ``w`` ``[E]``, listed in :func:`edge_order` (strongest first).

    Borůvka on the edge list: every round each component takes its first edge in the order that leaves it (a strict
    total order, so all of them belong to the forest), and the components are joined; ``O(log m)`` rounds. Given
    every edge at or above a threshold, these are exactly the full graph's spanning-forest edges at or above it.
    """
    order = edge_order(w, a, b)
    a, b = a.index_select(0, order), b.index_select(0, order)
    e = order.numel()
    chosen = torch.zeros(e, dtype=torch.bool, device=a.device)
    comp = torch.arange(m, device=a.device)
    while True:
        ca, cb = comp.index_select(0, a), comp.index_select(0, b)
        cross = (ca != cb).nonzero().squeeze(1)
        if cross.numel() == 0:
            return order[chosen]
        best = torch.full((m,), e, device=a.device).scatter_reduce_(0, ca[cross], cross, "amin")
        best.scatter_reduce_(0, cb[cross], cross, "amin")
        chosen[best[best < e]] = True
        comp = connected_components(m, a[chosen], b[chosen])


def kept_edges(edges: _Edges, kept: torch.Tensor) -> _Edges:
    """``edges`` (tensors ``[E]``) at the indices ``kept``."""
    a, b, w = edges
    return a.index_select(0, kept), b.index_select(0, kept), w.index_select(0, kept)


def _member_sums(src: torch.Tensor, members: torch.Tensor, gid: torch.Tensor, g: int) -> torch.Tensor:
    """``[G, N]`` rows of ``src`` ``[N, N]`` summed per component, each in index order from zero: ``members`` ``[U]``
    ascending, ``gid`` ``[N]`` each token's component row (``G`` for the others)."""
    out = torch.zeros(g + 1, src.shape[1], device=src.device)
    if 2 * members.numel() > src.shape[0]:  # most rows: add them all, the others into the spare row
        return out.index_add_(0, gid, src)[:g]
    return out.index_add_(0, gid.index_select(0, members), src.index_select(0, members))[:g]


class _Temporal:
    """Stage 1 at one config (``groups`` ``[N]``, ``reps`` ``[M]``) and the temporal graph over its ``M`` means.

    The temporal similarities are those of the dense form (:meth:`dense`: the Gram matrix summed over the
    components' members in index order, then :func:`cosine_from_dots`), bit for bit, but only what a query needs is
    built: a singleton component's dots are its token's, so the pairs of two singletons come from
    :class:`_Tokens`; the ``G`` components of two or more tokens get their ``[G, M]`` similarity rows (the Gram rows
    and columns of their members summed: ``O((U + G) N)`` for their ``U`` members). :meth:`edges` lists the edges
    at or above a threshold; a graph denser than ``_EDGE_CAP`` edges takes the dense ``[M, M]`` form.
    """

    def __init__(self, tokens: _Tokens, groups: torch.Tensor, reps: torch.Tensor):
        self.tokens, self.groups, self.reps = tokens, groups, reps
        self.m = m = reps.numel()
        gram, n, device = tokens.gram, tokens.n, groups.device
        single = torch.zeros(m, dtype=torch.long, device=device).index_add_(0, groups, torch.ones_like(groups)) == 1
        self.single = single  # [M] components of one token
        self.single_token = single.index_select(0, groups)  # [N]
        self.singles = reps[single]  # tokens alone in their component, ascending
        self.gnodes = gnodes = (~single).nonzero().squeeze(1)  # [G] ascending
        members = (~self.single_token).nonzero().squeeze(1)  # [U] ascending
        gid = torch.full((n,), gnodes.numel(), dtype=torch.long, device=device)  # singletons: a spare row
        gid[members] = (
            torch.full((m,), -1, dtype=torch.long, device=device)
            .index_put_((gnodes,), torch.arange(gnodes.numel(), device=device))
            .index_select(0, groups.index_select(0, members))
        )
        dots = _member_sums(gram, members, gid, gnodes.numel())  # [G, N]: the Gram rows summed per component
        rows = torch.zeros(dots.shape[0], m, device=device).index_add_(1, groups, dots)  # dense dots [G, M]
        # dense dots [M, G] transposed: a singleton b's are its Gram row summed over each component's columns (the
        # rows of gram^T; `dots` itself when the Gram matrix is symmetric), two components' are in `rows`
        by_column = dots if tokens.gram_t is None else _member_sums(tokens.gram_t, members, gid, gnodes.numel())
        cols = by_column.index_select(1, reps)
        cols[:, gnodes] = rows.index_select(1, gnodes).T
        diag = gram.diagonal().index_select(0, reps).clone()
        diag[gnodes] = rows.gather(1, gnodes[:, None]).squeeze(1)
        norm = diag.clamp_min(0).sqrt().clamp_min(1e-12)
        d_rows = rows / norm[gnodes][:, None] / norm[None, :]
        d_cols = cols / norm[None, :] / norm[gnodes][:, None]
        self.sim_rows = (d_rows + d_cols).mul_(0.5).add_(0.0)  # [G, M]: dense rows of the G components
        d_diag = tokens.one_sided(reps, reps)
        d_diag[gnodes] = d_rows.gather(1, gnodes[:, None]).squeeze(1)
        self.self_sim = (d_diag + d_diag).mul_(0.5).add_(0.0)  # [M]: the dense diagonal
        self.cached: tuple[float, _Edges] | None = None
        self._dense: torch.Tensor | None = None

    def with_reps(self, reps: torch.Tensor) -> _Temporal:
        """This graph with other representatives ``reps`` ``[M]`` (same components: a singleton keeps its token)."""
        other = copy.copy(self)
        other.reps = reps
        return other

    def dense(self) -> torch.Tensor:
        """``[M, M]`` temporal similarities: the Gram matrix summed over the components' members."""
        if self._dense is None:
            gram, device = self.tokens.gram, self.groups.device
            dots = torch.zeros(self.m, self.tokens.n, device=device).index_add_(0, self.groups, gram)
            self._dense = cosine_from_dots(torch.zeros(self.m, self.m, device=device).index_add_(1, self.groups, dots))
        return self._dense

    def edges(self, theta: float) -> _Edges | None:
        """Edges ``a < b`` (component ids) with similarity ``>= theta`` and their weights ``[E]``, or ``None``."""
        if self.cached is not None and self.cached[0] <= theta:
            a, b, w = self.cached[1]
            hit = w >= theta
            return a[hit], b[hit], w[hit]
        flat = true_indices(self.sim_rows >= theta)
        if flat.numel() > 2 * _EDGE_CAP:
            return None
        r, c = torch.div(flat, self.m, rounding_mode="floor"), flat % self.m
        a = self.gnodes.index_select(0, r)
        once = (c != a) & ((a < c) | self.single.index_select(0, c))
        r, c, a = r[once], c[once], a[once]
        pairs = self.tokens.among(self.singles, self.single_token, theta)
        if pairs is None:
            return None
        sa, sb = self.groups.index_select(0, pairs[0]), self.groups.index_select(0, pairs[1])
        found = (
            torch.cat([torch.minimum(a, c), sa]),
            torch.cat([torch.maximum(a, c), sb]),
            torch.cat([self.sim_rows[r, c], pairs[2]]),
        )
        if found[0].numel() > _EDGE_CAP:
            return None
        self.cached = (theta, found)
        return found

    def count(self, theta: float) -> int:
        """Number of components of the temporal graph ``sim >= theta``."""
        found = self.edges(theta)
        if found is None:
            return count_components(self.dense(), theta)
        labels = connected_components(self.m, found[0], found[1])
        return int((labels == torch.arange(self.m, device=labels.device)).sum())

    def forest(self, need: int, theta: float) -> _Edges:
        """The temporal spanning forest's first ``need`` (or more) edges in :func:`edge_order`, ``a, b, w``.

        The edges at or above ``theta`` are listed and ``theta`` lowered (by ``2^-10``, then twice as far each time)
        until their forest has ``need`` edges; a graph too dense to list takes the dense form (all ``M - 1``)."""
        step = 2.0**-10
        found = self.edges(theta) if need > 0 else None
        while found is not None:
            kept = forest_in_order(self.m, *found)
            if kept.numel() >= need or theta == -_INF:
                return kept_edges(found, kept)
            theta = theta - step if theta - step > -1.5 else -_INF
            step *= 2
            found = self.edges(theta)
        if need == 0:
            return self.groups[:0], self.groups[:0], self.self_sim[:0]
        a, b, w = spanning_forest(self.dense()[None])
        order = edge_order(w, a, b)
        return a.index_select(0, order), b.index_select(0, order), w.index_select(0, order)

    def degrees(self, tau: float) -> torch.Tensor:
        """``[M]`` how many components (itself included) each one is ``> tau`` similar to."""
        found = None if self._dense is not None or tau == -_INF else self.edges(tau)
        if found is None:
            if tau == -_INF:
                return torch.full((self.m,), self.m, dtype=torch.long, device=self.groups.device)
            return (self.dense() > tau).sum(-1)
        a, b, w = found
        hit = w > tau
        ends = torch.cat([a[hit], b[hit]])
        deg = torch.zeros(self.m, dtype=torch.long, device=a.device).index_add_(0, ends, torch.ones_like(ends))
        return deg + (self.self_sim > tau).long()
