"""``divprune`` — DivPrune (Alvar et al., CVPR 2025, "DivPrune: Diversity-based Visual Token Pruning for Large
Multimodal Models").

Algorithm: pruning is posed as a Max-Min Diversity Problem — keep the subset whose smallest pairwise distance is
largest, with distance ``1 - cos`` between projected visual tokens (float32). It is solved greedily, farthest-point
style: the first pick is the token whose nearest other token is farthest away (the most isolated one); every next
pick is the token whose distance to the already-picked set (its minimum distance to any pick) is largest, until
``budget`` tokens are picked. Survivors keep their raster order and their original positions; no merging.

Scope: all ``T * H * W`` tokens of one video are one candidate set (the reference runs over all of an image's
tokens at the LLM input, ``LAYER_INDEX=0``); frames get no quota, so static frames give up their tokens to
changing ones.

Budget mapping: the paper's only knob is the subset ratio (default 0.098), i.e. ``retain_ratio``; the number of
picks is ``budget`` (the reference's ``round(ratio * N)`` is tokpress's ``budget(ratio, N)``). There are no other
options.

Cost: one ``N x N`` float32 cosine matrix (``4 N^2`` bytes: 157 MB for 32 x 196 tokens, 1.07 GB for 64 x 256),
the only ``N^2`` buffer: distances ``1 - cos`` are never stored (below). It is built in row blocks of about
:data:`BLOCK` rows, each block against the rows up to its own (``N^2 D`` multiply-adds instead of ``2 N^2 D``), the
rest mirrored, since ``cos`` is symmetric. Then one ``N^2`` pass for every token's nearest other token, and
``budget`` sequential greedy steps of four ``O(N)`` vector ops each — the greedy is inherently sequential (each pick
depends on all earlier picks), every step is vectorised over the N tokens, reads one row of the matrix, allocates
nothing and never synchronises with the host.

Exactness: the distance ``1 - cos`` is computed as the reference does, in float32, but only where an argmax reads it:
rounding is monotone, so ``min_j fl(1 - c_j) = fl(1 - max_j c_j)`` bit for bit and the running "distance to the
picks" is ``fl(1 - running max cosine)``. The blocks are the same float32 dot products as one ``x @ x.T`` call: with
MKL (x86 CPU) they come out bit-identical to it, so the picks are the one-call form's
(tests/test_selection_speedups_16.py checks this, and the picks against that form). A BLAS whose blocks round
differently (another CPU library, cuBLAS) could only swap two picks whose scores agree to float32 rounding.

Deviations from the reference code (``vbdi/divprune``, ``llava_arch.DivPrune``):

- The first pick's nearest-neighbour distance excludes the token itself explicitly (the diagonal is masked), instead
  of taking the second-smallest entry of each column, which assumes the self-distance ``1 - cos(x, x)`` is the
  smallest value — float rounding can make it slightly positive, and exact duplicates make two entries zero.
- Picked tokens are masked out of later argmaxes. The reference relies on a picked token's distance to itself being
  0; once every remaining token duplicates a picked one (all minimum distances 0) its argmax can return a token it
  already picked, leaving fewer than ``budget`` distinct tokens. tokpress always keeps ``budget`` distinct ones.
- Ties (equal scores) go to the lowest index (``argmax``'s first maximum), so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokpress.ops import primal
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy

#: rows per block of the cosine matrix (blocks of 512-2048 rows run the matrix product at full speed on CPU)
BLOCK = 1024


@dataclass(frozen=True)
class DivPruneConfig(PolicyConfig):
    """DivPrune has no options besides the ratio, which is ``retain_ratio`` (paper default 0.098)."""


def cosine_gram(x: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """``[N, N]`` float32 cosine of every pair of rows of ``x`` ``[N, D]`` (any float dtype), ``x``'s device.

    The unit rows are those of :func:`~tokpress.ops.cosine_matrix`; row block ``[r0, r1)`` is multiplied with rows
    ``[0, r1)`` only and its left part is mirrored above the diagonal (about half the multiply-adds of one
    ``unit @ unit.T``), so the result is exactly symmetric. Blocks of about ``block`` rows (default :data:`BLOCK`)
    split ``N`` evenly, so none is much smaller than ``block / 2``.
    """
    block = block or BLOCK
    unit = F.normalize(primal(x).float(), dim=-1)
    n = unit.shape[0]
    gram = unit.new_empty(n, n)
    n_blocks = -(-n // block)
    bounds = [i * n // n_blocks for i in range(n_blocks + 1)]
    for r0, r1 in zip(bounds[:-1], bounds[1:]):  # a handful of iterations (N / block), none over tokens
        torch.mm(unit[r0:r1], unit[:r1].T, out=gram[r0:r1, :r1])
        gram[:r0, r0:r1] = gram[r0:r1, :r0].T
    return gram


def maxmin_diverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min diverse subset of the rows of ``x`` ``[N, D]`` under ``1 - cos`` distance.

    Returns ``k`` (``1 <= k <= N``) distinct row indices in *pick order* (first = most isolated row), ``torch.long``
    on ``x``'s device. Distances are float32 whatever ``x``'s dtype.
    """
    n = x.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= N, got k={k}, N={n}")
    cos = cosine_gram(x)  # [N, N] float32
    diagonal = cos.diagonal()
    diagonal.fill_(float("-inf"))
    isolation = 1.0 - cos.amax(dim=1)  # distance to the nearest *other* token: min_j fl(1 - c_j) = fl(1 - max_j c_j)
    diagonal.fill_(float("inf"))  # a pick's own entry: its distance to the picks becomes -inf, never picked again
    picks = torch.empty(k, dtype=torch.long, device=x.device)
    torch.argmax(isolation, dim=0, keepdim=True, out=picks[0:1])  # indexing with 1-element tensors: no host sync
    closest = cos.index_select(0, picks[0:1])[0]  # [N] largest cosine to the picks so far
    to_set = torch.empty_like(closest)  # [N] distance to the picks: fl(1 - closest)
    row = torch.empty_like(cos[:1])
    one = torch.ones((), device=x.device)
    for i in range(1, k):  # greedy farthest-point: each pick depends on every earlier one (inherently sequential)
        torch.sub(one, closest, out=to_set)
        torch.argmax(to_set, dim=0, keepdim=True, out=picks[i : i + 1])
        torch.index_select(cos, 0, picks[i : i + 1], out=row)
        torch.maximum(closest, row[0], out=closest)
    return picks


@register_policy("divprune", stage="outer")
class DivPrunePolicy(OuterPolicy):
    config_cls = DivPruneConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        n = video.grid.numel
        if budget >= n:
            return Plan(torch.arange(n, device=video.features.device))
        return Plan(maxmin_diverse(video.features, budget).sort().values)
