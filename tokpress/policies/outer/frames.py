"""``frames`` — keep evenly spaced whole frames (outer baseline: frame subsampling after encoding).

``budget`` tokens are ``ceil(budget / P)`` evenly spaced frames of ``P`` tokens; when ``budget`` is not a whole
number of frames the last chosen frame contributes only the remainder, evenly spaced within it, so the promised
token count holds exactly.
"""

from __future__ import annotations

import torch

from tokpress.ops import evenly_spaced
from tokpress.policies.base import OuterPolicy, Plan, VideoTokens
from tokpress.registry import register_policy


@register_policy("frames", stage="outer")
class FramesPolicy(OuterPolicy):
    def plan(self, video: VideoTokens, budget: int) -> Plan:
        g, device = video.grid, video.features.device
        n_frames = -(-budget // g.per_frame)
        chosen = evenly_spaced(g.frames, n_frames, device)
        whole = (chosen[:-1, None] * g.per_frame + torch.arange(g.per_frame, device=device)).flatten()
        rest = budget - (n_frames - 1) * g.per_frame
        last = chosen[-1] * g.per_frame + evenly_spaced(g.per_frame, rest, device)
        return Plan(torch.cat([whole, last]))
