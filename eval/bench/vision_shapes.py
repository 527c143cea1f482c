"""The vision-encoder half of :func:`~tokpress.eval.bench.archs.model_shape`: per family, the sizes of the vision
tower and its merger / projector that a FLOPs count needs (keys documented there).
"""

from __future__ import annotations

from typing import Any

from tokpress.errors import UnsupportedModelError


def _qwen_vit(vision, *, width: int, intermediate: int, mlp: str, out: int, window: int, full: list[int]):
    merge = vision.spatial_merge_size
    return dict(
        vision_width=width,
        vision_intermediate=intermediate,
        vision_heads=vision.num_heads,
        vision_depth=vision.depth,
        vision_mlp=mlp,
        out_hidden=out,
        window_size=window,
        fullatt_blocks=full,
        patch=vision.patch_size,
        temporal_patch=vision.temporal_patch_size,
        merge=merge,
        merger_width=width * merge * merge,
        image_size=0,
        projector="merger",
        vision_head=False,
        vision_cls=0,
        deepstack_mergers=0,
    )


def _side(value) -> int:
    """A square image or patch side from an int or an ``(h, w)`` pair."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise UnsupportedModelError(f"non-square image or patch size {tuple(value)} is not supported")
        return int(value[0])
    return int(value)


def vision_shape(config, text_hidden: int) -> dict[str, Any]:
    """The vision-tower sizes of ``config`` (``text_hidden``: the LLM width a projector feeds).

    Raises:
        UnsupportedModelError: a ``model_type`` outside :data:`SHAPE_FAMILIES`.
    """
    family, vision = config.model_type, config.vision_config
    if family == "qwen2_vl":
        width = vision.embed_dim
        full = list(range(vision.depth))
        return dict(
            vision_kind="qwen2_vl",
            **_qwen_vit(vision, width=width, intermediate=int(width * vision.mlp_ratio), mlp="plain",
                        out=vision.hidden_size, window=0, full=full),
        )  # fmt: skip
    if family == "qwen2_5_vl":
        return dict(
            vision_kind="qwen2_5_vl",
            **_qwen_vit(vision, width=vision.hidden_size, intermediate=vision.intermediate_size, mlp="gated",
                        out=vision.out_hidden_size, window=vision.window_size,
                        full=list(vision.fullatt_block_indexes)),
        )  # fmt: skip
    if family in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"):
        # Qwen3-VL ViT (also Qwen3.5's): 2-matrix GELU MLP, full attention within each temporal slice, no windows.
        # A deepstack merger runs after each block listed in deepstack_visual_indexes (Qwen3.5 has none).
        shape = dict(
            vision_kind="qwen3_vl",
            **_qwen_vit(vision, width=vision.hidden_size, intermediate=vision.intermediate_size, mlp="plain",
                        out=vision.out_hidden_size, window=0, full=list(range(vision.depth))),
        )  # fmt: skip
        deepstack = getattr(vision, "deepstack_visual_indexes", None) or []
        shape["deepstack_mergers"] = sum(1 for i in set(deepstack) if 0 <= i < vision.depth)
        return shape
    if family == "llava_onevision":
        width = vision.hidden_size
        return dict(
            vision_kind="siglip",
            vision_width=width,
            vision_intermediate=vision.intermediate_size,
            vision_heads=vision.num_attention_heads,
            vision_depth=vision.num_hidden_layers,
            vision_mlp="plain",
            out_hidden=text_hidden,
            window_size=0,
            fullatt_blocks=list(range(vision.num_hidden_layers)),
            patch=vision.patch_size,
            temporal_patch=1,
            merge=1,
            merger_width=width,
            image_size=vision.image_size,
            projector="mlp2x",
            vision_head=bool(getattr(vision, "vision_use_head", True)),  # as SiglipVisionTransformer reads it
            vision_cls=0,
            deepstack_mergers=0,
        )
    if family == "internvl":
        # InternViT: CLS token + patches, every encoder layer runs (the selected layer is read from the captured
        # hidden states), then pixel shuffle (merge = 1 / downsample_ratio) and LayerNorm + 2-layer MLP (mlp1).
        width, merge = vision.hidden_size, round(1 / config.downsample_ratio)
        return dict(
            vision_kind="internvit",
            vision_width=width,
            vision_intermediate=vision.intermediate_size,
            vision_heads=vision.num_attention_heads,
            vision_depth=vision.num_hidden_layers,
            vision_mlp="plain",
            out_hidden=text_hidden,
            window_size=0,
            fullatt_blocks=list(range(vision.num_hidden_layers)),
            patch=_side(vision.patch_size),
            temporal_patch=1,
            merge=merge,
            merger_width=width * merge * merge,
            image_size=_side(vision.image_size),
            projector="mlp2x",
            vision_head=False,
            vision_cls=1,
            deepstack_mergers=0,
        )
    if family == "llava_next_video":
        # CLIP: CLS token + patches through every layer (vision_feature_layer -2 is read from the captured hidden
        # states), CLS dropped, spatial pooling (stride spatial_pool_stride), then the 2-layer projector.
        width = vision.hidden_size
        layers_read = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        return dict(
            vision_kind="clip",
            vision_width=width,
            vision_intermediate=vision.intermediate_size,
            vision_heads=vision.num_attention_heads,
            vision_depth=vision.num_hidden_layers,
            vision_mlp="plain",
            out_hidden=text_hidden,
            window_size=0,
            fullatt_blocks=list(range(vision.num_hidden_layers)),
            patch=vision.patch_size,
            temporal_patch=1,
            merge=config.spatial_pool_stride,
            pool_mode=config.spatial_pool_mode,
            pool_out=getattr(config, "spatial_pool_out_channels", None) or width,
            merger_width=width * layers_read,
            image_size=vision.image_size,
            projector="mlp2x",
            vision_head=False,
            vision_cls=1,
            deepstack_mergers=0,
        )
    raise UnsupportedModelError(f"no FLOPs shape for model_type {family!r}; supported: {', '.join(SHAPE_FAMILIES)}")


#: Families :func:`~tokpress.eval.bench.archs.model_shape` knows (decoder and vision encoder).
SHAPE_FAMILIES = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "qwen3_5",
    "qwen3_5_moe",
    "llava_onevision",
    "internvl",
    "llava_next_video",
)
