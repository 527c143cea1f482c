"""Every published architecture of the new families runs end to end on the CPU under tokpress (smoke).

``smoke_config`` keeps the published widths, heads, experts and layer kinds and cuts depth and vocabulary (see its
docstring); the model has random weights. A video of 4 frames goes through the real vision tower, the outer
stage, the decoder and two generated tokens.
"""

from __future__ import annotations

import pytest
import torch

import tokpress
from tokpress.config import budget
from tokpress.eval.bench.archs import random_weight_model, smoke_config
from tokpress.eval.bench.inputs import synthetic_video_inputs, video_placeholder_id

NEW_ARCHS = ["qwen3-vl-8b", "qwen3-vl-30b-a3b", "qwen3.5-27b", "internvl3.5-8b", "llava-next-video-7b"]


@pytest.mark.parametrize("name", NEW_ARCHS)
def test_published_architecture_runs_compressed(name):
    config = smoke_config(name)
    model = random_weight_model(config, "cpu", torch.bfloat16)
    inputs = synthetic_video_inputs(config, frames=4, height=64, width=64, dtype=torch.bfloat16)
    n_video = int((inputs["input_ids"] == video_placeholder_id(config)).sum())
    tokpress.apply(model, outer="holitom", retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2
    assert model.tokpress.last.video_tokens == [n_video]
    assert model.tokpress.last.after_outer == [budget(0.25, n_video)]
