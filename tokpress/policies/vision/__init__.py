"""Vision-stage policies: token reduction inside or before the vision encoder (pure tensor code, no transformers
import). Each says ``where`` it works, and a family's adapter offers one kind of site:

* ``"inside"`` (``tome``, ``mustdrop``; SigLIP, LLaVA-OneVision): merge the encoder's tokens of each frame after one
  of its layers; the hooks of :mod:`tokpress.patches.vision_stage` run the later layers on the merged tokens and
  restore the output grid, so the projector, the pooling, the LLM's token layout and the outer / inner stages are
  unchanged.
* ``"before"`` (``rlt``; the Qwen ViTs, which take a variable-length patch sequence): drop whole LLM-token patch
  groups before the first encoder layer; the hooks of :mod:`tokpress.patches.vision_drop` run the encoder on the kept
  patches only, fill each dropped token with the output of the token it repeats, and (with no outer policy) hand the
  LLM only the kept tokens.
"""

from __future__ import annotations

from tokpress.errors import ConfigError
from tokpress.policies.vision.mustdrop import MustDropVision, MustDropVisionConfig
from tokpress.policies.vision.rlt import RunLengthConfig, RunLengthVision
from tokpress.policies.vision.tome import ToMeVision, ToMeVisionConfig

VisionPolicy = type[ToMeVision] | type[RunLengthVision] | type[MustDropVision]

#: vision policies by name
VISION_POLICIES: dict[str, VisionPolicy] = {"tome": ToMeVision, "rlt": RunLengthVision, "mustdrop": MustDropVision}


def vision_policy_names() -> list[str]:
    return sorted(VISION_POLICIES)


def vision_policies_at(where: str) -> list[str]:
    """The vision policies that work ``where`` (``"inside"`` or ``"before"`` the encoder)."""
    return sorted(name for name, cls in VISION_POLICIES.items() if cls.where == where)


def get_vision_policy(name: str) -> VisionPolicy:
    """The vision policy class called ``name``; :class:`ConfigError` naming the valid ones otherwise."""
    try:
        return VISION_POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown vision policy {name!r}; choose one of: {', '.join(vision_policy_names())}"
        ) from None


__all__ = [
    "VISION_POLICIES",
    "MustDropVision",
    "MustDropVisionConfig",
    "RunLengthConfig",
    "RunLengthVision",
    "ToMeVision",
    "ToMeVisionConfig",
    "get_vision_policy",
    "vision_policies_at",
    "vision_policy_names",
]
