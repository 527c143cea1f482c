"""HoliTom's outer stage against a plain re-statement of the authors' code (cokeshao/HoliTom, ``llava_arch.py``).

The re-statement below follows the reference step by step — ``select_static_windows`` (the DP over windows),
``get_static_dynamic_features``, ``merge_tokens_by_attention_density`` with ``D = 0`` and ``merge_tokens_by_density``
with the beta merge — with loops, written from reading it (DPC-kNN's random tie noise left out). On videos where
tokpress's exact-budget apportionment has nothing to reconcile (every group's share ``n_g r'`` is a whole number),
tokpress must keep the same tokens with the same merged features. Every static group keeps at least 3 centers:
the reference clusters with ``k = min(K, centers)``, and with ``k <= 2`` the densest points tie (a point's density
counts itself and its nearest neighbour, equal for a mutual pair), which the reference breaks with random noise.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.holitom import HoliTomConfig, HoliTomOuterPolicy


def _dpc_centers(x: torch.Tensor, c: int, k: int) -> tuple[list[int], torch.Tensor]:
    dist = torch.cdist(x, x) / x.shape[-1] ** 0.5
    density = (-(dist.topk(k, dim=-1, largest=False).values ** 2).mean(-1)).exp()
    denser = (density[None, :] > density[:, None]).double()
    delta = (dist * denser + dist.max() * (1 - denser)).min(-1).values
    return sorted((delta * density).topk(c).indices.tolist()), dist


def reference_holitom(x, att, retain_ratio, tau=0.8, beta=0.6, k_max=7):
    """``{(frame, position): feature}`` the reference keeps for ``x`` ``[T, P, D]`` (static tokens at their
    segment's first frame, where tokpress places them)."""
    t, p, _ = x.shape
    x = x.double()
    sim = F.cosine_similarity(F.normalize(x[:-1], dim=-1), F.normalize(x[1:], dim=-1), dim=-1)  # [T - 1, P]
    pruned = torch.zeros(t, t, dtype=torch.float64)
    for s in range(t):
        for e in range(s + 1, t):
            pruned[s, e] = float((sim[s:e] > tau).all(0).sum()) * (e - s)
    dp, prev = [0.0] * t, [0] * t
    for i in range(t):
        best, best_j = (dp[i - 1] if i > 0 else 0.0), i
        for w in range(2, i + 2):
            j = i - w
            val = (dp[j] if j >= 0 else 0.0) + float(pruned[j + 1, i])
            if val > best:
                best, best_j = val, j + 1
        dp[i], prev[i] = best, best_j
    segments, i = [], t - 1
    while i >= 0:
        segments.append((prev[i], i))
        i = prev[i] - 1
    segments = segments[::-1]
    total = t * p
    ratio = min(retain_ratio / ((total - dp[-1]) / total), 1)
    out = {}
    for s, e in segments:
        static = (sim[s:e] > tau).all(0) if e > s else torch.zeros(p, dtype=torch.bool)
        dyn_pos = (~static).nonzero().flatten().tolist()
        keep_n = -(-len(dyn_pos) * ratio // 1)  # ceil
        for f in range(s, e + 1):  # dominant tokens (D = 0): the top attention of each frame's dynamic tokens
            top = torch.topk(att[f, dyn_pos], int(keep_n)).indices.tolist()
            for j in top:
                out[f, dyn_pos[j]] = x[f, dyn_pos[j]]
        st_pos = static.nonzero().flatten().tolist()
        c = round(len(st_pos) * ratio)
        if e > s and c > 0:
            means = x[s : e + 1, st_pos].mean(0)
            centers, dist = _dpc_centers(means, c, min(k_max, c))
            others = [i for i in range(len(st_pos)) if i not in centers]
            nearest = dist[others][:, centers].argmin(-1).tolist()
            for a, center in enumerate(centers):
                members = [o for o, n in zip(others, nearest) if n == a]
                merged = means[center]
                if members:
                    merged = beta * means[center] + (1 - beta) * means[members].mean(0)
                out[s, st_pos[center]] = merged
    return out


def two_scenes(seed: int, dim: int = 32) -> torch.Tensor:
    """``[6, 16, D]``: frames 0-3 share positions 0-7 (tiny noise), frames 4-5 a new scene sharing positions 8-15;
    every other token is random. The reference's DP then picks the segments (0, 3) and (4, 5)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 16, dim, generator=gen)
    x[:4, :8] = torch.randn(8, dim, generator=gen) + 0.01 * torch.randn(4, 8, dim, generator=gen)
    x[4:, 8:] = torch.randn(8, dim, generator=gen) + 0.01 * torch.randn(2, 8, dim, generator=gen)
    return x


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("budget", [24, 32, 48])
def test_outer_matches_the_reference(seed, budget):
    """Groups: each segment, (0, 3) and (4, 5), has 8 static means and 8 dynamic tokens per frame: M - R = 96 - 32 =
    64 tokens after temporal merging. Budgets 24 / 32 / 48 are r' = 3/8, 1/2, 3/4 of them: 3, 4 or 6 tokens in every
    group, whole numbers, so the reference's ceil / round shares are tokpress's exactly."""
    x = two_scenes(seed)
    att = torch.rand(6, 16, generator=torch.Generator().manual_seed(100 + seed))
    want = reference_holitom(x, att, budget / 96)
    plan = HoliTomOuterPolicy(HoliTomConfig()).plan(
        VideoTokens(x.reshape(96, -1), Grid(6, 4, 4), attention=att.flatten()), budget
    )
    got = {(int(i) // 16, int(i) % 16): f for i, f in zip(plan.keep, plan.features)}
    assert sorted(got) == sorted(want)
    for key, feature in want.items():
        torch.testing.assert_close(got[key].double(), feature, atol=1e-5, rtol=1e-5)
