"""Vision-stage policies: token reduction inside the vision encoder (pure tensor code, no transformers import).

A vision policy merges the encoder's tokens of each frame after one of its layers; the hooks of
:mod:`tokpress.patches.vision_stage` run the later layers on the merged tokens and restore the output grid, so the
projector, the pooling, the LLM's token layout and the outer / inner stages are unchanged.
"""

from __future__ import annotations

from tokpress.errors import ConfigError
from tokpress.policies.vision.tome import ToMeVision, ToMeVisionConfig

#: vision policies by name
VISION_POLICIES: dict[str, type[ToMeVision]] = {"tome": ToMeVision}


def vision_policy_names() -> list[str]:
    return sorted(VISION_POLICIES)


def get_vision_policy(name: str) -> type[ToMeVision]:
    """The vision policy class called ``name``; :class:`ConfigError` naming the valid ones otherwise."""
    try:
        return VISION_POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown vision policy {name!r}; choose one of: {', '.join(vision_policy_names())}"
        ) from None


__all__ = ["VISION_POLICIES", "ToMeVision", "ToMeVisionConfig", "get_vision_policy", "vision_policy_names"]
