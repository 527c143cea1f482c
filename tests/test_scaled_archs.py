"""The scaled CPU settings (``<published>-cpu``): a published family's shapes with fewer and narrower layers.

What must hold: they are listed and marked as scaled (never passed off as published models); they keep what makes
the published family what it is (``model_type``, vision tower kind, patch / merge / pooling, token layout, GQA and
gated-MLP ratios, special ids, M-RoPE split); their video token counts are the family's, derived by hand; and they
build and run compressed at smoke size like the published ones.
"""

from __future__ import annotations

import json

import pytest
import torch

import tokpress
from tokpress.config import budget
from tokpress.eval.bench import archs
from tokpress.eval.bench.inputs import synthetic_video_inputs, video_placeholder_id, video_token_layout

SCALED = {"llava-onevision-7b-cpu": "llava-onevision-7b", "qwen2.5-vl-7b-cpu": "qwen2.5-vl-7b"}

#: Shape keys a scaled setting keeps exactly from its published architecture.
KEPT = (
    "family",
    "vocab",
    "tied_embeddings",
    "vision_kind",
    "vision_mlp",
    "patch",
    "temporal_patch",
    "merge",
    "window_size",
    "image_size",
    "projector",
    "vision_head",
    "vision_cls",
)
SPECIAL = ("image_token_index", "video_token_index", "image_token_id", "video_token_id", "vision_start_token_id")


def _raw(name: str) -> dict:
    return json.loads((archs.ARCH_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", SCALED)
def test_listed_and_marked_as_scaled(name):
    assert name in archs.arch_names()
    assert archs.scaled_from(name) == SCALED[name]
    assert archs.scaled_from(SCALED[name]) is None  # the published ones are not marked
    assert "scaled CPU setting" in archs.arch_label(name) and "not a published model" in archs.arch_label(name)
    assert archs.arch_label(SCALED[name]).startswith("published")


@pytest.mark.parametrize("name", SCALED)
def test_source_says_what_was_kept_and_scaled(name):
    source = archs.arch_source(name)
    assert "NOT a published model" in source
    assert "Kept" in source and "Scaled" in source
    assert SCALED[name] in source  # names the published config it comes from
    assert "_source" not in archs.arch_config(name).to_dict()


@pytest.mark.parametrize("name", SCALED)
def test_keeps_the_family_and_its_ratios(name):
    scaled, base = archs.model_shape(archs.arch_config(name)), archs.model_shape(archs.arch_config(SCALED[name]))
    assert {k: scaled[k] for k in KEPT} == {k: base[k] for k in KEPT}
    assert scaled["heads"] // scaled["kv_heads"] == base["heads"] // base["kv_heads"] == 7  # GQA 28/4
    assert scaled["heads"] * scaled["head_dim"] == scaled["hidden"]
    # gated MLP: 18944 / 3584 = 37/7, and 2368 / 448 = 37/7 exactly
    assert scaled["intermediate"] * base["hidden"] == base["intermediate"] * scaled["hidden"]
    vision_ratio = base["vision_intermediate"] / base["vision_width"]
    assert abs(scaled["vision_intermediate"] - vision_ratio * scaled["vision_width"]) <= 0.5  # rounded to an int
    assert scaled["out_hidden"] == scaled["hidden"]
    # smaller in every direction that costs
    assert scaled["layers"] < base["layers"] and scaled["hidden"] < base["hidden"]
    assert scaled["vision_depth"] < base["vision_depth"] and scaled["vision_width"] < base["vision_width"]
    for attr in SPECIAL:
        assert _raw(name).get(attr) == _raw(SCALED[name]).get(attr)


def test_qwen_keeps_window_and_full_attention_blocks_and_the_mrope_split():
    raw = _raw("qwen2.5-vl-7b-cpu")
    vision = raw["vision_config"]
    assert vision["fullatt_block_indexes"] == [vision["depth"] - 1]  # the last block full, as published (31 of 32)
    assert vision["depth"] > 1  # at least one windowed block before it
    section = raw["rope_scaling"]["mrope_section"]
    head_dim = raw["hidden_size"] // raw["num_attention_heads"]
    assert sum(section) == head_dim // 2  # one section entry per rotary frequency
    published = _raw("qwen2.5-vl-7b")["rope_scaling"]["mrope_section"]
    assert [s * 2 for s in section] == published  # 1/4, 3/8, 3/8 of the frequencies, as published


def test_onevision_tokens_per_frame():
    """SigLIP at 384 px, patch 14: 27x27 patches, 2x2 bilinear pooling rounding up -> 14x14 = 196 per frame, and
    one newline token per video."""
    config = archs.arch_config("llava-onevision-7b-cpu")
    for frames in (1, 32):
        layout = video_token_layout(config, frames, 448, 448)
        assert layout["tokens"] == frames * 196 + 1
        assert layout["grid"] == (frames, 27, 27)
        assert layout == video_token_layout(archs.arch_config("llava-onevision-7b"), frames, 448, 448)


@pytest.mark.parametrize(("side", "per_patch"), [(448, 256), (392, 196)])
def test_qwen_tokens_per_temporal_patch(side, per_patch):
    """Qwen2.5-VL: (H/14/2) * (W/14/2) tokens per temporal patch of 2 frames: 16*16 at 448 px, 14*14 at 392 px."""
    config = archs.arch_config("qwen2.5-vl-7b-cpu")
    layout = video_token_layout(config, 64, side, side)
    assert layout["grid"] == (32, side // 14, side // 14)
    assert layout["tokens"] == 32 * per_patch
    assert layout == video_token_layout(archs.arch_config("qwen2.5-vl-7b"), 64, side, side)


@pytest.mark.parametrize("name", SCALED)
def test_smoke_config_keeps_the_scaled_widths(name):
    config = archs.smoke_config(name)
    shape, full = archs.model_shape(config), archs.model_shape(archs.arch_config(name))
    keep = ("hidden", "heads", "kv_heads", "head_dim", "intermediate", "vision_width", "vision_intermediate")
    assert {k: shape[k] for k in keep} == {k: full[k] for k in keep}
    assert shape["layers"] == 2 and shape["vocab"] == 4096
    assert shape["vision_depth"] == min(2, full["vision_depth"])  # a 1-block tower is not deepened


@pytest.mark.parametrize("name", SCALED)
def test_scaled_architecture_runs_compressed_at_smoke_size(name):
    config = archs.smoke_config(name)
    model = archs.random_weight_model(config, "cpu", torch.float32)
    inputs = synthetic_video_inputs(config, frames=4, height=56, width=56, dtype=torch.float32)
    n_video = int((inputs["input_ids"] == video_placeholder_id(config)).sum())
    # OV: 4 frames of 196 + the video's newline, which is never dropped; Qwen: 2 temporal patches of 2x2 tokens
    grid_tokens, kept_extra = (4 * 196, 1) if "onevision" in name else (2 * 4, 0)
    assert n_video == grid_tokens + kept_extra
    tokpress.apply(model, outer="uniform", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert model.tokpress.last.video_tokens == [n_video]
    assert model.tokpress.last.after_outer == [budget(0.25, grid_tokens) + kept_extra]
