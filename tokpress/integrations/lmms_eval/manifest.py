"""The ``lmms_eval.models`` entry point: which lmms-eval wrapper each tokpress model id extends.

lmms-eval (0.7.x) loads every entry point of the group ``lmms_eval.models`` and registers the
``ModelManifest`` objects it returns. The class paths below are imported only when a model is requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODELS_MODULE = "tokpress.integrations.lmms_eval.models"


@dataclass(frozen=True)
class WrapperSpec:
    """One tokpress model id: the lmms-eval wrapper it extends and the model families that wrapper loads.

    Attributes:
        model_id: the ``--model`` name, ``tokpress_<lmms-eval id>``.
        base: lmms-eval's class, ``module:Class``.
        class_name: the tokpress subclass in :mod:`~tokpress.integrations.lmms_eval.models`.
        chat: True for lmms-eval's chat wrappers (``doc_to_messages``), False for the simple ones.
        families: ``config.model_type`` values the base wrapper can load.
    """

    model_id: str
    base: str
    class_name: str
    chat: bool
    families: tuple[str, ...]


WRAPPERS: tuple[WrapperSpec, ...] = (
    WrapperSpec(
        "tokpress_qwen2_5_vl", "lmms_eval.models.chat.qwen2_5_vl:Qwen2_5_VL", "Qwen2_5_VL", True, ("qwen2_5_vl",)
    ),
    WrapperSpec("tokpress_qwen2_vl", "lmms_eval.models.simple.qwen2_vl:Qwen2_VL", "Qwen2_VL", False, ("qwen2_vl",)),
    WrapperSpec(
        "tokpress_qwen3_vl",
        "lmms_eval.models.chat.qwen3_vl:Qwen3_VL",
        "Qwen3_VL",
        True,
        ("qwen3_vl", "qwen3_vl_moe"),
    ),
    WrapperSpec(
        "tokpress_qwen3_5", "lmms_eval.models.chat.qwen3_5:Qwen3_5", "Qwen3_5", True, ("qwen3_5", "qwen3_5_moe")
    ),
    WrapperSpec("tokpress_llava_hf", "lmms_eval.models.chat.llava_hf:LlavaHf", "LlavaHf", True, ("llava_onevision",)),
    WrapperSpec(
        "tokpress_internvl_hf", "lmms_eval.models.chat.internvl_hf:InternVLHf", "InternVLHf", True, ("internvl",)
    ),
)


def manifests() -> list[Any]:
    """The ``ModelManifest`` of every :data:`WRAPPERS` entry (the entry point's target; needs lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    out = []
    for spec in WRAPPERS:
        path = f"{MODELS_MODULE}.{spec.class_name}"
        if spec.chat:
            out.append(ModelManifest(model_id=spec.model_id, chat_class_path=path))
        else:
            out.append(ModelManifest(model_id=spec.model_id, simple_class_path=path))
    return out
