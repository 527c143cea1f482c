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

Cost: one ``N x N`` float32 distance matrix (``4 N^2`` bytes: 157 MB for 32 x 196 tokens) plus ``budget``
sequential argmax steps of ``O(N)`` each — the greedy is inherently sequential (each pick depends on all earlier
picks), every step is vectorised over the N tokens and none synchronises with the host.

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

from tokpress.ops import cosine_matrix
from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class DivPruneConfig(PolicyConfig):
    """DivPrune has no options besides the ratio, which is ``retain_ratio`` (paper default 0.098)."""


def maxmin_diverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min diverse subset of the rows of ``x`` ``[N, D]`` under ``1 - cos`` distance.

    Returns ``k`` (``1 <= k <= N``) distinct row indices in *pick order* (first = most isolated row), ``torch.long``
    on ``x``'s device. Distances are float32 whatever ``x``'s dtype.
    """
    n = x.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= N, got k={k}, N={n}")
    dist = 1.0 - cosine_matrix(x)  # [N, N] float32
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    isolation = dist.masked_fill(eye, float("inf")).amin(dim=1)  # distance to the nearest *other* token
    picks = torch.empty(k, dtype=torch.long, device=x.device)
    pick = isolation.argmax().view(1)  # 1-element tensors throughout: indexing with them needs no host sync
    picks[0:1] = pick
    to_set = dist.index_select(0, pick)[0].index_fill_(0, pick, float("-inf"))  # min distance to the picks
    for i in range(1, k):  # greedy farthest-point: each pick depends on every earlier one (inherently sequential)
        pick = to_set.argmax().view(1)
        picks[i : i + 1] = pick
        to_set = torch.minimum(to_set, dist.index_select(0, pick)[0]).index_fill_(0, pick, float("-inf"))
    return picks


@register_policy("divprune", stage="outer")
class DivPrunePolicy(OuterPolicy):
    config_cls = DivPruneConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        n = video.grid.numel
        if budget >= n:
            return Plan(torch.arange(n, device=video.features.device))
        return Plan(maxmin_diverse(video.features, budget).sort().values)
