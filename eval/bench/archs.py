"""Published full-size architectures: their configs, their shapes, and random-weight models built straight on the
target device.

Each ``archs/<name>.json`` holds the ``config.json`` of a public checkpoint, trimmed to what the model needs, with
a ``_source`` key saying where the numbers come from. Nothing is downloaded: the configs ship with tokpress, and
:func:`random_weight_model` builds the real ``transformers`` class with random weights, so a benchmark can time a
7B model's prefill on a GPU without its weights.

*Scaled CPU settings* (``<published name>-cpu``, e.g. ``llava-onevision-7b-cpu``) are not published models: a
published family's config (same ``model_type``, vision tower kind, patch / merge / pooling, token layout, GQA and
MLP ratios) with fewer and narrower layers, sized so that a realistic video (>= 32 frames x 196 tokens) runs in
seconds on a laptop CPU in float32 with the LLM prefill dominating TTFT. Their JSON names the published
architecture in ``_scaled_from`` and says in ``_source`` what was kept and what was scaled (:func:`scaled_from`,
:func:`arch_label`).

:func:`model_shape` reads the sizes a FLOPs count needs from a config: the decoder here (:func:`decoder_shape`),
the vision tower in :mod:`~tokpress.eval.bench.vision_shapes`.

:func:`random_weight_model` never materialises the model on the CPU in float32: it is built on the ``meta`` device
in the target dtype, given uninitialised storage on the target device (``to_empty``), then filled there by
:mod:`~tokpress.eval.bench.weight_init` (seeded uniform weights of standard deviation :data:`WEIGHT_STD`, norms 1
and 0, buffers recomputed by the model's own ``_init_weights`` and checked).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import torch

from tokpress.errors import ConfigError, UnsupportedModelError
from tokpress.eval.bench.vision_shapes import vision_shape
from tokpress.eval.bench.weight_init import fill_buffers, fill_parameters

ARCH_DIR = Path(__file__).with_name("archs")

#: Standard deviation of the random weights (the ``initializer_range`` of the published configs).
WEIGHT_STD = 0.02


def arch_names() -> list[str]:
    """Names of the shipped architectures, sorted (e.g. ``"qwen2.5-vl-7b"``)."""
    return sorted(path.stem for path in ARCH_DIR.glob("*.json"))


@cache
def _arch_dict(name: str) -> dict[str, Any]:
    path = ARCH_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown architecture {name!r}; choose one of {arch_names()}")
    return json.loads(path.read_text())


def scaled_from(name: str) -> str | None:
    """The published architecture a scaled CPU setting was derived from (its ``_scaled_from``); ``None`` for a
    published config."""
    return _arch_dict(name).get("_scaled_from")


def arch_label(name: str) -> str:
    """What architecture ``name`` is, in one line (for ``--list-archs`` and the bench report)."""
    base = scaled_from(name)
    if base is None:
        return "published config, random weights"
    return f"scaled CPU setting of {base}, not a published model; random weights"


def arch_source(name: str) -> str:
    """Where the numbers of architecture ``name`` come from (its ``_source`` note)."""
    return _arch_dict(name)["_source"]


def arch_config(name: str):
    """The ``transformers`` config of architecture ``name`` (a fresh object each call).

    Raises:
        ConfigError: ``name`` is not one of :func:`arch_names`.
        UnsupportedModelError: the installed ``transformers`` does not know the architecture's ``model_type``.
    """
    from transformers import AutoConfig, __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    data = {k: copy.deepcopy(v) for k, v in _arch_dict(name).items() if not k.startswith("_")}
    model_type = data.pop("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"architecture {name!r} needs model_type {model_type!r}, which transformers {__version__} lacks; "
            "upgrade transformers"
        )
    return AutoConfig.for_model(model_type, **data)


#: special-token attributes a smoke config moves to the end of its reduced vocabulary
_SPECIAL_IDS = (
    "vision_start_token_id",
    "vision_end_token_id",
    "image_token_id",
    "video_token_id",
    "image_token_index",
    "video_token_index",
)


def smoke_config(name: str, vocab: int = 4096):
    """``arch_config(name)`` cut to a size a CPU runs end to end in seconds, for smoke tests.

    Kept as published: every width, head count and head size, the experts (count, size, top-k), the rotary setup,
    the vision tower's patch, merge and feature-selection settings, and the *kinds* of decoder layers. Cut: the
    decoder to its first attention layer and the layers before it (a hybrid's first period: three Gated-DeltaNet
    layers then full attention), at least 2 layers; the vision tower to 2 blocks (deepstack, where the model has
    it, at both; a tower of 1 block keeps it); the vocabulary to ``vocab`` ids, the special ids moved to its end.
    """
    config = arch_config(name)
    text = _text_config(config)
    types = list(getattr(text, "layer_types", None) or [])
    first_attention = next((i for i, t in enumerate(types) if t != "linear_attention"), 0)
    layers = max(2, first_attention + 1)
    text.num_hidden_layers = layers
    if types:
        text.layer_types = types[:layers]
    vision = config.vision_config
    for depth in ("depth", "num_hidden_layers"):
        if hasattr(vision, depth):
            setattr(vision, depth, min(2, getattr(vision, depth)))  # a scaled setting may have 1 block
    if getattr(vision, "deepstack_visual_indexes", None):
        vision.deepstack_visual_indexes = [0, 1]
    text.vocab_size = vocab
    for holder in (config, text):
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and value >= vocab:
                setattr(holder, attr, 0)
    special = [a for a in _SPECIAL_IDS if isinstance(getattr(config, a, None), int)]
    for offset, attr in enumerate(sorted(special, key=lambda a: getattr(config, a))):
        setattr(config, attr, vocab - len(special) + offset)  # InternVL: <img>, </img> sit just below the context id
    return config


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config.text_config


#: Text model types whose full-attention layers gate their output with a sigmoid of a second ``q_proj`` half
#: (``q_proj`` is ``d -> 2 * heads * head_dim``); the modeling code does it unconditionally, the config has no flag.
_GATED_ATTENTION = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")

#: The sizes of a Gated-DeltaNet (linear-attention) layer, named as in the config.
LINEAR_KEYS = (
    "linear_num_key_heads",
    "linear_num_value_heads",
    "linear_key_head_dim",
    "linear_value_head_dim",
    "linear_conv_kernel_dim",
)


def _layer_types(text, layers: int) -> list[str]:
    types = list(getattr(text, "layer_types", None) or ["full_attention"] * layers)
    if len(types) != layers:
        raise ConfigError(f"layer_types has {len(types)} entries for {layers} layers; fix the config")
    return ["linear_attention" if t == "linear_attention" else "full_attention" for t in types]


def _mlp_types(text, layers: int) -> list[str]:
    """``"moe"`` where the layer holds a sparse MoE block, else ``"dense"`` (the Qwen MoE rule: every
    ``decoder_sparse_step``-th layer, less ``mlp_only_layers``; every layer when the config has neither)."""
    if not (getattr(text, "num_experts", 0) or 0):
        return ["dense"] * layers
    step = getattr(text, "decoder_sparse_step", 1) or 1
    dense_only = set(getattr(text, "mlp_only_layers", None) or [])
    return ["moe" if i not in dense_only and (i + 1) % step == 0 else "dense" for i in range(layers)]


def decoder_shape(config) -> dict[str, Any]:
    """The decoder part of :func:`model_shape`; works for any config with a standard text config.

    Per layer: ``layer_types`` (``"full_attention"`` or ``"linear_attention"``; any other attention type, e.g.
    ``"sliding_attention"``, is counted as full attention), ``mlp_types`` (``"dense"`` or ``"moe"``) and
    ``ffn_active`` (the FFN width a token goes through: ``intermediate`` for dense layers,
    ``experts_per_token * moe_intermediate + shared_expert_intermediate`` for MoE layers).
    """
    text = _text_config(config)
    heads, layers = text.num_attention_heads, text.num_hidden_layers
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    mlp_types = _mlp_types(text, layers)
    shape: dict[str, Any] = dict(
        family=config.model_type,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", None) or 0,
        layers=layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        attn_output_gate=getattr(text, "model_type", "") in _GATED_ATTENTION,
        layer_types=_layer_types(text, layers),
        mlp_types=mlp_types,
        experts=getattr(text, "num_experts", 0) or 0,
        experts_per_token=getattr(text, "num_experts_per_tok", 0) or 0,
        moe_intermediate=getattr(text, "moe_intermediate_size", 0) or 0,
        shared_expert_intermediate=getattr(text, "shared_expert_intermediate_size", 0) or 0,
        **{key: getattr(text, key, 0) or 0 for key in LINEAR_KEYS},
    )
    if "dense" in mlp_types and not shape["intermediate"]:
        raise ConfigError("the config has dense MLP layers but no intermediate_size")
    moe_width = shape["experts_per_token"] * shape["moe_intermediate"] + shape["shared_expert_intermediate"]
    shape["ffn_active"] = [moe_width if kind == "moe" else shape["intermediate"] for kind in mlp_types]
    return shape


def model_shape(config) -> dict[str, Any]:
    """The sizes a FLOPs count needs, read from a video-LLM config.

    Returns:
        A flat dict. Decoder (see :func:`decoder_shape`): ``family`` (the ``model_type``), ``hidden``,
        ``intermediate`` (dense FFN width; 0 when every layer is MoE), ``layers``, ``heads``, ``kv_heads``,
        ``head_dim``, ``vocab``, ``tied_embeddings``, ``attn_output_gate`` (Qwen3.5: ``q_proj`` also produces a
        sigmoid output gate, doubling its width), per layer ``layer_types``, ``mlp_types`` and ``ffn_active``;
        MoE sizes ``experts``, ``experts_per_token``, ``moe_intermediate``, ``shared_expert_intermediate`` (0 when
        absent); Gated-DeltaNet sizes ``linear_num_key_heads``, ``linear_num_value_heads``, ``linear_key_head_dim``,
        ``linear_value_head_dim``, ``linear_conv_kernel_dim`` (0 when the model has no linear-attention layer).
        Vision encoder: ``vision_kind`` (``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"qwen3_vl"`` -- also Qwen3.5's tower --,
        ``"siglip"``, ``"internvit"`` or ``"clip"``), ``vision_depth``, ``vision_width``, ``vision_intermediate``,
        ``vision_heads``, ``vision_mlp`` (``"gated"``: SwiGLU, 3 matrices; ``"plain"``: 2 matrices), ``patch``,
        ``temporal_patch`` (1 for per-frame towers), ``merge`` (spatial merge of the Qwen merger, InternVL's pixel
        shuffle factor, LLaVA-NeXT-Video's pooling stride; 1 for SigLIP), ``merger_width`` (input width of the
        merger / projector), ``out_hidden`` (width fed to the LLM), ``window_size`` (pixels; 0 when every block
        attends over the whole frame), ``fullatt_blocks``, ``image_size`` (per-frame towers' input side; 0 for
        Qwen, whose size is dynamic), ``projector`` (``"merger"`` or ``"mlp2x"``), ``vision_head`` (SigLIP's
        attention-pooling head runs; False for the published checkpoints), ``vision_cls`` (1 when a CLS token
        joins the patches: InternViT, CLIP), ``deepstack_mergers`` (Qwen3-VL mergers run on intermediate blocks);
        CLIP also ``pool_mode`` and ``pool_out``.

    Raises:
        UnsupportedModelError: a ``model_type`` outside
            :data:`~tokpress.eval.bench.vision_shapes.SHAPE_FAMILIES`.
    """
    shape = decoder_shape(config)
    shape.update(vision_shape(config, shape["hidden"]))
    return shape


def random_weight_model(
    arch,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    attn: str = "sdpa",
    *,
    seed: int = 0,
    std: float = WEIGHT_STD,
):
    """The ``AutoModelForImageTextToText`` model of ``arch`` with seeded random weights, in eval mode.

    The model is built on the ``meta`` device in ``dtype`` (nothing allocated), then ``to_empty(device)`` gives it
    uninitialised storage on ``device`` and the weights are drawn there: a 7B model on a GPU never touches the CPU,
    and never exists in float32. Tied weights (``tie_word_embeddings``) are re-tied after ``to_empty``.

    Args:
        arch: a name from :func:`arch_names`, or a ``transformers`` config (copied, not modified).
        device: where the weights live.
        dtype: dtype of every parameter (buffers keep the dtype the model gives them, e.g. float32 ``inv_freq``).
        attn: ``attn_implementation`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
        seed: seeds the generator the weights are drawn from (same seed, device and dtype -> same weights).
        std: standard deviation of the non-norm parameters.

    Raises:
        ConfigError: unknown architecture name.
        UnsupportedModelError: a buffer could not be recomputed with this transformers version.
    """
    from transformers import AutoModelForImageTextToText

    config = arch_config(arch) if isinstance(arch, str) else copy.deepcopy(arch)
    device = torch.device(device)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, attn_implementation=attn, dtype=dtype)
    model.to_empty(device=device)
    model.tie_weights()
    generator = torch.Generator(device=device).manual_seed(seed)
    accelerator = [] if device.type == "cpu" else [device]
    # _init_weights may draw from the global generators as a side effect: leave the caller's RNG state untouched
    with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else "cuda"):
        fill_buffers(model)
    fill_parameters(model, generator, std)
    return model.eval()
