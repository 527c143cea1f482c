"""MACs of each kind of layer a video LLM's prefill runs: softmax attention or Gated-DeltaNet, dense or MoE FFN,
and each vision tower. :mod:`~tokpress.eval.bench.flops_exact` adds them up into FLOPs (``2 * MACs``).

Every function here takes a :func:`~tokpress.eval.bench.archs.model_shape` dict ``s``.

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

Vision encoders, for a video given as its patch grid ``(t, h, w)``
(see :func:`~tokpress.eval.bench.flops_exact.patch_grid`):

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tokpress.errors import ConfigError

Grid = Sequence[int]


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


def mixer_macs(s: Mapping[str, Any], n: int, layer: int, causal: bool) -> dict[str, int]:
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


def ffn_macs(s: Mapping[str, Any], n: int, layer: int) -> dict[str, int]:
    """FFN MACs of one layer: a SwiGLU MLP, or the experts a token goes through plus the router."""
    d = s["hidden"]
    if _layer_kind(s, "mlp_types", layer, "dense") == "moe":
        active = s["experts_per_token"] * s["moe_intermediate"] + s["shared_expert_intermediate"]
        gate = 1 if s["shared_expert_intermediate"] else 0
        return dict(router=n * d * (s["experts"] + gate), mlp=3 * n * d * active)
    return dict(mlp=3 * n * d * s["intermediate"])


# ----------------------------------------------------------------------------------------------------------------
# Vision encoders


def _window_sides(side: int, window: int) -> list[int]:
    """Sides of the windows one grid side splits into: full windows, then a partial one."""
    return [window] * (side // window) + ([side % window] if side % window else [])


def _qwen_vision_macs(s: Mapping[str, Any], grid: Grid, kept: Any = None) -> int:
    """Qwen ViT MACs; ``kept`` (``[t, h / merge, w / merge]`` bool, the LLM-token patch groups a ``vision="rlt"``
    stage ran the blocks on) counts the blocks, their attention segments and the mergers over the kept groups only
    (the patch embedding still sees every patch)."""
    t, h, w = (int(x) for x in grid)
    width, merge = s["vision_width"], s["merge"]
    unit = merge * merge
    if kept is None:
        kept = [[[True] * (w // merge) for _ in range(h // merge)] for _ in range(t)]
    else:
        kept = kept.tolist() if hasattr(kept, "tolist") else kept
    per_frame = [sum(map(sum, frame)) * unit for frame in kept]  # kept patches per temporal patch
    patches = sum(per_frame)
    per_token_block = 4 * width * width + (3 if s["vision_mlp"] == "gated" else 2) * width * s["vision_intermediate"]
    full_pairs = sum(n * n for n in per_frame)
    if s["window_size"]:
        window = s["window_size"] // merge // s["patch"]
        window_pairs = sum(
            (sum(sum(row[c : c + window]) for row in frame[r : r + window]) * unit) ** 2
            for frame in kept
            for r in range(0, h // merge, window)
            for c in range(0, w // merge, window)
        )
    else:
        window_pairs = full_pairs
    full_blocks = len(set(s["fullatt_blocks"]) & set(range(s["vision_depth"])))
    attn = 2 * width * (full_blocks * full_pairs + (s["vision_depth"] - full_blocks) * window_pairs)
    embed = t * h * w * 3 * s["temporal_patch"] * s["patch"] ** 2 * width
    merged = patches // unit
    mergers = 1 + s.get("deepstack_mergers", 0)
    merger = mergers * merged * (s["merger_width"] ** 2 + s["merger_width"] * s["out_hidden"])
    return embed + s["vision_depth"] * patches * per_token_block + attn + merger


def _encoder_macs(s: Mapping[str, Any], tokens: int, layer_tokens: Sequence[int] | None = None) -> int:
    """A plain ViT encoder on one frame of ``tokens`` tokens: 4 attention linears, 2-matrix MLP, full attention;
    ``layer_tokens``: the tokens each layer processes instead (a ``vision="tome"`` stage merges inside)."""
    width = s["vision_width"]
    per_token_layer = 4 * width * width + 2 * width * s["vision_intermediate"]
    counts = list(layer_tokens) if layer_tokens is not None else [tokens] * s["vision_depth"]
    return sum(n * per_token_layer + 2 * width * n * n for n in counts)


def _siglip_vision_macs(s: Mapping[str, Any], grid: Grid, layer_tokens: Sequence[int] | None = None) -> int:
    frames, h, w = (int(x) for x in grid)
    width, p = s["vision_width"], h * w
    per_frame = (
        p * 3 * s["patch"] ** 2 * width  # Conv2d patch embedding
        + _encoder_macs(s, p, layer_tokens)
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


def tower_macs(s: Mapping[str, Any], grid: Grid, kept: Any = None, layer_tokens: Sequence[int] | None = None) -> int:
    """MACs of the vision tower and its merger / projector on one video of patch grid ``grid`` ``(t, h, w)``.

    A vision stage changes what runs: ``kept`` (Qwen, ``rlt``) the ``[t, h / merge, w / merge]`` patch groups the
    blocks ran on; ``layer_tokens`` (SigLIP, ``tome``) the tokens per frame each encoder layer processed.
    """
    kind = s["vision_kind"]
    if kind == "siglip":
        return _siglip_vision_macs(s, grid, layer_tokens)
    if kind in _VISION_MACS:
        return _VISION_MACS[kind](s, grid)
    return _qwen_vision_macs(s, grid, kept)
