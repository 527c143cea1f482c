"""tokpress: training-free visual-token compression for Hugging Face video LLMs.

import tokpress
tokpress.apply(model, "fastv", retain_ratio=0.25)   # or outer=..., inner=...
model.generate(**inputs)                             # unchanged
model.tokpress.last                                  # what happened
tokpress.remove(model)                               # exact restore
"""

from tokpress.api import apply, compressed, remove, vision_encoder
from tokpress.errors import ConfigError, InputError, TokpressError, UnsupportedModelError
from tokpress.frame_relevance import frame_scores, score_frames
from tokpress.registry import adapter_names, policy_names, preset_names, register_policy, register_preset

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "InputError",
    "TokpressError",
    "UnsupportedModelError",
    "adapter_names",
    "apply",
    "compressed",
    "frame_scores",
    "policy_names",
    "preset_names",
    "register_policy",
    "register_preset",
    "remove",
    "score_frames",
    "vision_encoder",
]
