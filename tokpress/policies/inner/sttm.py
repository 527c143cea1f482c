"""``sttm`` — STTM (Hyun et al., ICCV 2025, "Multi-Granular Spatio-Temporal Token Merging for Training-Free
Acceleration of Video LLMs", arXiv 2507.07990; reference code HYUNJS/STTM).

STTM merges the visual hidden states entering decoder layer K (the paper's scripts: K = 2), query-agnostically, so
a compressed KV cache can serve any later question about the same video.

Algorithm (reference, per video):

1. **Pyramid** — each frame's token grid is pooled 2x2 level after level: a side of even length ``s`` pairs its
   rows (columns) ``(0, 1), (2, 3), ...``; a side of odd length keeps row (column) 0 alone and pairs the rest, so
   ``s -> ceil(s / 2)`` (14 -> 7 -> 4 -> 2, 13 -> 7 -> 4 -> 2, Qwen2-VL's 12 x 21 -> 6 x 11 -> 3 x 6 -> 2 x 3). The
   reference halves until one side is 2 and roots the quadtrees ``root_level`` levels below that top (its scripts
   use 1: a 4 x 4 grid of roots on LLaVA's 14 x 14 frames, 3 x 6 on the 12 x 21 example).
2. **Spatial quadtree** (coarse to fine) — a node stops, i.e. becomes one token standing for its whole cell, when
   every child's feature has cosine >= ``tau_s`` to the node's pooled feature; otherwise its children are visited.
   Cells of the finest level that are reached are single tokens. A pooling block with one child (the ``(0, 0)``
   corner where both sides are odd) compares that child with itself and always stops: on 14 x 14 frames at root
   level 1 the top-left 2 x 2 tokens always merge. tokpress does the same.
3. **Temporal merge** — the leaves of consecutive frames whose cells contain one another (quadtree cells of two
   frames are nested or disjoint) are paired; pairs with cosine >= ``tau_t`` are merged, transitively (the
   reference's default "fast" path takes the connected components of the accepted pairs, so a chain a -> b -> c
   and a large cell bridging several small ones all fold into one token). Each group is represented by its
   earliest node (the first frame's, then its top-left cell): merges are *directed* backwards in time.
4. The merged token's feature is the mean of its members (the cell's pooled feature for a quadtree leaf).

tokpress, at layer K on the hidden states entering it, per video (tokens located by ``InnerTokens.ordinals`` /
``videos``):

* Node feature = the size-weighted mean (``InnerTokens.sizes``) of the present tokens in its cell, in float32;
  stop score ``s(p) = min`` over ``p``'s present children of ``cos(child, p)`` (per-head mean with ``head_dim``).
  Node ``p``'s cell is one token at spatial threshold ``tau`` iff some ancestor-or-self ``q`` (up to the root) has
  ``s(q) >= tau``; so each child-to-parent link carries the key ``e(p) = max`` of ``s`` over ``p`` and its
  ancestors, and the reference's leaves at ``tau`` are exactly the components of the links with key ``>= tau``.
  Links are stored as token pairs (a child cell's first token -> the parent's first token), a forest over the
  tokens, sorted by key (descending), then finer level first, then index.
* Temporal candidates: cluster pairs sharing a grid position in consecutive frames (per position, the latest
  earlier frame where it is present), cosine of the clusters' size-weighted mean features. Merging pairs in
  descending cosine (Kruskal) gives, for any ``tau_t``, the reference's components; the accepted pairs are the
  maximum spanning forest (found with Boruvka rounds, ties to the lower pair index), so stopping after exactly
  ``r`` forest edges removes exactly ``r`` tokens.
* Every final group is represented by its first token in sequence order (``(t, y, x)`` raster: the earliest frame,
  then the top-left cell) and carries the size-weighted mean of all its tokens' hidden states; ``Plan.sizes`` sums
  the members' sizes.

Budget mapping (tokpress keeps exactly ``budget`` tokens; the paper's counts follow from its thresholds). The
paper's settings move both thresholds together (Video-MME, LLaVA-Video-7B: 0.85 / 0.55 for 50 %, 0.80 / 0.50 for
30 %), so tokpress walks the one-parameter family ``tau_t = tau_s - threshold_gap`` and lets the budget pick
``tau_s``:

1. The distinct link keys split ``tau_s`` into blocks over which the spatial leaves are fixed; on block ``j`` the
   family's count runs from ``G_top(j)`` down to ``G_bot(j)`` as ``tau_t`` sweeps the forest pairs (``S_j`` leaves
   minus the forest edges at or above ``tau_t``). A bisection over the blocks (counts taken as monotone) picks the
   least merged block whose range reaches ``budget`` (smallest ``j`` with ``G_bot(j) <= budget``). The temporal
   stage then merges the ``S_j - budget`` most similar forest pairs: when ``budget`` lies in the block's range this
   *is* the paper's output at some ``(tau_s, tau_s - gap)``. At the count the paper's own thresholds produce,
   tokpress reproduces the paper's groups whenever that count pins them down; where several thresholds give the
   same count with different groups (a plateau, or a spatial merge that breaks more temporal pairs than it saves),
   the least spatially merged configuration is the one taken.
2. When ``budget`` falls in the jump that block ``j``'s collapse causes (``G_top(j) < budget``), quadtree cells
   are kept whole where possible: block ``j``'s leaves with fewer temporal merges if there are at least ``budget``
   of them; else block ``j - 1``'s leaves with temporal merges continued below its range if their chains allow
   it; else block ``j`` collapses link by link (finer children first, at its temporal threshold) up to the first
   prefix that reaches ``budget`` (a second bisection): only then is a quadtree cell partly merged.

Only ``threshold_gap`` survives as a knob (default 0.30, the Video-MME settings' gap); the absolute level is the
budget's. Budgets below what the quadtree roots allow (fewer tokens than root cells, once every chain of them is
merged through time) use links above the root level (the pyramid continues up to one cell per frame), ranked after
all others; if even one token per frame and full temporal merging cannot reach the budget (frames that share no
present position), neighbouring groups in sequence order are merged, most similar first. Both only in that corner.

Positions: the reference's LLaVA port renumbers the merged sequence contiguously (``position_ids[:, :n']``); its
Qwen2-VL port gives each merged token its top-left (earliest) token's original M-RoPE position and keeps the text's
original positions. tokpress keeps original positions (the engine's convention), i.e. the Qwen2-VL port's choice;
each kept token is its group's representative token.

Deviations from the reference code, with reasons:

- Exact budget instead of fixed thresholds (above): tokpress stages promise a token count before the data are
  seen; ``retain_ratio`` replaces the absolute thresholds and the paper's per-dataset threshold tables.
- Node features are true size-weighted means of the cell's tokens (the reference's ``sa_tree_weighted_avg=True``
  path); its default averages child averages, which weighs unequal cells of odd grids (e.g. 13 x 13 through 7 x 7)
  unequally. A temporal group's feature is the size-weighted mean of all its tokens, where the reference's default
  averages its nodes with weight 1 each (a 16-token cell and a 1-token cell count alike): tokpress merges weigh
  tokens by what they stand for, as in every tokpress merging policy.
- Only present children enter a node's stop test. The reference's 1 x 2 / 2 x 1 border blocks of odd grids leave
  two child slots pointing at the frame's top-left child and include them in the test (an indexing slip that makes
  those blocks also depend on an unrelated corner token).
- Temporal groups are exact connected components. The reference's vectorised union-find stops as soon as the labels
  form stars, which can leave accepted pairs apart (pairs (1, 2), (0, 2) end with labels 0, 1, 0).
- Incomplete grids (an outer stage removed tokens): a cell exists when it holds a present token; missing cells are
  ignored, and a node left with one present child (of two or four) never stops by itself: its region is decided by
  that child and its ancestors (unlike the geometric corner above, which the reference always merges). Temporal
  pairs follow each position to the latest earlier frame where it is present (whole missing frames are skipped).
  The reference only sees complete grids.
- Grids too small for ``root_level`` (2 x 2 and below) root at the tokens; the reference fails on them.
- Several videos in one sample are planned separately, the budget split in proportion to their tokens
  (:func:`tokpress.ops.apportion` over ``tokens - 1`` plus one each, so every video keeps a token when the budget
  allows). Tokens outside every video grid are only merged with their sequence neighbours (last-resort rule above).
- Not ported: the positional ablations (``pos_emb_ver``), the octree / tracking / visualisation variants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.errors import InputError
from tokpress.ops import apportion, connected_components, group_mean, group_size, rows_reduce_alike
from tokpress.policies.base import Grid, InnerPolicy, InnerTokens, Plan, PolicyConfig, VideoSlot
from tokpress.registry import register_policy

logger = logging.getLogger("tokpress")

#: links above the quadtree roots are keyed ``s - ABOVE_ROOT`` so that they rank after every cosine and every
#: temporal threshold ``tau_s - gap`` they meet accepts all temporal pairs (|gap| <= 2)
ABOVE_ROOT = 8.0


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class STTMConfig(PolicyConfig):
    """Options of :class:`STTMPolicy`. The paper's thresholds become one knob, their gap; the budget sets the level."""

    #: ``tau_s - tau_t``: the temporal threshold sits this far below the spatial one (paper, Video-MME with
    #: LLaVA-Video-7B: 0.85 / 0.55 at 50 %, 0.80 / 0.50 at 30 %)
    threshold_gap: float = 0.30
    #: quadtree roots sit this many levels below the pyramid's top (the level where a side reaches 2); the paper's
    #: scripts use 1 (a 4 x 4 grid of roots on 14 x 14 frames), the code's default is 0
    root_level: int = 1
    #: each later-frame node pairs only with its most similar earlier-frame node (the reference's ``sttm_slow_ver``);
    #: off: every containing / contained pair (the reference's default)
    best_match_only: bool = False
    #: cosine per chunk of this width (attention heads), averaged (the reference's ``sim_per_head``); 0: whole vector
    head_dim: int = 0

    def validate(self) -> None:
        g = self.threshold_gap
        self.check(
            _is_num(g) and -2.0 <= g <= 2.0,
            f"threshold_gap must be a number in [-2, 2] (spatial minus temporal cosine threshold; the paper uses "
            f"0.30), got {g!r}",
        )
        r = self.root_level
        self.check(_is_int(r) and r >= 0, f"root_level must be an int >= 0 (the paper uses 1), got {r!r}")
        b = self.best_match_only
        self.check(isinstance(b, bool), f"best_match_only must be True or False, got {b!r}")
        h = self.head_dim
        self.check(
            _is_int(h) and h >= 0, f"head_dim must be an int >= 0 (0 = cosine over the whole vector), got {h!r}"
        )


# ---- geometry ----------------------------------------------------------------------------------------------------


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Grid sizes of the pyramid, finest first, each side ``ceil(s / 2)`` of the one below, up to ``(1, 1)``."""
    sizes = [(height, width)]
    while sizes[-1] != (1, 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def root_index(height: int, width: int, root_level: int) -> int:
    """Level (finest = 0) of the quadtree roots: the reference halves until a side is 2 and roots ``root_level``
    levels below that; clamped to the tokens for grids too small for it."""
    h, w, top = height, width, 0
    while h != 2 and w != 2 and (h, w) != (1, 1):
        h, w, top = (h + 1) // 2, (w + 1) // 2, top + 1
    return max(0, top - root_level)


def _halve(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Parent row (column) of ``coord`` on a side of length ``size``: pairs from 0 if even, row 0 alone if odd."""
    return torch.div(coord + size % 2, 2, rounding_mode="floor")


def _unit(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of ``x`` ``[N, D]`` scaled to unit length in float32 (each head of width ``head_dim`` when > 0)."""
    x = x.float()
    if head_dim:
        x = x.unflatten(-1, (-1, head_dim))
    return F.normalize(x, dim=-1)


def _cos(ua: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """``[N]`` row-wise cosine of unit rows from :func:`_unit` (the mean over heads when split)."""
    c = (ua * ub).sum(-1)
    return c.mean(-1) if c.dim() > 1 else c


_PAIR_CHUNK = 1024  # pairs gathered at a time by _pair_cos: the gathered rows stay in cache


def _pair_cos(units: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[E]`` :func:`_cos` of ``units[a]`` and ``units[b]`` without materialising two ``[E, D]`` gathers.

    The pairs go in near-equal chunks of at most ``_PAIR_CHUNK`` (never one row alone, which a reduction may split
    across threads); each row's cosine is reduced on its own, so on CPU the values are bit-identical to one call
    (:func:`~tokpress.ops.rows_reduce_alike`; elsewhere one call)."""
    e = a.numel()
    if e <= _PAIR_CHUNK or not rows_reduce_alike(units):
        return _cos(units[a], units[b])
    parts = -(-e // _PAIR_CHUNK)
    return torch.cat([_cos(units[i], units[j]) for i, j in zip(a.tensor_split(parts), b.tensor_split(parts))])


def _sums(rows: torch.Tensor, groups: torch.Tensor, num: int) -> torch.Tensor:
    """``[num, D]`` float32 sum of ``rows`` per group. Cosines need no division: a mean is a scaled sum."""
    return torch.zeros(num, rows.shape[-1], device=rows.device).index_add_(0, groups, rows)


# ---- graph helpers -----------------------------------------------------------------------------------------------


def spanning_forest(num: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[E]`` bool: the edges of the maximum spanning forest, the edges being given best first (rank = index).

    Boruvka: each round every component takes its best outgoing edge (all of them belong to the forest, the order
    being strict); mutual choices are broken towards the smaller component. These are exactly the edges Kruskal
    accepts scanning best first, so the forest's first ``r`` edges (in rank order) merge ``r`` times.
    """
    e = a.numel()
    chosen = torch.zeros(e, dtype=torch.bool, device=a.device)
    comp = torch.arange(num, device=a.device)
    rank = torch.arange(e, device=a.device)
    ids = torch.arange(num, device=a.device)
    while True:
        ca, cb = comp[a], comp[b]
        live = ca != cb
        if not bool(live.any()):
            return chosen
        r = torch.where(live, rank, e)
        best = torch.full((num,), e, device=a.device).scatter_reduce_(0, ca, r, reduce="amin")
        best.scatter_reduce_(0, cb, r, reduce="amin")
        has = best < e
        chosen[best[has]] = True
        edge = best.clamp_max(e - 1)
        other = torch.where(ca[edge] == ids, cb[edge], ca[edge])
        hook = torch.where(has, other, ids)
        mutual = (hook[hook] == ids) & (hook != ids) & (ids < hook)
        hook = torch.where(mutual, ids, hook)
        while True:
            nxt = hook[hook]
            if torch.equal(nxt, hook):
                break
            hook = nxt
        comp = hook[comp]


def _ranked_pairs(
    a: torch.Tensor, b: torch.Tensor, units: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct cluster pairs ``(a, b)`` with their cosine (``units`` from :func:`_unit`), sorted by cosine
    (descending), ties by pair index."""
    num = units.shape[0]
    key = torch.unique(a * num + b)
    a, b = torch.div(key, num, rounding_mode="floor"), key % num
    sim = _pair_cos(units, a, b)
    order = torch.sort(sim, descending=True, stable=True).indices
    return a[order], b[order], sim[order]


# ---- one video -----------------------------------------------------------------------------------------------------


@dataclass
class _Links:
    """The quadtree's child-to-parent links over a video's tokens, best first."""

    src: torch.Tensor  # [E] a child cell's first token
    dst: torch.Tensor  # [E] its parent's first token (< src)
    key: torch.Tensor  # [E] e(parent), descending
    blocks: torch.Tensor  # [m + 1] link counts of the threshold configurations: 0, ..., E
    next_key: torch.Tensor  # [m + 1] the key of the first link left out by each (-inf for the last)


def quadtree_links(
    hidden: torch.Tensor,
    weights: torch.Tensor,
    frame: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    grid: Grid,
    root_level: int,
    head_dim: int,
    weighted: torch.Tensor | None = None,
) -> _Links:
    """Build every frame's pyramid over the present tokens and return its links, sorted.

    Args:
        hidden: ``[n, D]`` the video's tokens in sequence order; ``weights`` ``[n]`` their sizes.
        frame, y, x: ``[n]`` each token's grid coordinates.
        grid: the video's grid; root_level, head_dim: as in :class:`STTMConfig`.
        weighted: ``[n, D]`` ``hidden * weights`` in float32 when the caller has it (saves one ``[n, D]`` pass).

    The loop runs over pyramid levels (about ``log2`` of the grid side).
    """
    n, device = hidden.shape[0], hidden.device
    sizes = level_sizes(grid.height, grid.width)
    root = root_index(grid.height, grid.width, root_level)
    reps = torch.arange(n, device=device)  # each level's nodes' first tokens; level 0: the tokens
    # weighted sums: cosines of sums are cosines of means
    sums = hidden.float() * weights.float()[:, None] if weighted is None else weighted
    units = _unit(sums, head_dim)
    levels = []  # per level l >= 1: (parent of each level l-1 node, level l-1 reps, level l reps, s at level l)
    for lvl in range(1, len(sizes)):
        y, x = _halve(y, sizes[lvl - 1][0]), _halve(x, sizes[lvl - 1][1])
        h, w = sizes[lvl]
        _, node = torch.unique((frame * h + y) * w + x, return_inverse=True)
        num = int(node.max()) + 1
        parent = node[reps]
        up = _sums(sums, parent, num)  # the cell's weighted sum: its size-weighted mean, scaled
        up_units = _unit(up, head_dim)
        up_reps = torch.full((num,), n, device=device).scatter_reduce_(0, parent, reps, reduce="amin")
        sim = _cos(units, up_units[parent])
        stop = torch.full((num,), float("inf"), device=device).scatter_reduce_(0, parent, sim, reduce="amin")
        # a pooling block with one child by geometry (the corner of two odd sides) compares that child with
        # itself in the reference and always stops; one present child left by missing tokens defers to it
        h_in, w_in = sizes[lvl - 1]
        rows = 2 - ((h_in % 2 == 1) & (y[up_reps] == 0)).long()
        cols = 2 - ((w_in % 2 == 1) & (x[up_reps] == 0)).long()
        count = torch.bincount(parent, minlength=num)
        stop = torch.where(count > 1, stop, float("-inf"))
        stop = torch.where(rows * cols == 1, 1.0, stop)
        if lvl > root:
            stop = stop - ABOVE_ROOT
        levels.append((parent, reps, up_reps, stop))
        reps, sums, units = up_reps, up, up_units
    # e(p) = max of s over p and its ancestors, top-down
    eff = [None] * len(levels)
    for i in range(len(levels) - 1, -1, -1):
        stop = levels[i][3]
        eff[i] = stop if i == len(levels) - 1 else torch.maximum(stop, eff[i + 1][levels[i + 1][0]])
    src, dst, key, depth = [], [], [], []
    for i, (parent, child_reps, up_reps, _) in enumerate(levels):
        to = up_reps[parent]
        real = child_reps != to  # the first child shares its parent's first token
        src.append(child_reps[real])
        dst.append(to[real])
        key.append(eff[i][parent[real]])
        depth.append(torch.full((int(real.sum()),), i, device=device))
    empty = torch.zeros(0, dtype=torch.long, device=device)
    src = torch.cat(src) if src else empty
    dst = torch.cat(dst) if dst else empty
    key = torch.cat(key) if key else torch.zeros(0, device=device)
    depth = torch.cat(depth) if depth else empty
    order = torch.sort(src, stable=True).indices
    order = order[torch.sort(depth[order], stable=True).indices]
    order = order[torch.sort(key[order], descending=True, stable=True).indices]
    src, dst, key = src[order], dst[order], key[order]
    e = key.numel()
    ends = (key[1:] != key[:-1]).nonzero().squeeze(1) + 1
    blocks = torch.cat([torch.zeros(1, dtype=torch.long, device=device), ends, torch.full((1,), e, device=device)])
    if e == 0:
        blocks = blocks[:1]
    padded = torch.cat([key, torch.full((1,), float("-inf"), device=device)])
    return _Links(src, dst, key, blocks, padded[blocks])


def _chains(frame: torch.Tensor, y: torch.Tensor, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal neighbours: for each token, the token at its position in the latest earlier frame that has one.

    Returns ``(earlier, later)`` index pairs ``[P]``.
    """
    pos = y * grid.width + x
    order = torch.sort(pos * grid.frames + frame, stable=True).indices
    same = pos[order[1:]] == pos[order[:-1]]
    return order[:-1][same], order[1:][same]


@dataclass
class _Probe:
    """A spatial configuration (the first ``k`` links) and its temporal maximum spanning forest."""

    size: int  # S: spatial clusters
    roots: torch.Tensor  # [S] each cluster's first token
    cid: torch.Tensor  # [n] each token's cluster
    a: torch.Tensor  # [F] forest edges, best first
    b: torch.Tensor
    sim: torch.Tensor  # [F] their cosines, descending


class _Video:
    """Plans one video: the spatial link prefix and the temporal forest prefix that meet its budget."""

    def __init__(self, hidden, weights, frame, y, x, grid: Grid, config: STTMConfig) -> None:
        self.hidden, self.weights, self.config = hidden, weights, config
        self.n = hidden.shape[0]
        self.weighted = hidden.float() * weights.float()[:, None]  # [n, D] float32, summed per cluster
        self.links = quadtree_links(
            hidden, weights, frame, y, x, grid, config.root_level, config.head_dim, self.weighted
        )
        self.earlier, self.later = _chains(frame, y, x, grid)
        self._probes: dict[int, _Probe] = {}

    def probe(self, k: int) -> _Probe:
        if k in self._probes:
            return self._probes[k]
        links = self.links
        roots, cid = torch.unique(connected_components(self.n, links.src[:k], links.dst[:k]), return_inverse=True)
        size = roots.numel()
        units = _unit(_sums(self.weighted, cid, size), self.config.head_dim)
        a, b, sim = _ranked_pairs(cid[self.earlier], cid[self.later], units)
        if self.config.best_match_only and b.numel():
            # pairs are best first: keep each later cluster's first (most similar) pair
            first = torch.sort(b, stable=True).indices
            lead = torch.ones_like(first, dtype=torch.bool)
            lead[1:] = b[first[1:]] != b[first[:-1]]
            keep = first[lead].sort().values
            a, b, sim = a[keep], b[keep], sim[keep]
        forest = spanning_forest(size, a, b)
        self._probes[k] = _Probe(size, roots, cid, a[forest], b[forest], sim[forest])
        return self._probes[k]

    def chains_left(self, k: int) -> int:
        """M(k): the fewest tokens temporal merges reach on top of the first ``k`` links."""
        p = self.probe(k)
        return p.size - p.sim.numel()

    def family_floor(self, j: int) -> int:
        """G_bot(j): the fewest tokens the threshold family reaches while ``tau_s`` stays in block ``j``."""
        p, links = self.probe(int(self.links.blocks[j])), self.links
        cut = float(links.next_key[j]) - self.config.threshold_gap
        return p.size - int((p.sim > cut).sum())

    def partial(self, k: int, cut: float) -> int:
        """H(k): tokens left by the first ``k`` links and the temporal pairs with cosine >= ``cut``."""
        p = self.probe(k)
        return p.size - int((p.sim >= cut).sum())

    def plan(self, budget: int) -> torch.Tensor:
        """``[n]`` each token's group representative (the group's first token)."""
        n, links, gap = self.n, self.links, self.config.threshold_gap
        if budget >= n:
            return torch.arange(n, device=self.hidden.device)
        blocks = links.blocks.tolist()
        last = len(blocks) - 1
        if self.family_floor(last) > budget:  # not even every link and pair reach it (incomplete grids)
            k = blocks[last]
        else:
            lo, hi = -1, last  # smallest block whose family range reaches the budget (floor(lo) > budget)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self.family_floor(mid) <= budget:
                    hi = mid
                else:
                    lo = mid
            j, k = hi, blocks[hi]
            if j > 0 and self.probe(k).size < budget:
                # the budget falls in block j's spatial jump and its cells alone are too coarse: keep block j - 1's
                # cells and merge more pairs in time if that reaches it, else collapse block j link by link (finer
                # first) at the temporal threshold of its key, up to the first prefix that reaches the budget
                lo, cut = blocks[j - 1], float(links.next_key[j - 1]) - gap
                if self.chains_left(lo) <= budget:
                    k = lo
                else:
                    hi = k
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if self.partial(mid, cut) <= budget:
                            hi = mid
                        else:
                            lo = mid
                    k = hi
        p = self.probe(k)
        r = min(p.size - budget, p.sim.numel())
        group = connected_components(p.size, p.a[:r], p.b[:r])
        rep = p.roots[group[p.cid]]
        if p.size - r > budget:
            rep = merge_neighbours(self.weighted, rep, p.size - r - budget, self.config.head_dim)
        return rep


def merge_neighbours(weighted: torch.Tensor, rep: torch.Tensor, extra: int, head_dim: int) -> torch.Tensor:
    """Last resort: ``extra`` more merges between groups that are neighbours in sequence order, most similar first.

    Args:
        weighted: ``[n, D]`` float32 tokens times their sizes (a group's sum is its size-weighted mean, scaled).
        rep: ``[n]`` each token's group representative (its first token).

    Returns:
        ``[n]`` the new representatives; ``extra`` fewer groups (the neighbour graph is connected).
    """
    roots, cid = torch.unique(rep, return_inverse=True)
    size = roots.numel()
    step = cid[1:] != cid[:-1]
    a, b = cid[:-1][step], cid[1:][step]
    a, b = torch.minimum(a, b), torch.maximum(a, b)
    a, b, _ = _ranked_pairs(a, b, _unit(_sums(weighted, cid, size), head_dim))
    forest = spanning_forest(size, a, b)
    group = connected_components(size, a[forest][:extra], b[forest][:extra])
    return roots[group[cid]]


# ---- the policy ------------------------------------------------------------------------------------------------


def _locate(ordinals: torch.Tensor, videos: tuple[VideoSlot, ...]) -> torch.Tensor:
    """``[n]`` the index into ``videos`` of each token's grid, or ``len(videos)`` outside every grid."""
    where = torch.full_like(ordinals, len(videos))
    for v, slot in enumerate(videos):  # a loop over the sample's videos
        local = ordinals - slot.offset
        inside = (local >= 0) & (local < slot.grid.numel) & (where == len(videos))
        where[inside] = v
    return where


def split_budget(budget: int, counts: torch.Tensor) -> torch.Tensor:
    """``[G]`` each group's share of ``budget``: one each (when the budget allows), the rest in proportion."""
    groups = counts.numel()
    if budget >= groups:
        return apportion(budget - groups, counts - 1) + 1
    return apportion(budget, counts)


@register_policy("sttm", stage="inner")
class STTMPolicy(InnerPolicy):
    config_cls = STTMConfig
    needs_attention = False

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__(config)
        self._warned = False

    @classmethod
    def default_layer(cls, num_layers: int) -> int:
        """The paper's layer 2 (``sa_start_layer_idx``), capped to ``[1, L - 1]``."""
        return max(1, min(2, num_layers - 1))

    def plan(self, tokens: InnerTokens, budget: int) -> Plan:
        hidden = tokens.hidden
        n, device = hidden.shape[0], hidden.device
        if tokens.ordinals.shape[0] != n:
            raise InputError(
                f"sttm: InnerTokens.ordinals has {tokens.ordinals.shape[0]} entries for {n} hidden states; pass one "
                "ordinal per token"
            )
        if not 1 <= budget <= n:
            raise InputError(f"sttm: budget must be in [1, {n}] (the tokens given), got {budget}")
        if budget == n:
            return Plan(torch.arange(n, device=device))
        config: STTMConfig = self.config
        if config.head_dim and hidden.shape[-1] % config.head_dim:
            raise InputError(
                f"sttm: head_dim={config.head_dim} does not divide the hidden size {hidden.shape[-1]}; pass the "
                "model's attention head width or head_dim=0"
            )
        if not tokens.videos and not self._warned:
            logger.warning("sttm: no video grids given (InnerTokens.videos); merging sequence neighbours only")
            self._warned = True
        weights = torch.ones(n, device=device) if tokens.sizes is None else tokens.sizes.float().to(device)
        ordinals = tokens.ordinals.long().to(device)
        videos = tuple(tokens.videos)
        where = _locate(ordinals, videos)
        counts = torch.bincount(where, minlength=len(videos) + 1)
        present = (counts > 0).nonzero().squeeze(1)
        shares = split_budget(budget, counts[present])
        rep = torch.full((n,), -1, dtype=torch.long, device=device)
        for g, share in zip(present.tolist(), shares.tolist()):  # a loop over the sample's videos
            if share == 0:
                continue  # the budget is smaller than the number of videos: this one is dropped
            members = (where == g).nonzero().squeeze(1)
            whole = members.numel() == n  # then members == arange(n): skip the [n, D] copy
            h, w = (hidden, weights) if whole else (hidden[members], weights[members])
            if g < len(videos):
                slot = videos[g]
                local = ordinals[members] - slot.offset
                per_frame = slot.grid.per_frame
                frame, pos = local // per_frame, local % per_frame
                y, x = pos // slot.grid.width, pos % slot.grid.width
                local_rep = _Video(h, w, frame, y, x, slot.grid, config).plan(share)
            else:  # outside every grid: sequence neighbours only
                start = torch.arange(members.numel(), device=device)
                weighted = h.float() * w[:, None]
                local_rep = merge_neighbours(weighted, start, members.numel() - share, config.head_dim)
            rep[members] = members[local_rep]
        kept = rep >= 0
        keep, group = torch.unique(rep[kept], return_inverse=True)
        features = group_mean(hidden[kept], group, budget, weights[kept]).to(hidden.dtype)
        return Plan(keep, features, group_size(group, budget, weights[kept]))
