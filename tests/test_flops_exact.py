"""Exact prefill FLOPs from the config: hand counts, GQA, the FastV convention, vision encoders, overheads."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tokpress.errors import ConfigError
from tokpress.eval import archs, tiny
from tokpress.eval import flops_exact as fe
from tokpress.flops import fastv_flops
from tokpress.state import Stats

# The tiny Qwen2.5-VL of tokpress.eval.tiny: d=64, m=128, 4 layers, 4 query heads and 2 kv heads of width 16,
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
