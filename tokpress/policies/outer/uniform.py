"""``uniform`` — evenly spaced tokens in every frame (outer baseline).

Keeps ``budget`` tokens: each frame gets ``floor`` or ``ceil`` of ``budget / T`` (the same count per frame
whenever ``budget`` divides by ``T``; otherwise the extra tokens go to evenly spread frames). Within a frame the
kept tokens are evenly spaced in raster order, so they cover every row. Zero selection cost: it is also the
fixed index the benchmark's *oracle* uses.
"""

from __future__ import annotations

import torch

from tokpress.ops import evenly_spaced
from tokpress.policies.base import OuterPolicy, Plan, VideoTokens
from tokpress.registry import register_policy


def uniform_indices(frames: int, per_frame: int, budget: int, device=None) -> torch.Tensor:
    """Sorted indices into ``frames * per_frame`` raster-ordered tokens, ``budget`` of them, spread evenly."""
    t = torch.arange(frames + 1, device=device)
    bounds = torch.div(t * budget, frames, rounding_mode="floor")
    counts = bounds[1:] - bounds[:-1]  # [T], each floor or ceil of budget / T
    parts = []
    for c in counts.unique().tolist():  # at most two distinct counts
        if c == 0:
            continue
        frame_ids = (counts == c).nonzero().squeeze(1)
        parts.append((frame_ids[:, None] * per_frame + evenly_spaced(per_frame, c, device)[None]).flatten())
    return torch.cat(parts).sort().values


@register_policy("uniform", stage="outer")
class UniformPolicy(OuterPolicy):
    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g = video.grid
        return Plan(uniform_indices(g.frames, g.per_frame, budget, video.features.device))
