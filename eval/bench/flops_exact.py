"""Exact prefill FLOPs of a video LLM, counted from its config: decoder, vision encoder and selection overhead.

The second FLOPs column of ``tokpress bench`` (the first is :func:`tokpress.flops.fastv_flops`, the papers'
convention). Every matrix product is counted as multiply-accumulates (MACs) and reported as ``2 * MACs`` FLOPs;
what is counted for each kind of decoder layer and vision tower, and what is left out as negligible, is in
:mod:`~tokpress.eval.bench.macs`.

Selection overhead (similarity matrices, attention recomputation, clustering) is the caller's to pass in as
``overhead``; :func:`cosine_overhead`, :func:`cdist_overhead` and :func:`last_query_attention_overhead` estimate the
common ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tokpress.errors import ConfigError
from tokpress.eval.bench.archs import decoder_shape, model_shape
from tokpress.eval.bench.macs import ffn_macs, mixer_macs, tower_macs

#: The public interface (per-layer-kind MAC counts live in :mod:`~tokpress.eval.bench.macs`).
__all__ = [
    "PER_FRAME_TOWERS",
    "PrefillFlops",
    "cdist_overhead",
    "cosine_overhead",
    "decoder_layer_flops",
    "exact_prefill_flops",
    "fastv_prefill_flops",
    "input_video_grid",
    "last_query_attention_overhead",
    "llm_prefill_flops",
    "patch_grid",
    "video_tokens",
    "vision_flops",
]

Grid = Sequence[int]


@dataclass(frozen=True)
class PrefillFlops:
    """FLOPs (``2 * MACs``) of one prefill of one sample.

    Attributes:
        llm: decoder layers plus ``lm_head``.
        vision: vision encoder plus projector / merger (0 without a video grid).
        overhead: selection overhead, as passed by the caller.
        lm_head: the ``lm_head`` share of ``llm``.
        llm_layers: per decoder layer, ``len == num_layers`` (sums with ``lm_head`` to ``llm``).
    """

    llm: float
    vision: float
    overhead: float
    lm_head: float = 0.0
    llm_layers: tuple[float, ...] = ()

    @property
    def total(self) -> float:
        """``llm + vision + overhead``."""
        return self.llm + self.vision + self.overhead

    def as_dict(self) -> dict[str, Any]:
        """All fields plus ``total``, e.g. for a JSON report."""
        return {**asdict(self), "llm_layers": list(self.llm_layers), "total": self.total}


def _shape(config) -> Mapping[str, Any]:
    return config if isinstance(config, Mapping) else model_shape(config)


def decoder_layer_flops(config, n: int, *, causal: bool = True, layer: int = 0) -> dict[str, float]:
    """FLOPs of decoder layer ``layer`` over ``n`` tokens, by component.

    Args:
        config: a ``transformers`` config or a :func:`~tokpress.eval.bench.archs.model_shape` dict.
        n: tokens the layer processes (queries = keys in a prefill).
        causal: count the lower triangle of the attention (see :mod:`~tokpress.eval.bench.macs`).
        layer: which layer (its attention and MLP kinds come from ``layer_types`` / ``mlp_types``).

    Returns:
        Softmax-attention layers: ``q``, ``k``, ``v``, ``o`` (projections) and ``attn`` (scores + weighted sum);
        Gated-DeltaNet layers: ``in_proj``, ``conv``, ``delta`` and ``o``. Then ``mlp`` (active experts for a MoE
        layer, plus ``router``) and the ``total``.
    """
    s = _shape(config)
    macs = {**mixer_macs(s, n, layer, causal), **ffn_macs(s, n, layer)}
    out = {k: 2.0 * v for k, v in macs.items()}
    out["total"] = sum(out.values())
    return out


def llm_prefill_flops(
    config, tokens_per_layer: int | Sequence[int], *, causal: bool = True, logits_to_keep: int = 1
) -> tuple[list[float], float]:
    """Per-layer decoder FLOPs and the ``lm_head`` FLOPs of one prefill.

    Args:
        config: a ``transformers`` config or a ``model_shape`` dict.
        tokens_per_layer: sequence tokens (text + video) each layer processes, e.g. one row of
            :attr:`tokpress.state.Stats.tokens_per_layer`; an int means the same count at every layer.
        causal: see :func:`decoder_layer_flops`.
        logits_to_keep: positions whose logits are computed; 0 means all tokens of the last layer.

    Raises:
        ConfigError: ``tokens_per_layer`` does not have one entry per decoder layer.
    """
    s = _shape(config)
    tokens = [int(tokens_per_layer)] * s["layers"] if isinstance(tokens_per_layer, int) else list(tokens_per_layer)
    if len(tokens) != s["layers"]:
        raise ConfigError(f"tokens_per_layer has {len(tokens)} entries; the decoder has {s['layers']} layers")
    layers = [decoder_layer_flops(s, n, causal=causal, layer=i)["total"] for i, n in enumerate(tokens)]
    positions = tokens[-1] if logits_to_keep == 0 else min(logits_to_keep, tokens[-1])
    return layers, 2.0 * positions * s["hidden"] * s["vocab"]


def fastv_prefill_flops(config, tokens_per_layer: Sequence[int]) -> float:
    """:func:`tokpress.flops.fastv_flops` with the model's per-layer widths (any config with a text config).

    MoE layers count their active FFN width, linear-attention layers their recurrent state instead of ``2 n^2 d``
    (see :func:`tokpress.flops.fastv_flops`); a dense softmax-attention model gets exactly the papers' number.
    """
    from tokpress.flops import fastv_flops

    s = config if isinstance(config, Mapping) else decoder_shape(config)
    state = s["linear_num_value_heads"] * s["linear_key_head_dim"] * s["linear_value_head_dim"]
    return fastv_flops(
        tokens_per_layer,
        s["hidden"],
        s["ffn_active"],
        linear_state=[state if kind == "linear_attention" else 0 for kind in s["layer_types"]],
    )


# ----------------------------------------------------------------------------------------------------------------
# Vision encoders


#: Vision towers that see every frame at a fixed ``image_size`` (their grid does not depend on the input size).
PER_FRAME_TOWERS = ("siglip", "internvit", "clip")


def patch_grid(config, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """The patch grid ``(t, h, w)`` the vision encoder sees for ``frames`` frames of ``height x width`` pixels.

    Qwen: ``(ceil(frames / temporal_patch), height / patch, width / patch)`` -- ``video_grid_thw`` -- with the
    frames already resized by the processor (sides multiples of ``patch * merge``: 28 for Qwen2/2.5-VL, 32 for
    Qwen3-VL and Qwen3.5). LLaVA-OneVision, InternVL and LLaVA-NeXT-Video: the processor resizes every frame to
    ``image_size``, so ``(frames, image_size / patch, image_size / patch)`` whatever the input size (27 x 27 for
    SigLIP at 384 px, 32 x 32 for InternViT at 448 px, 24 x 24 for CLIP at 336 px).

    Raises:
        ConfigError: a Qwen side is not a multiple of ``patch * merge``.
    """
    s = _shape(config)
    if s["vision_kind"] in PER_FRAME_TOWERS:
        side = s["image_size"] // s["patch"]
        return frames, side, side
    unit = s["patch"] * s["merge"]
    if height % unit or width % unit:
        raise ConfigError(
            f"height and width must be multiples of {unit} (the processor's resize); got {height}x{width}"
        )
    return math.ceil(frames / s["temporal_patch"]), height // s["patch"], width // s["patch"]


def video_tokens(config, grid: Grid) -> int:
    """LLM placeholder tokens one video of patch grid ``grid`` becomes (before any compression).

    Qwen: ``t*h*w / merge**2`` (the timestamp text and ``vision_start`` / ``vision_end`` tokens of Qwen3-VL are not
    placeholders). LLaVA-OneVision: ``t * ceil(h/2) * ceil(w/2) + 1`` (bilinear pooling, one newline). InternVL:
    ``t * (h/merge) * (w/merge)`` context tokens (256 a frame; ``<img>``, ``</img>`` and the ``Frame{i}:`` labels
    are text). LLaVA-NeXT-Video: ``t * floor(h/stride) * floor(w/stride)`` (144 a frame).
    """
    s = _shape(config)
    t, h, w = (int(x) for x in grid)
    if s["vision_kind"] == "siglip":
        return t * math.ceil(h / 2) * math.ceil(w / 2) + 1
    if s["vision_kind"] in ("internvit", "clip"):
        return t * (h // s["merge"]) * (w // s["merge"])
    return t * h * w // (s["merge"] ** 2)


def vision_flops(
    config, grids: Grid | Sequence[Grid], *, kept: Any = None, layer_tokens: Sequence[int] | None = None
) -> float:
    """FLOPs of the vision encoder and projector on one or more videos, given their patch grids ``(t, h, w)``.

    Args:
        config: a ``transformers`` config or a ``model_shape`` dict.
        grids: one grid or a list of grids (a ``video_grid_thw`` tensor works too); see :func:`patch_grid`.
        kept: with one grid, the ``[t, h / merge, w / merge]`` bool patch groups a ``vision="rlt"`` stage ran the
            Qwen ViT on (``None``: all).
        layer_tokens: with one grid, the tokens per frame each SigLIP layer processed under ``vision="tome"``
            (``model.tokpress.last.vision_tokens``; ``None``: all).
    """
    s = _shape(config)
    if hasattr(grids, "tolist"):
        grids = grids.tolist()
    if len(grids) and not hasattr(grids[0], "__len__"):  # a single (t, h, w)
        grids = [grids]
    if (kept is not None or layer_tokens is not None) and len(grids) != 1:
        raise ConfigError("vision_flops: kept= / layer_tokens= describe one video; pass one grid")
    return 2.0 * sum(tower_macs(s, grid, kept, layer_tokens) for grid in grids)


def input_video_grid(config, inputs: Mapping[str, Any], sample: int = 0) -> tuple[int, int, int]:
    """The patch grid of the video of sample ``sample`` in a batch of model inputs (one video per sample).

    Qwen: its ``video_grid_thw`` row. LLaVA-OneVision / LLaVA-NeXT-Video: ``pixel_values_videos`` ``[B, frames, 3,
    S, S]`` gives the frames. InternVL (frames stacked in ``pixel_values``): the sample's context tokens divided by
    the tokens a frame becomes.
    """
    s = _shape(config)
    if "video_grid_thw" in inputs:
        return tuple(int(x) for x in inputs["video_grid_thw"][sample].tolist())
    side = s["image_size"] // s["patch"]
    if "pixel_values_videos" in inputs:
        return int(inputs["pixel_values_videos"].shape[1]), side, side
    if s["vision_kind"] == "internvit":
        per_frame = video_tokens(s, (1, side, side))
        context = int((inputs["input_ids"][sample] == config.image_token_id).sum())
        return context // per_frame, side, side
    raise ConfigError("no video in these inputs: expected video_grid_thw, pixel_values_videos or InternVL frames")


# ----------------------------------------------------------------------------------------------------------------
# Whole prefill and overheads


def exact_prefill_flops(
    config,
    tokens_per_layer: int | Sequence[int],
    *,
    video_grid: Grid | Sequence[Grid] | None = None,
    overhead: float = 0.0,
    causal: bool = True,
    logits_to_keep: int = 1,
    vision_kept: Any = None,
    vision_layer_tokens: Sequence[int] | None = None,
) -> PrefillFlops:
    """Exact FLOPs of one prefill: decoder (+ ``lm_head``), vision encoder and the caller's selection overhead.

    Args:
        config: a ``transformers`` config (e.g. ``model.config`` or :func:`~tokpress.eval.bench.archs.arch_config`) or
       a
            :func:`~tokpress.eval.bench.archs.model_shape` dict.
        tokens_per_layer: sequence tokens each decoder layer processes (one sample), e.g.
            ``model.tokpress.last.tokens_per_layer[b]``; an int for an uncompressed prefill.
        video_grid: patch grid ``(t, h, w)`` of the video(s) the vision encoder ran on (``video_grid_thw`` rows for
            Qwen; ``(frames, 27, 27)`` for LLaVA-OneVision at 384 px; see :func:`patch_grid`). ``None``: no vision.
        overhead: FLOPs of the compression itself (see :func:`cosine_overhead` and friends).
        causal: count the causal lower triangle of the decoder attention (default; what FlashAttention executes)
            or the full square (eager / masked SDPA).
        logits_to_keep: ``lm_head`` positions, 1 as in ``generate()``; 0 for all.
        vision_kept, vision_layer_tokens: what a vision stage let the encoder run on (see :func:`vision_flops`).
    """
    s = _shape(config)
    layers, lm_head = llm_prefill_flops(s, tokens_per_layer, causal=causal, logits_to_keep=logits_to_keep)
    vision = 0.0
    if video_grid is not None:
        vision = vision_flops(s, video_grid, kept=vision_kept, layer_tokens=vision_layer_tokens)
    return PrefillFlops(
        llm=sum(layers) + lm_head,
        vision=vision,
        overhead=float(overhead),
        lm_head=lm_head,
        llm_layers=tuple(layers),
    )


def cosine_overhead(n: int, d: int, m: int | None = None) -> float:
    """FLOPs of a cosine-similarity matrix between ``n`` and ``m`` vectors of width ``d`` (``m=None``: ``n`` with
    themselves).

    ``2*n*m*d`` for the Gram matrix plus ``3*d`` per vector normalised (square, sum, divide).
    """
    if m is None:
        return 2.0 * n * n * d + 3.0 * n * d
    return 2.0 * n * m * d + 3.0 * (n + m) * d


def cdist_overhead(n: int, d: int, m: int | None = None) -> float:
    """FLOPs of a Euclidean distance matrix between ``n`` and ``m`` vectors of width ``d`` (``m=None``: ``m = n``).

    As ``torch.cdist`` computes it for large inputs: ``|a|^2 + |b|^2 - 2 a.b`` -- ``2*n*m*d`` for the products,
    ``2*d`` per squared norm, and 3 per pair (two adds, the square root).
    """
    m = n if m is None else m
    return 2.0 * n * m * d + 2.0 * (n + m) * d + 3.0 * n * m


def last_query_attention_overhead(config, n_keys: int, layers: int = 1) -> float:
    """FLOPs of recomputing the last token's attention over ``n_keys`` cached keys at ``layers`` decoder layers.

    What FastV-style inner policies do without eager attention (DESIGN.md, hook 4): ``q_proj`` on one position
    (``d * h*hd`` MACs) and one row of scores (``h*hd*n_keys`` MACs); the softmax is negligible.
    """
    s = _shape(config)
    q_width = s["heads"] * s["head_dim"]
    return 2.0 * layers * (s["hidden"] * q_width + q_width * n_keys)
