"""``evs`` — Efficient Video Sampling, as in vLLM (``vllm/multimodal/evs.py``; arXiv 2510.14624).

Algorithm: each token's dissimilarity is ``1 - cos(x[t, p], x[t-1, p])`` to the same position in the previous
frame; the first frame counts as maximally dissimilar so it is always kept first; one global, stable top-k over
all frames keeps ``budget`` tokens. Per-frame counts therefore adapt to motion while the total is exact.

Budget mapping: vLLM's ``video_pruning_rate q`` is ``1 - retain_ratio``. Deviation: vLLM never keeps fewer than
one frame (``max(P, N(1-q))``); tokpress keeps exactly ``budget`` tokens, so below one frame's worth it keeps the
first frame's earliest tokens in raster order (stable order).
"""

from __future__ import annotations

import torch

from tokpress.ops import cosine_adjacent, topk_sorted
from tokpress.policies.base import OuterPolicy, Plan, VideoTokens
from tokpress.registry import register_policy


def evs_scores(frames: torch.Tensor) -> torch.Tensor:
    """Dissimilarity scores ``[T * P]`` of ``frames`` ``[T, P, D]``; the first frame scores ``+inf``."""
    first = torch.full_like(frames[:1, :, 0], float("inf"), dtype=torch.float32)
    return torch.cat([first, 1 - cosine_adjacent(frames)]).flatten()


@register_policy("evs", stage="outer")
class EVSPolicy(OuterPolicy):
    def token_scores(self, video: VideoTokens) -> torch.Tensor:
        """``[N]`` the scores EVS ranks by (``framebudget`` keeps each frame's top ones)."""
        g = video.grid
        return evs_scores(video.features.view(g.frames, g.per_frame, -1))

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        return Plan(topk_sorted(self.token_scores(video), budget))
