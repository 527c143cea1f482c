"""Published full-size architectures, as configs and as random-weight models built straight on the target device.

Each ``archs/<name>.json`` holds the ``config.json`` of a public checkpoint, trimmed to what the model needs, with
a ``_source`` key saying where the numbers come from. Nothing is downloaded: the configs ship with tokpress, and
:func:`random_weight_model` builds the real ``transformers`` class with random weights, so a benchmark can time a
7B model's prefill on a GPU without its weights.

:func:`random_weight_model` never materialises the model on the CPU in float32: it is built on the ``meta`` device
in the target dtype, given uninitialised storage on the target device (``to_empty``), then every parameter is
filled from a seeded generator on that device (uniform, standard deviation :data:`WEIGHT_STD`; norms 1 and 0).
Non-persistent buffers (rotary ``inv_freq``, SigLIP ``position_ids``) are recomputed by the model's own
``_init_weights`` -- the path ``from_pretrained`` takes in transformers 5 -- and checked: a buffer left unset
raises instead of leaving garbage behind.
"""

from __future__ import annotations

import copy
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import torch

from tokpress.errors import ConfigError, UnsupportedModelError

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


def arch_source(name: str) -> str:
    """Where the numbers of architecture ``name`` come from (its ``_source`` note)."""
    return _arch_dict(name)["_source"]


def arch_config(name: str):
    """The ``transformers`` config of architecture ``name`` (a fresh object each call).

    Raises:
        ConfigError: ``name`` is not one of :func:`arch_names`.
    """
    from transformers import AutoConfig

    data = {k: copy.deepcopy(v) for k, v in _arch_dict(name).items() if not k.startswith("_")}
    return AutoConfig.for_model(data.pop("model_type"), **data)


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config.text_config


def model_shape(config) -> dict[str, Any]:
    """The sizes a FLOPs count needs, read from a video-LLM config.

    Returns:
        A flat dict. Decoder: ``family`` (the ``model_type``), ``hidden``, ``intermediate``, ``layers``, ``heads``,
        ``kv_heads``, ``head_dim``, ``vocab``, ``tied_embeddings``. Vision encoder: ``vision_kind`` (``"qwen2_vl"``,
        ``"qwen2_5_vl"`` or ``"siglip"``), ``vision_depth``, ``vision_width``, ``vision_intermediate``,
        ``vision_heads``, ``vision_mlp`` (``"gated"``: SwiGLU, 3 matrices; ``"plain"``: 2 matrices), ``patch``,
        ``temporal_patch`` (1 for SigLIP), ``merge`` (spatial merge of the Qwen merger; 1 for SigLIP),
        ``merger_width`` (merger input width, ``vision_width * merge**2``), ``out_hidden`` (width fed to the LLM),
        ``window_size`` (pixels; 0 when every block attends over the whole frame), ``fullatt_blocks``,
        ``image_size`` (SigLIP input side; 0 for Qwen, whose size is dynamic), ``projector`` (``"merger"`` or
        ``"mlp2x"``), ``vision_head`` (SigLIP's attention-pooling head runs; False for the published checkpoints).
    """
    family = config.model_type
    text = _text_config(config)
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    shape: dict[str, Any] = dict(
        family=family,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )
    vision = config.vision_config
    if family == "qwen2_vl":
        width = vision.embed_dim
        shape.update(
            vision_kind="qwen2_vl",
            vision_width=width,
            vision_intermediate=int(width * vision.mlp_ratio),
            vision_heads=vision.num_heads,
            vision_depth=vision.depth,
            vision_mlp="plain",
            out_hidden=vision.hidden_size,
            window_size=0,
            fullatt_blocks=list(range(vision.depth)),
        )
    elif family == "qwen2_5_vl":
        width = vision.hidden_size
        shape.update(
            vision_kind="qwen2_5_vl",
            vision_width=width,
            vision_intermediate=vision.intermediate_size,
            vision_heads=vision.num_heads,
            vision_depth=vision.depth,
            vision_mlp="gated",
            out_hidden=vision.out_hidden_size,
            window_size=vision.window_size,
            fullatt_blocks=list(vision.fullatt_block_indexes),
        )
    elif family == "llava_onevision":
        width = vision.hidden_size
        shape.update(
            vision_kind="siglip",
            vision_width=width,
            vision_intermediate=vision.intermediate_size,
            vision_heads=vision.num_attention_heads,
            vision_depth=vision.num_hidden_layers,
            vision_mlp="plain",
            out_hidden=text.hidden_size,
            window_size=0,
            fullatt_blocks=list(range(vision.num_hidden_layers)),
            patch=vision.patch_size,
            temporal_patch=1,
            merge=1,
            merger_width=width,
            image_size=vision.image_size,
            projector="mlp2x",
            vision_head=bool(getattr(vision, "vision_use_head", True)),  # as SiglipVisionTransformer reads it
        )
        return shape
    else:
        raise UnsupportedModelError(
            f"no FLOPs shape for model_type {family!r}; supported: qwen2_vl, qwen2_5_vl, llava_onevision"
        )
    merge = vision.spatial_merge_size
    shape.update(
        patch=vision.patch_size,
        temporal_patch=vision.temporal_patch_size,
        merge=merge,
        merger_width=width * merge * merge,
        image_size=0,
        projector="merger",
        vision_head=False,
    )
    return shape


# ----------------------------------------------------------------------------------------------------------------
# Random-weight models


def _is_norm(module: torch.nn.Module) -> bool:
    name = type(module).__name__
    return "Norm" in name or isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm)


def _owners(model: torch.nn.Module) -> dict[torch.nn.Module, torch.nn.Module]:
    """Each submodule -> the innermost ``PreTrainedModel`` containing it (whose ``_init_weights`` applies)."""
    from transformers import PreTrainedModel

    owner: dict[torch.nn.Module, torch.nn.Module] = {}
    for root in model.modules():  # pre-order: an inner PreTrainedModel comes after, and overrides, its parent
        if isinstance(root, PreTrainedModel):
            for sub in root.modules():
                owner[sub] = root
    return owner


def _poison(buffer: torch.Tensor) -> None:
    if buffer.is_floating_point() or buffer.is_complex():
        buffer.fill_(float("nan"))
    elif buffer.dtype != torch.bool:
        buffer.fill_(torch.iinfo(buffer.dtype).min)


def _poisoned(buffer: torch.Tensor) -> bool:
    if buffer.numel() == 0 or buffer.dtype == torch.bool:
        return False
    if buffer.is_floating_point() or buffer.is_complex():
        return bool(torch.isnan(buffer).any())
    return bool((buffer == torch.iinfo(buffer.dtype).min).any())


@torch.no_grad()
def _fill_buffers(model: torch.nn.Module) -> None:
    """Recompute every buffer with the owning model's ``_init_weights``; raise if one is left unset."""
    owner = _owners(model)
    holders = [m for m in model.modules() if any(True for _ in m.buffers(recurse=False))]
    for module in holders:
        for buffer in module.buffers(recurse=False):
            _poison(buffer)
    for module in holders:
        owner[module]._init_weights(module)
    unset = [name for name, b in model.named_buffers() if _poisoned(b)]
    if unset:
        raise UnsupportedModelError(
            f"random_weight_model cannot recompute buffers {unset[:4]} with this transformers version; "
            "build the model normally (AutoModelForImageTextToText.from_config) instead"
        )


@torch.no_grad()
def _fill_parameters(model: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    """Norm weights 1 and norm biases 0; every other parameter ~ U(-a, a) with ``a = sqrt(3) * std`` (standard
    deviation ``std``), drawn from ``generator`` in module order. Uniform rather than normal: 2-3x faster on a CPU."""
    bound = math.sqrt(3.0) * std
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if norm:
                param.fill_(1.0 if name == "weight" else 0.0)
            else:
                param.uniform_(-bound, bound, generator=generator)


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
        _fill_buffers(model)
    _fill_parameters(model, generator, std)
    return model.eval()
