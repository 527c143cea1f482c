"""The vision stage before the Qwen ViTs (``vision="rlt"``): repeated patch groups dropped before the encoder runs.

Policy tests use hand-built tensors whose answer is known. Model tests use the tiny Qwen2-VL, Qwen2.5-VL (window
order), Qwen3-VL (deepstack mergers) and Qwen3.5, on videos in which one temporal patch repeats the previous one
exactly: the Qwen ViTs attend within a temporal patch and their positions are spatial only, so dropping the repeat
and copying its source's output must give the uncompressed encoder's output.
"""

from __future__ import annotations

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress.errors import ConfigError
from tokpress.eval.tiny import families as tiny
from tokpress.patches.vision_drop import _Encoding
from tokpress.policies.vision import RunLengthConfig, RunLengthVision
from tokpress.policies.vision.rlt import repeat_source

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")


def _rlt(metric: str = "l1") -> RunLengthVision:
    return RunLengthVision(RunLengthConfig(metric=metric))


# ---- the policy on crafted tensors -------------------------------------------------------------------------------
def test_scores_are_the_change_since_the_previous_temporal_patch():
    units = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [1.0, 1.0]], [[4.0, 2.0], [3.0, 1.0]]])
    scores = _rlt().scores(units)
    assert torch.isinf(scores[0]).all()
    assert scores[1:].tolist() == [[1.0, 0.0], [2.0, 1.0]]  # mean |x_t - x_{t-1}| per unit
    cosine = _rlt("cosine").scores(units)
    assert cosine[1, 1].item() == pytest.approx(0.0, abs=1e-7)  # unchanged unit
    assert cosine[2, 0].item() == pytest.approx(1 - 4 / (20**0.5 * 2), abs=1e-6)  # 1 - cos((4, 2), (0, 2))


def test_select_keeps_the_first_temporal_patch_and_the_most_changed_units():
    units = torch.zeros(3, 2, 4)
    units[1, 0] = 1.0  # changed by 1
    units[2, 0] = 1.0  # same as t = 1: unchanged
    units[2, 1] = 3.0  # changed by 3
    dropped = _rlt().select(units, 4)
    assert dropped.keep.tolist() == [True, True, True, False, False, True]
    # a dropped unit repeats the latest kept unit at its position: (1, 1) <- (0, 1); (2, 0) <- (1, 0)
    assert dropped.source.tolist() == [0, 1, 2, 1, 2, 5]


def test_select_breaks_ties_towards_the_earlier_unit_and_keeps_the_budget():
    units = torch.zeros(4, 3, 2)  # nothing changes after t = 0: every later unit ties at 0
    for k in (3, 4, 7, 12):
        keep = _rlt().select(units, k).keep
        assert int(keep.sum()) == k
        assert keep.nonzero().squeeze(1).tolist() == list(range(k))


def test_budget_below_one_temporal_patch_thins_the_first_one_evenly():
    dropped = _rlt().select(torch.randn(2, 5, 3), 3)
    assert dropped.keep.nonzero().squeeze(1).tolist() == [0, 2, 4]
    # t = 0: (0, 1) -> nearest kept in raster order, 0 (the tie with 2 goes earlier); (0, 3) -> 2.
    # t = 1: positions 0, 2, 4 repeat t = 0's kept units; positions 1, 3 (flat 6, 8) have none: nearest kept is 4
    assert dropped.source.tolist() == [0, 0, 2, 2, 4, 0, 4, 2, 4, 4]
    with pytest.raises(ValueError):
        _rlt().select(torch.randn(2, 5, 3), 0)


def test_repeat_source_example():
    keep = torch.tensor([[1, 1], [0, 1], [0, 0]]).bool()
    assert repeat_source(keep).tolist() == [0, 1, 0, 3, 0, 3]
    keep = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1]]).bool()
    assert repeat_source(keep).tolist() == [1, 1, 1, 1, 1, 1, 7, 7]


def test_segment_bounds_are_recounted_over_kept_rows():
    # 3 segments of 4 rows; the second loses every row, the third two of them
    keep_rows = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1]).bool()
    run = _Encoding(
        rows=keep_rows.nonzero().squeeze(1),
        prefix=torch.nn.functional.pad(keep_rows.long().cumsum(0), (1, 0)),
        fill=torch.zeros(3, dtype=torch.long),
        total=12,
    )
    cu = torch.tensor([0, 4, 8, 12], dtype=torch.int32)
    bounds, longest = run.bounds(cu, 4)
    assert bounds.tolist() == [0, 4, 6] and bounds.dtype == torch.int32  # the empty segment is gone
    assert longest == 4
    assert run.bounds(cu, None)[1] is None
    cos = torch.arange(12.0)[:, None]
    assert run.rows_of((cos, -cos))[1].flatten().tolist() == [-0.0, -1.0, -2.0, -3.0, -8.0, -11.0]


# ---- the stage on the tiny Qwen models ----------------------------------------------------------------------------
def _repeating_video(family: str) -> dict[str, torch.Tensor]:
    """One sample whose video's temporal patch 1 repeats temporal patch 0 exactly (the others are random)."""
    inputs = tiny.make_inputs(family) if family in ("qwen2_vl", "qwen2_5_vl") else batch_inputs(family)
    if family not in ("qwen2_vl", "qwen2_5_vl"):  # keep sample 0 only
        t, h, w = inputs["video_grid_thw"][0].tolist()
        keep = inputs["attention_mask"][0].bool()
        inputs = {
            "input_ids": inputs["input_ids"][:1, keep],
            "attention_mask": inputs["attention_mask"][:1, keep],
            "mm_token_type_ids": inputs["mm_token_type_ids"][:1, keep],
            "pixel_values_videos": inputs["pixel_values_videos"][: t * h * w],
            "video_grid_thw": inputs["video_grid_thw"][:1],
        }
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t >= 3
    pixels = inputs["pixel_values_videos"].clone()
    pixels[h * w : 2 * h * w] = pixels[: h * w]
    inputs["pixel_values_videos"] = pixels
    return inputs


def _video_features(model, inputs):
    out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    return torch.cat(out.pooler_output), [*(getattr(out, "deepstack_features", None) or [])]


@pytest.mark.parametrize("family", QWEN)
def test_dropping_an_exact_repeat_gives_the_uncompressed_encoder_output(get_model, family):
    model = get_model(family)
    inputs = _repeating_video(family)
    reference, ref_deep = _video_features(model, inputs)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    units = t * h * w // 4
    tokpress.apply(model, vision="rlt", vision_ratio=(units - h * w // 4) / units)
    features, deep = _video_features(model, inputs)
    torch.testing.assert_close(features, reference, rtol=0, atol=1e-5)
    assert len(deep) == len(ref_deep)
    for got, want in zip(deep, ref_deep):  # Qwen3-VL's deepstack mergers are filled the same way
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    stage = model.tokpress.vision_stage
    (kept,) = stage.take_kept()
    per_frame = h * w // 4
    assert not kept[per_frame : 2 * per_frame].any() and kept[:per_frame].all() and kept[2 * per_frame :].all()
    depth = len(model.model.visual.blocks)
    assert stage.patches == [(units - per_frame) * 4] * depth  # every block ran on the kept patches only
    assert stage.patches_in == t * h * w


@pytest.mark.parametrize("family", ("qwen2_5_vl", "qwen3_vl"))
def test_an_outer_policy_on_the_filled_grid_selects_what_it_selects_uncompressed(get_model, family):
    model = get_model(family)
    inputs = _repeating_video(family)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    units = t * h * w // 4
    tokpress.apply(model, outer="visionzip", retain_ratio=0.25)  # uses the encoder's attention too
    reference = model(**inputs).logits[:, -1]
    kept_reference = model.tokpress.last.kept["outer"]
    tokpress.apply(model, outer="visionzip", retain_ratio=0.25, vision="rlt", vision_ratio=1 - (h * w // 4) / units)
    torch.testing.assert_close(model(**inputs).logits[:, -1], reference, rtol=0, atol=1e-4)
    assert model.tokpress.last.kept["outer"] == kept_reference


@pytest.mark.parametrize("family", QWEN)
def test_alone_the_llm_receives_the_kept_tokens_and_the_stats_say_so(get_model, family):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, vision="rlt", vision_ratio=0.25)
    model.generate(**inputs, max_new_tokens=2, do_sample=False)
    last = model.tokpress.last
    grids = inputs["video_grid_thw"]
    units = [int(g.prod()) // 4 for g in grids]
    if family in ("qwen3_vl", "qwen3_5"):  # one grid row per video in the tiny inputs
        assert len(units) == 2
    assert last.after_outer == [tokpress.config.budget(0.25, u) for u in units]
    kept_rows = 4 * sum(last.after_outer)
    assert last.vision_patches == [kept_rows] * len(model.model.visual.blocks)
    assert last.vision_patches_in == int(grids.prod(-1).sum())
    assert f"{last.vision_patches_in} -> {kept_rows} patches" in last.summary()
    assert last.vision_s > 0


def test_images_are_left_alone(get_model):
    model = get_model("qwen2_5_vl")
    inputs = tiny.make_inputs("qwen2_5_vl", with_image=True)
    image = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    tokpress.apply(model, vision="rlt", vision_ratio=0.25)
    again = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    assert all(torch.equal(a, b) for a, b in zip(image, again))
    model(**inputs)
    assert model.tokpress.last.after_outer == [
        tokpress.config.budget(0.25, tiny.video_token_count("qwen2_5_vl", tiny.VideoSpec()))
    ]


def test_refusals_name_the_fix(get_model):
    qwen, onevision = get_model("qwen2_vl"), get_model("llava_onevision")
    with pytest.raises(ConfigError, match=r"rlt"):
        tokpress.apply(qwen, vision="tome", vision_ratio=0.5)
    with pytest.raises(ConfigError, match=r"tome"):
        tokpress.apply(onevision, vision="rlt", vision_ratio=0.5)
    with pytest.raises(ConfigError, match="vision_layer"):
        tokpress.apply(qwen, vision="rlt", vision_ratio=0.5, vision_layer=1)
    with pytest.raises(ConfigError, match="metric"):
        tokpress.apply(qwen, vision="rlt", vision_ratio=0.5, vision_options={"metric": "l2"})
    assert not hasattr(qwen, "tokpress") and not hasattr(onevision, "tokpress")
