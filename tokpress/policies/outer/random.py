"""``random`` — a seeded uniformly random subset of each video's tokens (outer baseline).

The generator is re-seeded with ``seed`` for every video, so a video gets the same subset whatever else is in
the batch (padded batch == sample alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokpress.policies.base import OuterPolicy, Plan, PolicyConfig, VideoTokens
from tokpress.registry import register_policy


@dataclass(frozen=True)
class RandomConfig(PolicyConfig):
    seed: int = 0
    """Seed of the CPU generator drawn from for each video."""

    def validate(self) -> None:
        self.check(
            isinstance(self.seed, int) and not isinstance(self.seed, bool), f"seed must be an int, got {self.seed!r}"
        )


@register_policy("random", stage="outer")
class RandomPolicy(OuterPolicy):
    config_cls = RandomConfig

    def plan(self, video: VideoTokens, budget: int) -> Plan:
        gen = torch.Generator().manual_seed(self.config.seed)
        keep = torch.randperm(video.grid.numel, generator=gen)[:budget].sort().values
        return Plan(keep.to(video.features.device))
