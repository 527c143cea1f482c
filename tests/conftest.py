"""Shared fixtures: tiny random-weight models (built once per session) and their inputs."""

from __future__ import annotations

import functools

import pytest
import torch

import tokpress
from tokpress.eval.tiny import families as tiny

torch.set_num_threads(2)


@functools.cache
def _model(family: str, attn: str, dtype: torch.dtype = torch.float32):
    return tiny.tiny_model(family, attn=attn, dtype=dtype)


@pytest.fixture
def get_model():
    """``get_model(family, attn="sdpa", dtype=float32)``: a shared tiny model, unpatched again after the test."""
    used = []

    def get(family: str, attn: str = "sdpa", dtype: torch.dtype = torch.float32):
        model = _model(family, attn, dtype)
        tokpress.remove(model)
        used.append(model)
        return model

    yield get
    for model in used:
        tokpress.remove(model)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def batch_inputs(family: str, **kwargs):
    """A left-padded batch of two prompts; for Qwen the two videos differ in size (ragged kept counts)."""
    if family in tiny.MODULE_FAMILIES + tiny.MOE_FAMILIES:
        return tiny.family_module(family).batch_inputs(**kwargs)
    if family == "llava_onevision":
        video = tiny.VideoSpec(frames=8)
    else:
        video = [tiny.VideoSpec(frames=8, height=112, width=112), tiny.VideoSpec(frames=4, height=56, width=112)]
    return tiny.make_inputs(family, prompts=[(5, 7), (2, 3)], video=video, **kwargs)


def sample_inputs(inputs: dict[str, torch.Tensor], family: str, b: int) -> dict[str, torch.Tensor]:
    """Sample ``b`` of a batch from :func:`batch_inputs`, alone and without padding."""
    if family in tiny.MODULE_FAMILIES + tiny.MOE_FAMILIES:
        return tiny.family_module(family).sample_inputs(inputs, b)
    keep = inputs["attention_mask"][b].bool()
    names = ("input_ids", "attention_mask", "mm_token_type_ids")
    out = {k: inputs[k][b : b + 1][:, keep] for k in names if k in inputs}
    if family == "llava_onevision":
        out["pixel_values_videos"] = inputs["pixel_values_videos"][b : b + 1]
        return out
    sizes = inputs["video_grid_thw"].prod(-1).tolist()
    start = sum(sizes[:b])
    out["pixel_values_videos"] = inputs["pixel_values_videos"][start : start + sizes[b]]
    out["video_grid_thw"] = inputs["video_grid_thw"][b : b + 1]
    if "second_per_grid_ts" in inputs:
        out["second_per_grid_ts"] = inputs["second_per_grid_ts"][b : b + 1]
    return out
