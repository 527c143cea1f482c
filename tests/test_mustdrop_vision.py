"""MustDrop's vision stage: window merging inside LLaVA-OneVision's SigLIP, no proportional attention, grid
restored; crafted tensors for the merge, the tiny model for the hooks."""

from __future__ import annotations

import pytest
import torch
from test_vision_stage import FAMILY, PATCHES, _deep_model, _encoder_layers

import tokpress
from conftest import batch_inputs
from tokpress.errors import InputError
from tokpress.eval.tiny import families as tiny
from tokpress.policies.base import Grid
from tokpress.policies.outer.mustdrop import window_members
from tokpress.policies.vision import MustDropVision, MustDropVisionConfig
from tokpress.policies.vision.merge import unmerge


def _policy(**options) -> MustDropVision:
    return MustDropVision(MustDropVisionConfig(**options))


def _frames(side: int, frames: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, side * side, 4, generator=torch.Generator().manual_seed(seed))


def test_each_frame_merges_its_most_similar_window_into_the_last_patch():
    hidden = _frames(6)
    members = window_members(Grid(1, 6, 6), 3)  # 4 windows of 9
    for f, w in ((0, 1), (1, 2)):  # frame 0: window 1 alike, frame 1: window 2 alike
        hidden[f, members[w]] = hidden[f, members[w][0]] + 0.01 * torch.arange(9.0)[:, None]
    out = _policy().merge(hidden, hidden, 36 - 8)
    assert out.hidden.shape == (2, 28, 4)
    for f, w in ((0, 1), (1, 2)):
        slots = out.source[f, members[w]]
        assert (slots == slots[-1]).all()  # the window's patches all went to one token ...
        assert out.size[f, slots[-1]] == 9
        torch.testing.assert_close(out.hidden[f, slots[-1]], hidden[f, members[w]].mean(0))
        others = [i for i in range(36) if i not in members[w].tolist()]
        assert torch.equal(out.hidden[f, out.source[f, others]], hidden[f, others])  # ... the rest are untouched


def test_a_remainder_merges_the_tail_of_the_next_window():
    hidden = _frames(6, frames=1)
    members = window_members(Grid(1, 6, 6), 3)
    hidden[0, members[0]] = hidden[0, members[0][0]].clone()
    hidden[0, members[3]] = hidden[0, members[3][0]] + 0.2 * torch.arange(9.0)[:, None]  # second most similar
    out = _policy().merge(hidden, hidden, 36 - 10)  # one window (8) + 2 of the next
    tail = members[3, -3:]
    assert (out.source[0, tail] == out.source[0, tail[-1]]).all()
    assert len(set(out.source[0, members[3, :-3]].tolist())) == 6


def test_bipartite_rounds_finish_what_the_windows_cannot_reach():
    hidden = _frames(8)  # 4 whole windows of 9 (8 removable each): 64 -> 32 at most
    out = _policy().merge(hidden, hidden, 10)
    assert out.hidden.shape == (2, 10, 4)
    for f in range(2):
        assert torch.equal(torch.bincount(out.source[f], minlength=10).float(), out.size[f])
        for j in range(10):
            torch.testing.assert_close(out.hidden[f, j], hidden[f, out.source[f] == j].mean(0))


def test_threshold_form_merges_only_windows_above_it_in_every_frame():
    hidden = _frames(6)
    members = window_members(Grid(1, 6, 6), 3)
    hidden[0, members[1]] = hidden[0, members[1][0]].clone()  # only frame 0 has a window above 0.99
    out = _policy(spatial_threshold=0.99).merge(hidden, hidden, 28)
    # no window qualifies in every frame (the authors' minimum over the batch): bipartite rounds do all the merging
    assert out.hidden.shape == (2, 28, 4) and not (out.size == 9).any()


def test_a_non_square_grid_is_refused():
    with pytest.raises(InputError, match="square patch grid"):
        _policy().merge(torch.zeros(1, 10, 4), torch.zeros(1, 10, 4), 5)


def test_hooks_merge_after_the_first_layer_without_proportional_attention():
    """The encoder's output equals a by-hand run: layer 0, the window merge, layers 1..3 with no size bias,
    unmerge."""
    model = _deep_model()
    pixels = tiny.make_inputs(FAMILY, video=tiny.VideoSpec(frames=2))["pixel_values_videos"]
    layers = _encoder_layers(model)
    hidden = layers[0](model.model.vision_tower.embeddings(pixels.flatten(0, 1)), None)
    merged = _policy().merge(hidden, hidden, 32)
    expected = merged.hidden
    for i in (1, 2, 3):
        expected = layers[i](expected, None)
    tokpress.apply(model, vision="mustdrop", vision_ratio=0.5)
    assert model.tokpress.config.vision.layer == 0  # the authors' merge layer is the policy's default
    out = model.model.get_video_features(pixels, vision_feature_layer=-1, vision_feature_select_strategy="full")
    torch.testing.assert_close(out.hidden_states[-1], unmerge(expected, merged.source))


def test_the_full_method_with_its_vision_stage_generates(get_model):
    model = get_model(FAMILY)
    inputs = batch_inputs(FAMILY)
    tokpress.apply(model, "mustdrop", retain_ratio=0.25, vision="mustdrop", vision_ratio=0.5)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    stats = model.tokpress.last
    assert out.shape[0] == 2 and stats.vision_tokens[0] == PATCHES and min(stats.vision_tokens) == PATCHES // 2
