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
