"""VTC-CLS: [CLS]-attention selection, and the engine's multi-layer vision-attention capture it needs.

The capture is checked against the unpatched model's own eager attention maps: the [CLS] row (CLIP in
LLaVA-NeXT-Video, InternViT) and the map averaged over queries (SigLIP in LLaVA-OneVision, Qwen2.5-VL's ViT, whose
attention weights are read from its eager attention function), summed by hand over the layers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import tokpress
from conftest import batch_inputs
from tokpress.config import budget
from tokpress.errors import ConfigError, InputError
from tokpress.eval.tiny import families as tiny
from tokpress.patches.vision import (
    LayerSum,
    cls_attention,
    mean_attention,
    mean_query_attention,
    scored_layers,
    without_cls,
)
from tokpress.policies.base import Grid, VideoTokens
from tokpress.policies.outer.vtccls import VTCCLSConfig, VTCCLSPolicy, default_start


def video(attention: list[float], frames: int, per_frame: int) -> VideoTokens:
    n = frames * per_frame
    return VideoTokens(torch.zeros(n, 4), Grid(frames, 1, per_frame), attention=torch.tensor(attention))


# ---- crafted tensors -------------------------------------------------------------------------------------------
def test_cls_attention_is_the_first_rows_softmax_per_group():
    """Group 0 (3 rows): CLS query 1, keys 0, ln 2, ln 4 -> softmax (1, 2, 4) / 7; group 1 (2 rows): CLS query 2,
    keys 0, ln(3) / 2 -> (1, 3) / 4. The other rows' queries (large) must not matter."""
    q = torch.tensor([1.0, 50.0, -50.0, 2.0, 80.0]).view(5, 1, 1)
    k = torch.tensor([0.0, math.log(2), math.log(4), 0.0, math.log(3) / 2]).view(5, 1, 1)
    got = cls_attention(q, k, torch.tensor([0, 0, 0, 1, 1]), 1.0)
    torch.testing.assert_close(got, torch.tensor([1 / 7, 2 / 7, 4 / 7, 1 / 4, 3 / 4]))


def test_cls_attention_averages_heads():
    """Head 0 attends (1, 2, 4) / 7, head 1 uniformly (zero query): the mean of the two."""
    q = torch.zeros(3, 2, 1)
    q[0, 0] = 1.0
    k = torch.tensor([0.0, math.log(2), math.log(4)]).view(3, 1, 1).expand(3, 2, 1)
    got = cls_attention(q, k, torch.zeros(3, dtype=torch.long), 1.0)
    torch.testing.assert_close(got, (torch.tensor([1, 2, 4]) / 7 + 1 / 3) / 2)


def test_without_cls_swaps_only_the_cls_score():
    assert without_cls(cls_attention) is mean_query_attention
    assert without_cls(mean_attention) is mean_attention
    assert without_cls(mean_query_attention) is mean_query_attention


def test_layer_sum_adds_over_one_call_and_passes_one_layer_through():
    one = LayerSum([5])
    x = torch.tensor([1.0, 2.0])
    assert one.add(5, x) is x  # single layer: the very tensor, no arithmetic
    acc = LayerSum([1, 2, 3])
    for _ in range(2):  # a new encoder call starts a new sum
        assert acc.add(1, torch.tensor([1.0, 0.0])) is None
        assert acc.add(2, torch.tensor([0.0, 2.0])) is None
        torch.testing.assert_close(acc.add(3, torch.tensor([4.0, 4.0])), torch.tensor([5.0, 6.0]))
    assert scored_layers(22, 7) == [16, 17, 18, 19, 20, 21, 22]


def test_whole_video_top_k_follows_the_scores_across_frames():
    """Frame 0 is peaked, frame 1 diffuse: the 3 best tokens of the video are 0, 4, 5 (two from frame 1)."""
    v = video([0.9, 0.05, 0.03, 0.02, 0.3, 0.3, 0.2, 0.2], 2, 4)
    assert VTCCLSPolicy(VTCCLSConfig()).plan(v, 3).keep.tolist() == [0, 4, 5]


def test_per_frame_splits_the_budget_evenly_with_stable_ties():
    """Budget 3 over 2 frames: 2 for frame 0 (largest remainder, earlier first), 1 for frame 1, whose tie between
    tokens 4 and 5 goes to the earlier."""
    v = video([0.9, 0.05, 0.03, 0.02, 0.3, 0.3, 0.2, 0.2], 2, 4)
    assert VTCCLSPolicy(VTCCLSConfig(per_frame=True)).plan(v, 3).keep.tolist() == [0, 1, 4]


def test_ties_keep_the_earlier_tokens():
    v = video([1.0] * 6, 2, 3)
    assert VTCCLSPolicy(VTCCLSConfig()).plan(v, 4).keep.tolist() == [0, 1, 2, 3]


def test_layer_span_from_start_layer():
    """The authors' CLIP (23 layers up to the feature layer): start 16, layers 16..22. Scaled: 26 -> 18; a 1-layer
    encoder still scores its feature layer."""
    assert default_start(23) == 16 and default_start(26) == 18 and default_start(1) == 0
    assert VTCCLSPolicy(VTCCLSConfig()).vision_attention_layers(23) == 7
    assert VTCCLSPolicy(VTCCLSConfig(start_layer=0)).vision_attention_layers(5) == 5
    assert VTCCLSPolicy(VTCCLSConfig(start_layer=4)).vision_attention_layers(5) == 1


@pytest.mark.parametrize("bad", [-1, "2", 1.5, True])
def test_bad_start_layer_is_refused(bad):
    with pytest.raises(ConfigError, match="start_layer"):
        VTCCLSConfig(start_layer=bad)


def test_missing_attention_is_an_input_error():
    v = VideoTokens(torch.zeros(4, 2), Grid(1, 2, 2))
    with pytest.raises(InputError, match="VideoTokens.attention"):
        VTCCLSPolicy(VTCCLSConfig()).plan(v, 2)


def test_start_layer_past_the_feature_layer_is_refused_before_patching(get_model):
    model = get_model("llava_onevision")  # SigLIP, 2 layers up to the feature layer
    with pytest.raises(ConfigError, match="0..1"):
        tokpress.apply(model, outer="vtccls", retain_ratio=0.5, outer_options={"start_layer": 2})
    assert getattr(model, "tokpress", None) is None


# ---- the multi-layer capture against eager attention ------------------------------------------------------------
@pytest.fixture
def recorded(monkeypatch):
    """``record(model, inputs, mode, start_layer)``: the ``VideoTokens.attention`` vtccls is given (one video)."""

    def record(model, inputs, mode: str, start_layer: int) -> torch.Tensor:
        got = []
        plan = VTCCLSPolicy.plan
        monkeypatch.setattr(VTCCLSPolicy, "vision_attention", mode)
        monkeypatch.setattr(VTCCLSPolicy, "plan", lambda self, v, b: got.append(v.attention) or plan(self, v, b))
        tokpress.apply(model, outer="vtccls", retain_ratio=0.5, outer_options={"start_layer": start_layer})
        try:
            model(**inputs)
        finally:
            tokpress.remove(model)
        assert len(got) == 1
        return got[0]

    return record


@pytest.mark.parametrize("family", ["llava_next_video", "internvl"])
def test_cls_rows_summed_over_layers_match_eager(family, get_model, recorded):
    """CLIP / InternViT: the [CLS] row of each frame's eager map (mean over heads), summed over layers 0 .. feature
    layer, CLS column dropped, pooled as the model pools (2x2 average; pixel-shuffle sum of 2x2)."""
    model = get_model(family, attn="eager")
    module = tiny.family_module(family)
    inputs = module.make_inputs(prompts=[(5, 7)])
    pixels = inputs["pixel_values_videos"].flatten(0, 1) if family == "llava_next_video" else inputs["pixel_values"]
    maps = model.model.vision_tower(pixels, output_attentions=True).attentions
    # both tiny towers have 2 layers up to the feature layer: LLaVA-NeXT-Video reads layer 1 of 3, InternVL 1 of 2
    rows = sum(m[:, :, 0, 1:].double().mean(1) for m in maps[:2])  # [frames, 64]: the CLS row, patch columns
    if family == "llava_next_video":  # 2x2 average pooling of the 8x8 grid
        pooled = F.avg_pool2d(rows.view(-1, 1, 8, 8), 2)
    else:  # the model's pixel shuffle stacks 2x2 patches into each token: their sum
        pooled = model.model.pixel_shuffle(rows.view(-1, 8, 8, 1), model.config.downsample_ratio).sum(-1)
    want = pooled.flatten()
    got = recorded(model, inputs, "cls", start_layer=0)
    one = recorded(model, inputs, "cls", start_layer=1)
    assert not torch.allclose(got, one)  # the first layer counts
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_llava_onevision_summed_full_maps_match_eager(get_model, recorded):
    """SigLIP: the map averaged over heads and queries per frame, summed over both layers, bilinearly pooled."""
    model = get_model("llava_onevision", attn="eager")
    inputs = tiny.make_inputs("llava_onevision", prompts=[(5, 7)])
    maps = model.model.vision_tower(inputs["pixel_values_videos"].flatten(0, 1), output_attentions=True).attentions
    per_patch = sum(m.double().mean((1, 2)) for m in maps)  # [frames, 64]
    want = F.interpolate(per_patch.view(-1, 1, 8, 8), size=[4, 4], mode="bilinear").flatten()
    got = recorded(model, inputs, "full", start_layer=0)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


def _qwen25_three_blocks():
    """Tiny Qwen2.5-VL with 3 vision blocks: 0 and 2 full attention, 1 window attention."""
    from transformers import AutoModelForImageTextToText

    config = tiny.tiny_config("qwen2_5_vl")
    config.vision_config.depth = 3
    config.vision_config.fullatt_block_indexes = [0, 2]
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config, attn_implementation="eager").eval()


def test_qwen25_summed_full_maps_match_eager_and_skip_window_blocks(monkeypatch, recorded):
    """Qwen2.5-VL: the eager weights of blocks 0 and 2 (full attention, one map per temporal patch) averaged over
    heads and queries, summed, summed over each 2x2 merge unit, taken out of window order; block 1 (window
    attention) is not part of the sum."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
    from transformers.vision_utils import get_vision_window_index

    model = _qwen25_three_blocks()
    visual = model.model.visual
    inputs = tiny.make_inputs("qwen2_5_vl", prompts=[(5, 7)], video=tiny.VideoSpec(frames=4, height=112, width=112))
    current, weights = [None], {0: [], 1: [], 2: []}
    eager = qwen.eager_attention_forward

    def recording(*args, **kwargs):
        out, w = eager(*args, **kwargs)
        weights[current[0]].append(w[0].double().mean((0, 1)))  # [n_chunk]: mean over heads and queries
        return out, w

    monkeypatch.setattr(qwen, "eager_attention_forward", recording)
    hooks = [
        b.register_forward_pre_hook(lambda m, a, i=i: current.__setitem__(0, i)) for i, b in enumerate(visual.blocks)
    ]
    grid = inputs["video_grid_thw"]
    with torch.no_grad():
        visual(inputs["pixel_values_videos"], grid_thw=grid)
    for h in hooks:
        h.remove()
    monkeypatch.setattr(qwen, "eager_attention_forward", eager)
    assert [len(weights[i]) for i in range(3)] == [2, 8, 2]  # 2 temporal patches; 2 x 4 windows
    window_index, _ = get_vision_window_index(grid, spatial_merge_size=2, window_size=56, patch_size=14)
    units = lambda rows: torch.cat(rows).view(-1, 4).sum(-1)  # noqa: E731  [units] in window order
    want = torch.empty(32, dtype=torch.float64)
    want[window_index] = units(weights[0]) + units(weights[2])
    got = recorded(model, inputs, "full", start_layer=0)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
    with_window = torch.empty(32, dtype=torch.float64)
    with_window[window_index] = units(weights[0]) + units(weights[1]) + units(weights[2])
    assert not torch.allclose(got.double(), with_window, atol=1e-4)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "llava_next_video"])
def test_single_layer_is_unchanged(family, get_model, recorded, monkeypatch):
    """A span of one layer gives exactly the scores of the feature layer alone (the existing path, bit for bit)."""
    from tokpress.policies.outer.fastvid import FastVIDPolicy

    model = get_model(family)
    if family in tiny.MODULE_FAMILIES:
        inputs = tiny.family_module(family).make_inputs(prompts=[(5, 7)])
    else:
        inputs = tiny.make_inputs(family, prompts=[(5, 7)])
    last = recorded(model, inputs, "mean_query", start_layer=1)  # 1 of the 2 layers: the feature layer alone
    got = []
    plan = FastVIDPolicy.plan
    monkeypatch.setattr(FastVIDPolicy, "plan", lambda self, v, b: got.append(v.attention) or plan(self, v, b))
    tokpress.apply(model, outer="fastvid", retain_ratio=0.5)
    try:
        model(**inputs)
    finally:
        tokpress.remove(model)
    assert torch.equal(got[0], last)


# ---- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_generates_with_the_promised_token_count(family, get_model):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, outer="vtccls", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    stats = model.tokpress.last
    extra = 1 if family == "llava_onevision" else 0  # protected newline per video
    if family in tiny.MODULE_FAMILIES:
        extra = tiny.family_module(family).EXTRA
    for b, kept in enumerate(stats.kept["outer"]):
        assert len(kept) == 1  # one video per sample
        n = stats.video_tokens[b] - extra
        assert len(kept[0]) == budget(0.25, n) < n
        assert stats.after_outer[b] == budget(0.25, n) + extra
