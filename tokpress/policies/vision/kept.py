"""The outer plan that follows a drop-before-the-encoder vision stage: keep exactly the tokens the encoder ran on.

The engine uses it when a vision stage such as ``rlt`` is given without an outer policy, so the LLM receives the
kept tokens only (their count is the vision stage's budget, ``round(vision_ratio * N)`` per video).
"""

from __future__ import annotations

from tokpress.policies.base import OuterPolicy, Plan, VideoTokens


class VisionKeptPolicy(OuterPolicy):
    """Keep ``VideoTokens.vision_kept``; refuses (``RuntimeError``) a video without it or of another count."""

    name = "vision-kept"

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        kept = video.vision_kept
        if kept is None or kept.numel() != video.grid.numel or int(kept.sum()) != budget:
            got = None if kept is None else (kept.numel(), int(kept.sum()))
            raise RuntimeError(
                f"the vision stage's kept set {got} does not match video {video.video} of sample {video.sample} "
                f"({video.grid.numel} tokens, {budget} to keep)"
            )
        return Plan(kept.nonzero().squeeze(1).to(video.features.device))
