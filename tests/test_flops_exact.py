"""Exact prefill FLOPs from the config: hand counts, GQA, the FastV convention, vision encoders, overheads."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tokpress.errors import ConfigError
from tokpress.eval.bench import archs
from tokpress.eval.bench import flops_exact as fe
from tokpress.eval.bench.macs import gated_delta_rule_macs
from tokpress.eval.tiny import families as tiny
from tokpress.flops import fastv_flops
from tokpress.state import Stats

# The tiny Qwen2.5-VL of tokpress.eval.tiny.families: d=64, m=128, 4 layers, 4 query heads and 2 kv heads of width 16,
# vocabulary 256. Vision: width 32, MLP 64 (gated), 2 blocks (block 1 full attention), 2 heads, patch 14,
# temporal patch 2, merge 2, window 56 px = 2 merged tokens a side, merger 128 -> 128 -> 64.
TINY = "qwen2_5_vl"


def test_decoder_counted_by_hand_on_the_tiny_config():
    config = tiny.tiny_config(TINY)
    result = fe.exact_prefill_flops(config, [10, 10, 6, 6])
    # n = 10 tokens, MACs:
    #   q 10*64*64 = 40960, k = v 10*64*(2*16) = 20480 each, o 10*64*64 = 40960        -> 122880
    #   causal attention: 10*11/2 = 55 pairs, QK^T and PV at 4*16 = 64 MACs a pair each -> 2*64*55 = 7040
    #   SwiGLU: 3 * 10*64*128                                                           -> 245760
    #   total 375680 MACs = 751360 FLOPs
    # n = 6: q, o 24576 each, k, v 12288 each (73728); 21 pairs -> 2688; MLP 147456     -> 223872 MACs = 447744
    # lm_head on the last position only: 64*256 = 16384 MACs = 32768 FLOPs
    assert result.llm_layers == (751360.0, 751360.0, 447744.0, 447744.0)
    assert result.lm_head == 32768.0
    assert result.llm == 2 * 751360 + 2 * 447744 + 32768 == 2430976
    assert result.vision == 0.0 and result.overhead == 0.0
    assert result.total == result.llm
    parts = fe.decoder_layer_flops(config, 10)
    assert (parts["q"], parts["k"], parts["v"], parts["o"]) == (81920.0, 40960.0, 40960.0, 81920.0)
    assert (parts["attn"], parts["mlp"], parts["total"]) == (14080.0, 491520.0, 751360.0)


def test_full_attention_counts_the_whole_square():
    config = tiny.tiny_config(TINY)
    causal = fe.decoder_layer_flops(config, 10)["attn"]
    full = fe.decoder_layer_flops(config, 10, causal=False)["attn"]
    assert (causal, full) == (2 * 2 * 64 * 55, 2 * 2 * 64 * 100)
    assert fe.exact_prefill_flops(config, 10, logits_to_keep=0).lm_head == 2 * 10 * 64 * 256


@pytest.mark.parametrize("n", [1, 7, 4096])
def test_gqa_reduces_kv_cost_by_the_head_ratio(n):
    shape = archs.model_shape(archs.arch_config("qwen2.5-vl-7b"))  # 28 query heads, 4 kv heads
    mha = fe.decoder_layer_flops(dict(shape, kv_heads=shape["heads"]), n)
    gqa = fe.decoder_layer_flops(shape, n)
    for part in ("k", "v"):
        assert gqa[part] * 7 == mha[part]  # exactly 4 / 28
    for part in ("q", "o", "attn", "mlp"):
        assert gqa[part] == mha[part]  # every query head still scores every key
    assert mha["total"] - gqa["total"] == 2 * 2 * n * 3584 * (28 - 4) * 128


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b", "llava-onevision-7b", "llava-onevision-0.5b"])
def test_fastv_convention_undercounts_in_the_documented_direction(name):
    shape = archs.model_shape(archs.arch_config(name))
    d, m, d_kv = shape["hidden"], shape["intermediate"], shape["kv_heads"] * shape["head_dim"]
    tokens = [6273] * 2 + [1255] * (shape["layers"] - 2)  # FastV K=2 keeping 20 % of 32 x 196 + 1 video tokens
    exact = fe.exact_prefill_flops(archs.arch_config(name), tokens)
    fastv = fastv_flops(tokens, d, m)
    # FastV per layer: 4nd^2 + 2n^2 d + 2ndm. Exact (2 FLOPs per MAC): 4nd^2 (q, o) + 4n d d_kv (k, v)
    # + 2dn(n+1) (causal attention) + 6ndm (SwiGLU). So exact - FastV = 4n d d_kv + 2nd + 4ndm > 0 per layer:
    # FastV's attention term equals the causal count (up to 2nd); it misses k/v, the third MLP matrix, the factor
    # 2 on the linear layers and the lm_head.
    missing = sum(4 * n * d * d_kv + 2 * n * d + 4 * n * d * m for n in tokens)
    assert exact.llm - exact.lm_head - fastv == pytest.approx(missing, rel=1e-12)
    assert exact.llm > 2 * fastv
    full = fe.exact_prefill_flops(archs.arch_config(name), tokens, causal=False)
    assert full.llm - exact.llm == pytest.approx(sum(2 * d * (n * n - n) for n in tokens), rel=1e-12)


def test_tokens_per_layer_from_stats():
    stats = Stats(num_layers=4, seq_tokens=[[20], [8]], inner_layers=[2])
    assert stats.tokens_per_layer[0] == [20, 20, 8, 8]
    config = tiny.tiny_config(TINY)
    by_stats = fe.exact_prefill_flops(config, stats.tokens_per_layer[0])
    assert by_stats.llm_layers == tuple(fe.decoder_layer_flops(config, n)["total"] for n in (20, 20, 8, 8))
    with pytest.raises(ConfigError, match="4 layers"):
        fe.exact_prefill_flops(config, [20, 8])


def test_tiny_qwen25_vision_counted_by_hand():
    config = tiny.tiny_config(TINY)
    # grid (t=2, h=4, w=6): 48 patches; merged grid 2 x 3 per time slice.
    #   patch embed: 48 * (3*2*14*14 = 1176) * 32                     = 1806336 MACs
    #   2 blocks x 48 tokens x (qkv + proj 4*32*32 + SwiGLU 3*32*64)  = 983040
    #   window block: windows of 2 x 2 merged tokens -> a 2x2 (16 patches) and a partial 2x1 (8 patches) per
    #     slice: pairs 2 * (16^2 + 8^2) = 640, QK^T + PV at 32 MACs a pair -> 2*32*640 = 40960
    #   full block: 2 slices of 24 patches: 2 * 24^2 = 1152 pairs          -> 2*32*1152 = 73728
    #   merger: 12 merged tokens x (128*128 + 128*64)                       = 294912
    #   total 3198976 MACs = 6397952 FLOPs
    assert fe.vision_flops(config, (2, 4, 6)) == 6397952
    assert fe.exact_prefill_flops(config, 26, video_grid=[(2, 4, 6)]).vision == 6397952
    assert fe.vision_flops(config, torch.tensor([[2, 4, 6], [2, 4, 6]])) == 2 * 6397952


@pytest.mark.parametrize(
    "family, spec",
    [
        ("qwen2_vl", tiny.VideoSpec(frames=4, height=56, width=84)),
        ("qwen2_5_vl", tiny.VideoSpec(frames=4, height=56, width=84)),
        ("qwen2_5_vl", tiny.VideoSpec(frames=2, height=140, width=84)),  # partial windows in both directions
        ("qwen2_5_vl", tiny.VideoSpec(frames=2, height=112, width=112)),  # windows tile the grid exactly
        ("llava_onevision", tiny.VideoSpec(frames=4)),  # the tiny SigLIP keeps its attention-pooling head
    ],
)
def test_count_equals_torch_flop_counter_on_the_real_modules(family, spec):
    """The count from the config equals what torch's FlopCounterMode measures on the model's matmuls and convs.

    Eager attention computes the full square, and a plain forward computes every position's logits, hence
    ``causal=False`` and ``logits_to_keep=0``. transformers 5.17 computes the RoPE angles as a matmul
    (``inv_freq @ positions``: 3 M-RoPE rows for Qwen, 1 for LLaVA, ``head_dim/2`` frequencies), which the counter
    sees and the count leaves out as negligible; 5.23 computes them elementwise.
    """
    model = tiny.tiny_model(family, attn="eager")
    inputs = tiny.make_inputs(family, video=spec)
    grid = fe.patch_grid(model.config, spec.frames, spec.height, spec.width)
    if family != "llava_onevision":
        assert list(grid) == inputs["video_grid_thw"][0].tolist()
    n = inputs["input_ids"].shape[1]
    assert fe.video_tokens(model.config, grid) == tiny.video_token_count(family, spec)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    expected = fe.exact_prefill_flops(model.config, n, video_grid=grid, causal=False, logits_to_keep=0)
    shape = archs.model_shape(model.config)
    rope = (1 if family == "llava_onevision" else 3) * 2 * (shape["head_dim"] // 2) * n
    assert counter.get_total_flops() - expected.total in (0, rope)


def test_qwen25_vl_7b_vision_of_a_16_frame_448px_video_is_in_the_paper_range():
    config = archs.arch_config("qwen2.5-vl-7b")
    grid = fe.patch_grid(config, frames=16, height=448, width=448)
    assert grid == (8, 32, 32)  # 16 frames / temporal patch 2; 448 / 14 = 32
    assert fe.video_tokens(config, grid) == 2048  # 8 * 32 * 32 / 2^2
    # On paper: 8192 patches through 32 blocks of (qkv + proj 4*1280^2 + SwiGLU 3*1280*3420) = 19.69M MACs per
    # token -> 2 * 8192 * 32 * 19.69M = 10.32 TFLOPs. On top, small: patch embed 2 * 8192 * 1176 * 1280 = 0.025 T,
    # merger 2 * 2048 * (5120^2 + 5120*3584) = 0.18 T, attention 2 * 2 * 1280 * (4 full blocks x 8 x 1024^2
    # + 28 window blocks x 8 x 16 windows x 64^2 pairs) = 0.25 T. Total about 10.78 T.
    flops = fe.vision_flops(config, grid)
    assert 10.5e12 < flops < 11.0e12


def test_llava_onevision_grid_and_tokens():
    config = archs.arch_config("llava-onevision-7b")
    grid = fe.patch_grid(config, frames=32, height=720, width=1280)  # resized to 384 px by the processor
    assert grid == (32, 27, 27)
    assert fe.video_tokens(config, grid) == 32 * 196 + 1 == 6273
    # per frame: 729 patches x 26 layers x (4*1152^2 + 2*1152*4304) MACs dominate -> 2 * 729 * 26 * 15.2M = 0.58 T
    per_frame = fe.vision_flops(config, (1, 27, 27))
    assert 0.6e12 < per_frame < 0.7e12
    assert fe.vision_flops(config, grid) == pytest.approx(32 * per_frame)


def test_patch_grid_rejects_unresized_qwen_frames():
    with pytest.raises(ConfigError, match="multiples of 28"):
        fe.patch_grid(archs.arch_config("qwen2-vl-7b"), 8, 450, 448)


def test_overhead_helpers_and_total():
    # cosine, 4 vectors of width 3 with themselves: Gram 2*4*4*3 = 96, normalisation 3*4*3 = 36
    assert fe.cosine_overhead(4, 3) == 132
    assert fe.cosine_overhead(4, 3, m=2) == 2 * 4 * 2 * 3 + 3 * 6 * 3
    # cdist, 4 x 4 of width 3: products 96, squared norms 2*8*3 = 48, 3 per pair 48
    assert fe.cdist_overhead(4, 3) == 192
    config = tiny.tiny_config(TINY)
    # q_proj on one position 64*64, one score row 64*100 keys, at 2 layers
    assert fe.last_query_attention_overhead(config, 100, layers=2) == 2 * 2 * (64 * 64 + 64 * 100)
    result = fe.exact_prefill_flops(config, 10, overhead=fe.cosine_overhead(8, 64))
    assert result.overhead == 2 * 8 * 8 * 64 + 3 * 8 * 64
    assert result.total == result.llm + result.overhead
    report = result.as_dict()
    assert report["total"] == result.total and len(report["llm_layers"]) == 4


# ----------------------------------------------------------------------------------------------------------------
# New families: MoE, hybrid Gated-DeltaNet / attention, Qwen3-VL deepstack, InternViT, CLIP.
# Small configs built here (real transformers classes), independent of the tiny family modules.


def _require(model_type: str) -> None:
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        pytest.skip(f"transformers {__version__} has no {model_type!r} (added in a later release)")


_SMALL_TEXT = dict(
    vocab_size=tiny.VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=4096,
    pad_token_id=tiny.PAD_ID,
)
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True}
_SMALL_QWEN_VIT = dict(
    hidden_size=32,
    intermediate_size=48,
    num_heads=2,
    patch_size=8,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=64,
    num_position_embeddings=64,
)
_MOE = dict(num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24)
_GDN = dict(
    layer_types=["linear_attention"] * 3 + ["full_attention"],
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=8,
    linear_value_head_dim=12,
    linear_conv_kernel_dim=4,
)


def small_config(family: str):
    """A small config of ``family``: 64-wide 4-layer decoder, 32-wide vision tower, the shared tiny token ids."""
    from transformers import AutoConfig

    _require(family)
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        moe = family == "qwen3_vl_moe"
        text = dict(_SMALL_TEXT, model_type=f"{family}_text", rope_parameters=dict(_MROPE, mrope_section=[2, 3, 3]))
        if moe:  # layers 1 and 3 sparse, 0 and 2 dense
            text.update(_MOE, decoder_sparse_step=2)
        vision = dict(_SMALL_QWEN_VIT, depth=3, deepstack_visual_indexes=[0, 2])
        return AutoConfig.for_model(family, text_config=text, vision_config=vision, **tiny.VISION_TOKEN_IDS)
    if family in ("qwen3_5", "qwen3_5_moe"):
        rope = dict(_MROPE, mrope_section=[1, 1, 0], partial_rotary_factor=0.25)
        text = dict(_SMALL_TEXT, **_GDN, model_type=f"{family}_text", rope_parameters=rope)
        if family == "qwen3_5_moe":  # every layer sparse, with a shared expert; no dense MLP at all
            text.pop("intermediate_size")
            text.update(_MOE, shared_expert_intermediate_size=40)
        vision = dict(_SMALL_QWEN_VIT, depth=2)
        return AutoConfig.for_model(family, text_config=text, vision_config=vision, **tiny.VISION_TOKEN_IDS)
    if family == "internvl":
        vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2)
        return AutoConfig.for_model(
            family,
            text_config=dict(_SMALL_TEXT, model_type="qwen2"),
            vision_config=dict(vision, image_size=56, patch_size=7),
            image_token_id=tiny.IMAGE_ID,
            image_seq_length=16,
        )
    if family == "llava_next_video":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
        vision.update(model_type="clip_vision_model", image_size=56, patch_size=7, projection_dim=32)
        return AutoConfig.for_model(
            family,
            text_config=dict(_SMALL_TEXT, model_type="llama"),
            vision_config=vision,
            image_token_index=tiny.IMAGE_ID,
            video_token_index=tiny.VIDEO_ID,
            image_grid_pinpoints=[[56, 56]],
        )
    raise ValueError(family)


def _hybrid_shape() -> dict:
    """A 2-layer hybrid decoder (Gated DeltaNet, then gated softmax attention), written out by hand."""
    from transformers import Qwen3_5TextConfig

    _require("qwen3_5")
    text = Qwen3_5TextConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        layer_types=["linear_attention", "full_attention"],
        linear_num_key_heads=1,
        linear_num_value_heads=2,
        linear_key_head_dim=4,
        linear_value_head_dim=6,
        linear_conv_kernel_dim=4,
    )
    return archs.decoder_shape(text)


def test_hybrid_two_layer_decoder_counted_by_hand():
    shape = _hybrid_shape()
    assert shape["layer_types"] == ["linear_attention", "full_attention"] and shape["attn_output_gate"]
    result = fe.exact_prefill_flops(shape, 10)
    # n = 10, d = 16, MLP width 24 (3 matrices: 3*10*16*24 = 11520 MACs in both layers).
    # Layer 0, Gated DeltaNet: 1 key head and 2 value heads, d_k = 4, d_v = 6, conv kernel 4.
    #   conv channels q, k, v: 4 + 4 + 12 = 20; in_proj (qkv 20, z 12, b 2, a 2): 10*16*36 = 5760
    #   conv: 10*20*4 = 800; out_proj: 10*12*16 = 1920
    #   delta rule, 10 tokens padded to one chunk of 64, per value head:
    #     K_beta K^T and Q K^T 2*64*64*4 = 32768; UT transform 64*63/2*(4+6) = 20160;
    #     W S, Q S, K^T V_new 3*64*4*6 = 4608; (Q K^T) V_new 64*64*6 = 24576 -> 82112, x 2 heads = 164224
    #   total 5760 + 800 + 1920 + 164224 + 11520 = 184224 MACs = 368448 FLOPs
    # Layer 1, gated softmax attention (2 query heads, 1 kv head, head_dim 8):
    #   q_proj with its output gate 10*16*(2*16) = 5120; k, v 10*16*8 = 1280 each; o 10*16*16 = 2560
    #   causal attention 55 pairs * 2 * 16 = 1760; MLP 11520 -> 23520 MACs = 47040 FLOPs
    # lm_head: 16*32 = 512 MACs = 1024 FLOPs
    assert result.llm_layers == (368448.0, 47040.0)
    assert result.lm_head == 1024.0
    parts = fe.decoder_layer_flops(shape, 10, layer=0)
    assert {k: v / 2 for k, v in parts.items()} == dict(
        in_proj=5760, conv=800, delta=164224, o=1920, mlp=11520, total=184224
    )
    assert fe.decoder_layer_flops(shape, 10, layer=1)["q"] == 2 * 5120


def test_gated_delta_rule_is_linear_in_chunks():
    # one chunk holds 1..64 tokens; 65 tokens take two
    one = gated_delta_rule_macs(1, 2, 4, 6)
    assert gated_delta_rule_macs(64, 2, 4, 6) == one == 164224
    assert gated_delta_rule_macs(65, 2, 4, 6) == gated_delta_rule_macs(128, 2, 4, 6) == 2 * one
    shape = _hybrid_shape()
    linear = [fe.decoder_layer_flops(shape, n, layer=0)["total"] for n in (640, 1280, 2560)]
    full = [fe.decoder_layer_flops(shape, n, layer=1)["total"] for n in (640, 1280, 2560)]
    assert linear[2] == 2 * linear[1] == 4 * linear[0]  # whole chunks: exactly linear
    assert full[2] > 2.5 * full[1]  # the n^2 term dominates softmax attention at this width
    with pytest.raises(ConfigError, match="out of range"):
        fe.decoder_layer_flops(shape, 10, layer=2)


def test_moe_layers_count_active_experts_and_router():
    shape = archs.model_shape(small_config("qwen3_vl_moe"))
    assert shape["mlp_types"] == ["dense", "moe", "dense", "moe"]  # decoder_sparse_step 2
    assert shape["ffn_active"] == [96, 48, 96, 48]  # top-2 x 24
    dense, sparse = fe.decoder_layer_flops(shape, 10, layer=0), fe.decoder_layer_flops(shape, 10, layer=1)
    # d = 64, n = 10: dense MLP 3*10*64*96 = 184320 MACs; MoE: 2 experts x 3*10*64*24 = 92160, router 10*64*6 = 3840
    assert (dense["mlp"], "router" in dense) == (2 * 184320, False)
    assert (sparse["mlp"], sparse["router"]) == (2 * 92160, 2 * 3840)
    assert sparse["q"] == dense["q"] and sparse["total"] < dense["total"]
    shared = archs.model_shape(small_config("qwen3_5_moe"))
    assert shared["mlp_types"] == ["moe"] * 4 and shared["intermediate"] == 0
    parts = fe.decoder_layer_flops(shared, 10, layer=3)
    # top-2 x 24 + shared 40 = 88 wide: 3*10*64*88 = 168960; router 6 experts + the shared expert's gate: 10*64*7
    assert (parts["mlp"], parts["router"]) == (2 * 168960, 2 * 4480)


def test_small_vision_towers_counted_by_hand():
    # Qwen3-VL: width 32, MLP 48 (2 matrices), 3 blocks, patch 8, temporal patch 2, merge 2, deepstack [0, 2].
    # Grid (2, 8, 8): 128 patches, 32 merged tokens.
    #   patch embed 128 * (3*2*8*8 = 384) * 32 = 1572864; blocks 3 * 128 * (4*32*32 + 2*32*48) = 2752512
    #   attention within each of the 2 slices: 2 * 64^2 = 8192 pairs, 3 blocks * 2*32*8192 = 1572864
    #   merger + 2 deepstack mergers: 3 * 32 * (128*128 + 128*64) = 2359296   -> 8257536 MACs
    assert fe.vision_flops(small_config("qwen3_vl"), (2, 8, 8)) == 2 * 8257536
    # InternViT: width 32, MLP 48, 2 layers, 56 px / patch 7 = 8 x 8 patches + CLS = 65 tokens; pixel shuffle
    # 2 -> 16 tokens of width 128, projector 128 -> 64 -> 64. One frame:
    #   embed 64 * 3*49 * 32 = 301056; layers 2 * (65 * (4*1024 + 2*32*48) + 2*32*65^2) = 1472640
    #   projector 16 * (128*64 + 64*64) = 196608                          -> 1970304 MACs
    assert fe.vision_flops(small_config("internvl"), (3, 8, 8)) == 3 * 2 * 1970304
    # CLIP: width 32, MLP 64, 3 layers, 65 tokens; average pooling stride 2 -> 16 tokens; projector 32 -> 64 -> 64
    #   embed 301056; layers 3 * (65 * (4*1024 + 2*32*64) + 2*32*65^2) = 2408640; projector 16*(32*64+64*64) = 98304
    assert fe.vision_flops(small_config("llava_next_video"), (1, 8, 8)) == 2 * 2808000


@pytest.mark.parametrize(
    "family, tokens",
    [("qwen3_vl", 2 * 16), ("qwen3_5", 2 * 16), ("internvl", 4 * 16), ("llava_next_video", 4 * 16)],
)
def test_grid_and_tokens_of_the_new_families(family, tokens):
    config = small_config(family)
    grid = fe.patch_grid(config, 4, 64, 64)  # Qwen3: 64 px is 2 x 32-px merge units; others resize to 56 px
    assert grid == ((2, 8, 8) if family.startswith("qwen") else (4, 8, 8))
    assert fe.video_tokens(config, grid) == tokens
    with pytest.raises(ConfigError, match="multiples of 16"):
        fe.patch_grid(small_config("qwen3_vl"), 4, 72, 64)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (tiny tensors: on a busy machine a 2-thread pool makes the MoE experts'
    ``index_add_`` take seconds), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "family", ["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "internvl", "llava_next_video"]
)
def test_new_families_equal_torch_flop_counter(family, one_thread):
    """The count from the config equals FlopCounterMode on the real modules, fed by ``synthetic_video_inputs``.

    Eager attention and all logits, as above. Differences the counter makes, derived here by hand:
    transformers 5.17 computes the RoPE angles as a matmul (3 M-RoPE rows or 1, ``rotary_dim/2`` frequencies);
    for Gated DeltaNet the counter does not see ``torch.linalg.solve_triangular`` (the UT transform, which the
    count includes) and sees the reference conv1d's ``K-1`` extra padded outputs (which the count leaves out).
    MoE experts run the eager implementation (the counter does not count grouped-mm kernels).
    """
    from tokpress.eval.bench.inputs import synthetic_video_inputs

    config = small_config(family)
    model = archs.random_weight_model(config, "cpu", torch.float32, attn="eager").requires_grad_(False)
    model.config._experts_implementation = "eager"
    inputs = synthetic_video_inputs(config, 4, 64, 64, text_before=5, text_after=7, dtype=torch.float32)
    n = inputs["input_ids"].shape[1]
    grid = fe.input_video_grid(config, inputs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    expected = fe.exact_prefill_flops(config, n, video_grid=grid, causal=False, logits_to_keep=0)
    shape = archs.model_shape(config)
    correction = 0
    if "linear_attention" in shape["layer_types"]:
        linear_layers = shape["layer_types"].count("linear_attention")  # 3: value heads 4, d_k 8, d_v 12
        solves = 4 * 64 * 63 // 2 * (8 + 12)  # one 64-token chunk per head
        conv_pad = 3 * (2 * 2 * 8 + 4 * 12) * 4  # (K-1) extra outputs x 80 channels x kernel 4
        correction = 2 * linear_layers * (conv_pad - solves)
    rotary = shape["head_dim"] // (4 if family.startswith("qwen3_5") else 1)
    rope = (3 if family.startswith("qwen") else 1) * 2 * (rotary // 2) * n
    assert counter.get_total_flops() - expected.total - correction in (0, rope)


def test_fastv_convention_uses_the_model_layers():
    _require("qwen3_5")
    _require("qwen3_vl_moe")
    hybrid = archs.arch_config("qwen3.5-27b")
    shape = archs.model_shape(hybrid)
    tokens = [4096] * 64
    state = 48 * 128 * 128  # 48 value heads of 128 x 128
    by_hand = sum(
        4 * 4096 * 5120**2 + (2 * 4096 * state if i % 4 != 3 else 2 * 4096**2 * 5120) + 2 * 4096 * 5120 * 17408
        for i in range(64)
    )
    assert fe.fastv_prefill_flops(hybrid, tokens) == by_hand == fe.fastv_prefill_flops(shape, tokens)
    moe = archs.arch_config("qwen3-vl-30b-a3b")  # top-8 x 768 = 6144 active
    assert fe.fastv_prefill_flops(moe, [100] * 48) == fastv_flops([100] * 48, 2048, 8 * 768)
    dense = archs.arch_config("qwen2.5-vl-7b")
    assert fe.fastv_prefill_flops(dense, [6273] * 28) == fastv_flops([6273] * 28, 3584, 18944)


def test_full_size_hybrid_and_moe_prefill():
    _require("qwen3_5")
    _require("qwen3_vl_moe")
    n = 16384
    hybrid = archs.model_shape(archs.arch_config("qwen3.5-27b"))
    linear, full = fe.decoder_layer_flops(hybrid, n, layer=0), fe.decoder_layer_flops(hybrid, n, layer=3)
    # full layer: causal attention 2 * 2 * 24*256 * n(n+1)/2 FLOPs; the linear layer's delta rule
    # 48 heads x n x (2*64*128 + 63*256/2 + 3*128*128 + 64*128) MACs = 48 * n * 82256
    assert full["attn"] == 2 * 2 * 6144 * n * (n + 1) // 2
    assert linear["delta"] == 2 * 48 * n * (2 * 64 * 128 + 63 * 256 // 2 + 3 * 128 * 128 + 64 * 128)
    assert linear["delta"] < full["attn"] / 10
    moe = archs.model_shape(archs.arch_config("qwen3-vl-30b-a3b"))
    parts = fe.decoder_layer_flops(moe, n, layer=0)
    assert parts["mlp"] == 2 * 3 * n * 2048 * 8 * 768 and parts["router"] == 2 * n * 2048 * 128


def test_qwen3_vl_8b_vision_of_a_16_frame_448px_video():
    _require("qwen3_vl")
    config = archs.arch_config("qwen3-vl-8b")
    grid = fe.patch_grid(config, frames=16, height=448, width=448)
    assert grid == (8, 28, 28)  # patch 16: 448 / 16 = 28
    assert fe.video_tokens(config, grid) == 8 * 196
    # 6272 patches through 27 blocks of (4*1152^2 + 2*1152*4304) = 15.22M MACs: 2 * 6272 * 27 * 15.22M = 5.16 T;
    # attention 2 * 2 * 1152 * 27 * 8 * 784^2 = 0.61 T; 4 mergers (1 + 3 deepstack) on 1568 tokens:
    # 2 * 4 * 1568 * (4608^2 + 4608*4096) = 0.50 T; patch embed 2 * 6272 * 1536 * 1152 = 0.02 T -> about 6.3 T
    assert 6.2e12 < fe.vision_flops(config, grid) < 6.4e12


@pytest.mark.parametrize(
    "family, spec",
    [
        ("qwen2_vl", tiny.VideoSpec(frames=8, height=56, width=84)),
        ("qwen2_5_vl", tiny.VideoSpec(frames=8, height=140, width=84)),  # partial windows, uneven kept counts
    ],
)
def test_vision_count_under_rlt_equals_torch_flop_counter(family, spec):
    """With ``vision="rlt"`` the encoder runs on the kept patch groups: the count from the kept mask equals what
    FlopCounterMode measures on the vision encoder's call (SDPA segments, so each segment's square only)."""
    import tokpress

    model = tiny.tiny_model(family, attn="eager")
    inputs = tiny.make_inputs(family, video=spec)
    grid = tuple(inputs["video_grid_thw"][0].tolist())
    tokpress.apply(model, vision="rlt", vision_ratio=0.4)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
        (kept,) = model.tokpress.vision_stage.take_kept()
    finally:
        tokpress.remove(model)
    t, h, w = grid
    mask = kept.view(t, h // 2, w // 2)
    assert 0 < int(mask.sum()) < mask.numel()
    assert counter.get_total_flops() == fe.vision_flops(model.config, grid, kept=mask)
    assert fe.vision_flops(model.config, grid, kept=mask) < fe.vision_flops(model.config, grid)


def test_vision_count_under_tome_equals_torch_flop_counter():
    import tokpress

    model = tiny.tiny_model("llava_onevision", attn="eager")
    inputs = tiny.make_inputs("llava_onevision", video=tiny.VideoSpec(frames=4))
    grid = fe.input_video_grid(model.config, inputs)
    tokpress.apply(model, vision="tome", vision_ratio=0.5, vision_layer=0)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(**inputs)
        layers = model.tokpress.last.vision_tokens
    finally:
        tokpress.remove(model)
    with torch.no_grad(), FlopCounterMode(display=False) as full:
        model(**inputs)
    assert layers == [64] + [32] * (len(layers) - 1)  # 8 x 8 patches per frame, merged to 32 after layer 0
    saved = fe.vision_flops(model.config, grid) - fe.vision_flops(model.config, grid, layer_tokens=layers)
    assert saved > 0
    # the bipartite matching itself: one round, 32 A-keys against 32 B-keys of head_dim per frame (selection
    # overhead, which tokpress counts apart from the encoder)
    vision = model.config.vision_config
    matching = 2 * grid[0] * 32 * 32 * (vision.hidden_size // vision.num_attention_heads)
    assert full.get_total_flops() - counter.get_total_flops() == saved - matching
