"""Exact prefill FLOPs of a video LLM, counted from its config: decoder, vision encoder and selection overhead.

The second FLOPs column of ``tokpress bench`` (the first is :func:`tokpress.flops.fastv_flops`, the papers'
convention). Every matrix product is counted as multiply-accumulates (MACs) and reported as ``2 * MACs`` FLOPs.

What is counted, per decoder layer processing ``n`` tokens (hidden ``d``, ``h`` query heads and ``g`` key/value
heads of width ``hd``, FFN width ``m``):

- projections: ``q`` ``n*d*h*hd``, ``k`` and ``v`` ``n*d*g*hd`` each (grouped-query attention), ``o`` ``n*h*hd*d``.
  Qwen3.5's full-attention layers compute a sigmoid output gate in the same ``q_proj`` (``attn_output_gate``):
  ``q`` is then ``n*d*2*h*hd``;
- attention: scores ``Q K^T`` and the weighted sum ``P V``, ``h*hd`` MACs per (query, key) pair each. A causal
  prefill has ``n*(n+1)/2`` pairs: that is the work FlashAttention (and SDPA's flash / cuDNN kernels, which
  ``is_causal=True`` selects) executes -- they skip the tiles above the diagonal, up to a partial tile per row of
  tiles. ``causal=False`` counts the full ``n**2`` square instead: what eager attention and SDPA with an explicit
  mask (math / memory-efficient kernels) compute before the mask is applied;
- gated SwiGLU MLP: three ``d x m`` matrices, ``3*n*d*m``. A sparse MoE layer counts the experts a token goes
  through: ``m = experts_per_token * moe_intermediate + shared_expert_intermediate`` (the shared expert, when the
  config has one, runs on every token), plus the router ``n*d*E`` for ``E`` experts and, with a shared expert, its
  ``d -> 1`` sigmoid gate ``n*d``;
- ``lm_head``: ``d*V`` per position whose logits are computed, one position by default (``generate()`` passes
  ``logits_to_keep=1`` to the prefill).

A Gated-DeltaNet (linear-attention) layer of Qwen3.5 (``H_k`` key heads and ``H_v`` value heads of widths ``d_k``,
``d_v``, causal conv kernel ``K``; ``C_k = 2*H_k*d_k + H_v*d_v`` channels) costs, instead of the four projections
and the attention:

- ``in_proj``: ``n*d*(C_k + H_v*d_v + 2*H_v)`` (``in_proj_qkv``, the gate ``in_proj_z``, ``in_proj_b`` and
  ``in_proj_a``); ``o``: ``out_proj``, ``n*H_v*d_v*d``;
- ``conv``: the short depthwise causal convolution, ``n*C_k*K``;
- ``delta``: the chunked gated delta rule as prefill kernels run it (FLA's ``chunk_gated_delta_rule`` and the
  torch fallback of transformers), with ``q`` and ``k`` repeated to the ``H_v`` value heads and the sequence
  padded to ``N = C * ceil(n / C)`` with chunks of ``C = 64`` tokens. Per value head and chunk: the two
  intra-chunk products ``K_beta K^T`` and ``Q K^T`` (``2*C^2*d_k``), the unit-lower-triangular (UT) transform
  applied to ``V_beta`` and the decayed ``K_beta`` (``C*(C-1)/2*(d_k + d_v)``), the state terms -- the correction
  read ``W S``, the output read ``Q S`` and the state update ``K^T V_new`` (``3*C*d_k*d_v``) -- and the intra-chunk
  output ``(Q K^T) V_new`` (``C^2*d_v``). In total ``H_v*N*(2*C*d_k + (C-1)*(d_k+d_v)/2 + 3*d_k*d_v + C*d_v)``:
  linear in ``n``, ``O(n * H_v * d_k * d_v)`` for the per-token state update and readout, where softmax
  attention costs ``O(n^2)``.

Left out as negligible (``O(n*d)`` against the ``O(n*d^2)`` above, < 0.1 % for the shipped architectures):
RMSNorm / LayerNorm (also Gated-DeltaNet's gated norm and its L2 norm of ``q``, ``k``), biases, RoPE, softmax,
activations and gates (elementwise), the decay and ``beta`` scalings, residual adds, the embedding lookup (no
arithmetic), Qwen3-VL's deepstack additions to the first decoder layers' hidden states, LLaVA-OneVision's bilinear
pooling of the video features and the newline token's concatenation, LLaVA-NeXT-Video's average pooling,
InternVL's pixel shuffle (a reshape).

Vision encoders, for a video given as its patch grid ``(t, h, w)`` (see :func:`patch_grid`):

- Qwen2-VL / Qwen2.5-VL / Qwen3-VL (and Qwen3.5's) ViT: the ``Conv3d`` patch embedding (``3*tp*p*p`` inputs per
  patch), per block the ``qkv`` and ``proj`` linears, the MLP (Qwen2-VL: 2 matrices, ``embed_dim x
  embed_dim*mlp_ratio``; Qwen2.5-VL: gated, 3 matrices; Qwen3-VL: 2 matrices of ``intermediate_size``) and the
  bidirectional attention *per group the model forms*: full-attention blocks attend within each temporal slice
  (``t`` groups of ``h*w`` patches, as ``cu_seqlens`` does); Qwen2.5-VL's windowed blocks within windows of
  ``window_size / patch / merge`` merged tokens a side, the last window of a row or column being partial (as
  ``get_window_index`` builds them); then the merger MLP on the ``t*h*w/merge**2`` merged tokens
  (``merge**2 * width`` -> same -> LLM width). Qwen3-VL runs one more merger of the same size after each block
  listed in ``deepstack_visual_indexes`` (3 for the published checkpoints; none for Qwen3.5). Its learned position
  embedding is a bilinear mix of 4 table rows per patch (elementwise, left out).
- SigLIP (LLaVA-OneVision): per frame ``(image_size/patch)**2`` patches through the ``Conv2d`` embedding and every
  encoder layer of the config (4 attention linears, 2-matrix MLP, full bidirectional attention within the frame),
  then the 2-layer projector on all patches (it runs before the pooling). The attention-pooling head, when the
  config keeps it (``vision_use_head``; the published LLaVA-OneVision checkpoints drop it), is counted too.
- InternViT (InternVL): per frame (a 448 px tile) the ``Conv2d`` embedding of ``(image_size/patch)**2`` patches,
  then the patches and the CLS token (``+1``) through every encoder layer (4 attention linears, 2-matrix MLP,
  attention over all ``p+1`` tokens), pixel shuffle to ``p / merge**2`` tokens of width ``merge**2 * width`` and
  the ``mlp1`` projector (``merge**2*width -> d -> d``).
- CLIP (LLaVA-NeXT-Video): per frame the ``Conv2d`` embedding, patches + CLS through every layer (the feature
  layer ``-2`` is read from the captured hidden states: the last layer still runs), CLS dropped, pooling with
  stride ``merge`` (average: no MACs; ``"conv"`` pooling counted as a strided ``Conv2d``) and the 2-layer
  projector (``width -> d -> d``) on the pooled tokens.

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


def attention_pairs(n: int, causal: bool = True) -> int:
    """(query, key) pairs of a prefill over ``n`` tokens: ``n*(n+1)/2`` causal, ``n**2`` otherwise."""
    return n * (n + 1) // 2 if causal else n * n


#: Chunk length of the chunked gated delta rule (FLA's ``chunk_gated_delta_rule`` and transformers' fallback).
DELTA_CHUNK = 64


def gated_delta_rule_macs(n: int, heads: int, key_dim: int, value_dim: int, chunk: int = DELTA_CHUNK) -> int:
    """MACs of the chunked gated delta rule over ``n`` tokens and ``heads`` value heads (see the module docstring).

    ``heads * N * (2*C*d_k + (C-1)*(d_k+d_v)/2 + 3*d_k*d_v + C*d_v)`` with ``N = C * ceil(n / C)``.
    """
    padded = chunk * math.ceil(n / chunk)
    per_chunk = (
        2 * chunk * chunk * key_dim  # K_beta K^T and Q K^T within the chunk
        + chunk * (chunk - 1) // 2 * (key_dim + value_dim)  # UT transform of V_beta and the decayed K_beta
        + 3 * chunk * key_dim * value_dim  # W S, Q S and K^T V_new against the d_k x d_v state
        + chunk * chunk * value_dim  # (Q K^T) V_new
    )
    return heads * (padded // chunk) * per_chunk


def _layer_kind(s: Mapping[str, Any], key: str, layer: int, default: str) -> str:
    kinds = s.get(key)
    if kinds is None:
        return default
    if not 0 <= layer < len(kinds):
        raise ConfigError(f"layer {layer} is out of range for a {len(kinds)}-layer decoder")
    return kinds[layer]


def _mixer_macs(s: Mapping[str, Any], n: int, layer: int, causal: bool) -> dict[str, int]:
    """Token-mixer MACs of one layer: softmax attention or Gated-DeltaNet."""
    d = s["hidden"]
    if _layer_kind(s, "layer_types", layer, "full_attention") == "linear_attention":
        key_heads, value_heads = s["linear_num_key_heads"], s["linear_num_value_heads"]
        dk, dv = s["linear_key_head_dim"], s["linear_value_head_dim"]
        conv_channels = 2 * key_heads * dk + value_heads * dv
        return dict(
            in_proj=n * d * (conv_channels + value_heads * dv + 2 * value_heads),
            conv=n * conv_channels * s["linear_conv_kernel_dim"],
            delta=gated_delta_rule_macs(n, value_heads, dk, dv),
            o=n * value_heads * dv * d,
        )
    hd = s["head_dim"]
    q_width, kv_width = s["heads"] * hd, s["kv_heads"] * hd
    return dict(
        q=n * d * q_width * (2 if s.get("attn_output_gate") else 1),
        k=n * d * kv_width,
        v=n * d * kv_width,
        o=n * q_width * d,
        attn=2 * q_width * attention_pairs(n, causal),
    )


def _ffn_macs(s: Mapping[str, Any], n: int, layer: int) -> dict[str, int]:
    """FFN MACs of one layer: a SwiGLU MLP, or the experts a token goes through plus the router."""
    d = s["hidden"]
    if _layer_kind(s, "mlp_types", layer, "dense") == "moe":
        active = s["experts_per_token"] * s["moe_intermediate"] + s["shared_expert_intermediate"]
        gate = 1 if s["shared_expert_intermediate"] else 0
        return dict(router=n * d * (s["experts"] + gate), mlp=3 * n * d * active)
    return dict(mlp=3 * n * d * s["intermediate"])


def decoder_layer_flops(config, n: int, *, causal: bool = True, layer: int = 0) -> dict[str, float]:
    """FLOPs of decoder layer ``layer`` over ``n`` tokens, by component.

    Args:
        config: a ``transformers`` config or a :func:`~tokpress.eval.bench.archs.model_shape` dict.
        n: tokens the layer processes (queries = keys in a prefill).
        causal: count the lower triangle of the attention (see the module docstring).
        layer: which layer (its attention and MLP kinds come from ``layer_types`` / ``mlp_types``).

    Returns:
        Softmax-attention layers: ``q``, ``k``, ``v``, ``o`` (projections) and ``attn`` (scores + weighted sum);
        Gated-DeltaNet layers: ``in_proj``, ``conv``, ``delta`` and ``o``. Then ``mlp`` (active experts for a MoE
        layer, plus ``router``) and the ``total``.
    """
    s = _shape(config)
    macs = {**_mixer_macs(s, n, layer, causal), **_ffn_macs(s, n, layer)}
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


def _window_sides(side: int, window: int) -> list[int]:
    """Sides of the windows one grid side splits into: full windows, then a partial one."""
    return [window] * (side // window) + ([side % window] if side % window else [])


def _qwen_vision_macs(s: Mapping[str, Any], grid: Grid) -> int:
    t, h, w = (int(x) for x in grid)
    width, merge = s["vision_width"], s["merge"]
    patches = t * h * w
    per_token_block = 4 * width * width + (3 if s["vision_mlp"] == "gated" else 2) * width * s["vision_intermediate"]
    full_pairs = t * (h * w) ** 2
    if s["window_size"]:
        window = s["window_size"] // merge // s["patch"]
        rows, cols = _window_sides(h // merge, window), _window_sides(w // merge, window)
        window_pairs = t * sum((r * c * merge * merge) ** 2 for r in rows for c in cols)
    else:
        window_pairs = full_pairs
    full_blocks = len(set(s["fullatt_blocks"]) & set(range(s["vision_depth"])))
    attn = 2 * width * (full_blocks * full_pairs + (s["vision_depth"] - full_blocks) * window_pairs)
    embed = patches * 3 * s["temporal_patch"] * s["patch"] ** 2 * width
    merged = patches // (merge * merge)
    mergers = 1 + s.get("deepstack_mergers", 0)
    merger = mergers * merged * (s["merger_width"] ** 2 + s["merger_width"] * s["out_hidden"])
    return embed + s["vision_depth"] * patches * per_token_block + attn + merger


def _encoder_macs(s: Mapping[str, Any], tokens: int) -> int:
    """A plain ViT encoder on one frame of ``tokens`` tokens: 4 attention linears, 2-matrix MLP, full attention."""
    width = s["vision_width"]
    per_token_layer = 4 * width * width + 2 * width * s["vision_intermediate"]
    return s["vision_depth"] * (tokens * per_token_layer + 2 * width * tokens * tokens)


def _siglip_vision_macs(s: Mapping[str, Any], grid: Grid) -> int:
    frames, h, w = (int(x) for x in grid)
    width, p = s["vision_width"], h * w
    per_frame = (
        p * 3 * s["patch"] ** 2 * width  # Conv2d patch embedding
        + _encoder_macs(s, p)
        + p * (width * s["hidden"] + s["hidden"] * s["hidden"])  # projector, before pooling
    )
    if s.get("vision_head"):  # attention-pooling head: one probe query; k, v over all patches; MLP on one token
        per_frame += (2 + 2 * p) * width * width + 2 * width * p + 2 * width * s["vision_intermediate"]
    return frames * per_frame


def _cls_vit_macs(s: Mapping[str, Any], grid: Grid) -> int:
    """InternViT and CLIP: CLS + patches through the encoder, then pixel shuffle or pooling and the projector."""
    frames, h, w = (int(x) for x in grid)
    width, merge, out = s["vision_width"], s["merge"], s["out_hidden"]
    merged = (h // merge) * (w // merge)
    per_frame = h * w * 3 * s["patch"] ** 2 * width + _encoder_macs(s, h * w + s["vision_cls"])
    if s.get("pool_mode") == "conv":  # a strided Conv2d instead of average / max pooling
        per_frame += merged * merge * merge * width * s["pool_out"]
    per_frame += merged * (s["merger_width"] * out + out * out)
    return frames * per_frame


_VISION_MACS = {"siglip": _siglip_vision_macs, "internvit": _cls_vit_macs, "clip": _cls_vit_macs}


def vision_flops(config, grids: Grid | Sequence[Grid]) -> float:
    """FLOPs of the vision encoder and projector on one or more videos, given their patch grids ``(t, h, w)``.

    Args:
        config: a ``transformers`` config or a ``model_shape`` dict.
        grids: one grid or a list of grids (a ``video_grid_thw`` tensor works too); see :func:`patch_grid`.
    """
    s = _shape(config)
    if hasattr(grids, "tolist"):
        grids = grids.tolist()
    if len(grids) and not hasattr(grids[0], "__len__"):  # a single (t, h, w)
        grids = [grids]
    count = _VISION_MACS.get(s["vision_kind"], _qwen_vision_macs)
    return 2.0 * sum(count(s, grid) for grid in grids)


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
    """
    s = _shape(config)
    layers, lm_head = llm_prefill_flops(s, tokens_per_layer, causal=causal, logits_to_keep=logits_to_keep)
    vision = vision_flops(s, video_grid) if video_grid is not None else 0.0
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
