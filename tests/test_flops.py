"""The FastV-convention FLOPs reproduce the published table of HoliTom (LLaVA-OV-7B, 32 frames x 196 tokens)."""

from __future__ import annotations

import pytest

from tokpress.config import budget
from tokpress.flops import fastv_flops

D, M, LAYERS, VIDEO = 3584, 18944, 28, 32 * 196  # Qwen2-7B decoder; 6272 grid tokens + 1 newline


def _outer(ratio: float) -> list[int]:
    return [budget(ratio, VIDEO)] * LAYERS  # the papers count visual tokens only


def test_uncompressed_matches_published():
    assert fastv_flops([VIDEO + 1] * LAYERS, D, M) / 1e12 == pytest.approx(40.8, abs=0.05)


@pytest.mark.parametrize("ratio,published", [(0.25, 8.7), (0.20, 7.0), (0.15, 5.2), (0.10, 3.4)])
def test_outer_retention_matches_published(ratio, published):
    # HoliTom's table rounds; the 20 % and 15 % rows differ from the formula by < 0.15 T (methods.md §1.4)
    assert fastv_flops(_outer(ratio), D, M) / 1e12 == pytest.approx(published, abs=0.15)


def test_fastv_k2_keeping_20_percent_matches_published():
    tokens = [VIDEO + 1] * 2 + [budget(0.2, VIDEO)] * (LAYERS - 2)
    assert fastv_flops(tokens, D, M) / 1e12 == pytest.approx(9.3, abs=0.05)


@pytest.mark.parametrize("ratio,published", [(0.25, 7.1), (0.10, 2.8)])
def test_holitom_preset_with_inner_merge_matches_published(ratio, published):
    from tokpress.registry import get_policy, get_preset

    preset = get_preset("holitom")
    k = get_policy("inner", preset.inner).default_layer(LAYERS)
    assert k == 18  # the paper's layer on the 28-layer Qwen2-7B
    outer = budget(ratio, VIDEO)
    tokens = [outer] * k + [budget(preset.inner_ratio, outer)] * (LAYERS - k)
    assert fastv_flops(tokens, D, M) / 1e12 == pytest.approx(published, abs=0.05)


# ----------------------------------------------------------------------------------------------------------------
# Extensions: per-layer FFN width (MoE) and linear-attention layers


def test_dense_signature_unchanged_by_the_per_layer_form():
    # n = 5, d = 8, m = 16: 4*5*64 + 2*25*8 + 2*5*8*16 = 1280 + 400 + 1280 = 2960 per layer
    assert fastv_flops([5, 5], 8, 16) == 2 * 2960
    assert fastv_flops([5, 5], 8, [16, 16], linear_state=[0, 0]) == 2 * 2960


def test_moe_layer_counts_its_active_width():
    # layer 0 dense m = 16; layer 1 MoE, top-2 of experts of width 6 plus a shared expert of width 4: m = 16
    # again, so both layers cost the same; a MoE layer whose active width is 6 (top-1, no shared) costs
    # 4*5*64 + 2*25*8 + 2*5*8*6 = 1280 + 400 + 480 = 2160
    assert fastv_flops([5, 5], 8, [16, 2 * 6 + 4]) == 2 * 2960
    assert fastv_flops([5, 5], 8, [16, 6]) == 2960 + 2160


def test_linear_attention_layer_replaces_the_quadratic_term_by_its_state():
    # 2-layer hybrid, n = 10, d = 8, m = 16; layer 0 Gated DeltaNet with 2 value heads of d_k = d_v = 4:
    # state S = 2*4*4 = 32 -> 4*10*64 + 2*10*32 + 2*10*8*16 = 2560 + 640 + 2560 = 5760;
    # layer 1 softmax attention: 2560 + 2*100*8 + 2560 = 6720
    assert fastv_flops([10, 10], 8, 16, linear_state=[32, 0]) == 5760 + 6720
    # linear in n: doubling n doubles the linear layer's cost, while the attention layer's grows faster
    assert fastv_flops([20], 8, 16, linear_state=32) == 2 * 5760
    assert fastv_flops([20], 8, 16) > 2 * 6720


def test_per_layer_lists_must_match_the_layers():
    from tokpress.errors import ConfigError

    with pytest.raises(ConfigError, match="intermediate_size has 1 entries"):
        fastv_flops([5, 5], 8, [16])
    with pytest.raises(ConfigError, match="linear_state has 3 entries"):
        fastv_flops([5, 5], 8, 16, linear_state=[0, 0, 0])
