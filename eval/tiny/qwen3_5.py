"""Tiny Qwen3.5: Qwen3-VL's processor layout and vision tower (no deepstack), a hybrid language model.

The interface of :func:`tokpress.eval.tiny.families.family_module`; inputs are those of
:mod:`tokpress.eval.tiny.qwen3_vl`.
The language model has 4 layers, ``full_attention, linear_attention, linear_attention, full_attention``: the real
models put one full-attention layer after every three Gated-DeltaNet layers (``full_attention_interval = 4``, the
first full one at layer 3); the tiny one starts with a full-attention layer so that inner stages at layers 1-3 all
have attention scores to read, and still runs linear layers after every stage.
"""

from __future__ import annotations

from tokpress.eval.tiny import qwen3_vl as _qwen3_vl
from tokpress.eval.tiny.families import VISION_TOKEN_IDS

EXTRA = 0
LAYER_TYPES = ["full_attention", "linear_attention", "linear_attention", "full_attention"]
make_inputs = _qwen3_vl.make_inputs
batch_inputs = _qwen3_vl.batch_inputs
sample_inputs = _qwen3_vl.sample_inputs
grid_tokens = _qwen3_vl.grid_tokens
processor = _qwen3_vl.processor


def text_config(layer_types: list[str] | None = None) -> dict:
    rope = {
        "rope_type": "default",
        "rope_theta": 1000.0,
        "mrope_section": [2, 1, 1],  # sums to half the rotary width: 16 * 0.5 / 2
        "mrope_interleaved": True,
        "partial_rotary_factor": 0.5,  # the real models rotate a quarter of each head; the rest passes through
    }
    types = list(layer_types or LAYER_TYPES)
    return dict(
        _qwen3_vl.text_config(),
        rope_parameters=rope,
        num_hidden_layers=len(types),
        layer_types=types,
        linear_conv_kernel_dim=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
    )


def config(model_type: str = "qwen3_5", layer_types: list[str] | None = None):
    from transformers import AutoConfig

    vision = {k: v for k, v in _qwen3_vl.vision_config().items() if k != "deepstack_visual_indexes"}
    moe = dict(_qwen3_vl.MOE, shared_expert_intermediate_size=32) if model_type.endswith("_moe") else {}
    return AutoConfig.for_model(
        model_type,
        text_config=dict(text_config(layer_types), **moe),
        vision_config=vision,
        **VISION_TOKEN_IDS,
        tie_word_embeddings=False,
    )
