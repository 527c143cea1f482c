"""``framebudget``: query-aware per-frame budgets (QuoTA-style) filled by another outer policy."""

from __future__ import annotations

import pytest
import torch

import tokpress
from conftest import batch_inputs
from tokpress.errors import ConfigError
from tokpress.policies.base import Grid, Plan, VideoTokens
from tokpress.policies.outer.evs import evs_scores
from tokpress.policies.outer.framebudget import (
    FrameBudgetConfig,
    FrameBudgetPolicy,
    capped_weights,
    integer_budgets,
    similarity_scores,
)


def _policy(**options) -> FrameBudgetPolicy:
    return FrameBudgetPolicy(FrameBudgetConfig(**options))


def test_capped_weights_hand_the_excess_to_the_other_frames_in_proportion():
    # 10 tokens by weights 0.7 / 0.2 / 0.1 with caps 4: frame 0 takes its cap 4, the other 6 split 2:1
    shares = capped_weights(torch.tensor([0.7, 0.2, 0.1]), torch.tensor([4, 4, 4]), 10)
    assert shares.tolist() == pytest.approx([4.0, 4.0, 2.0])  # 6 * 2/3 = 4 hits the cap too; the rest to frame 2
    assert capped_weights(torch.tensor([1.0, 1.0]), torch.tensor([5, 5]), 4).tolist() == [2.0, 2.0]


def test_integer_budgets_sum_exactly_and_respect_the_caps():
    shares = torch.tensor([1.5, 1.5, 1.0], dtype=torch.float64)
    assert integer_budgets(shares, torch.tensor([9, 9, 9]), 4).tolist() == [2, 1, 1]  # tie goes to the lower index
    for _ in range(20):
        w = torch.rand(7)
        caps = torch.randint(1, 6, (7,))
        total = int(torch.randint(1, int(caps.sum()) + 1, ()))
        b = integer_budgets(capped_weights(w, caps, total), caps, total)
        assert int(b.sum()) == total and bool((b <= caps).all()) and bool((b >= 0).all())


def test_similarity_scores_favour_the_frame_holding_the_question():
    frames = torch.randn(3, 5, 8)
    question = frames[2, [1, 3]] * 2.0  # two question tokens equal (up to scale) to tokens of frame 2
    scores = similarity_scores(frames, question)
    assert scores.argmax() == 2 and scores[2].item() == pytest.approx(1.0)
    assert similarity_scores(frames, question[:0]).tolist() == [0.0, 0.0, 0.0]


def test_budgets_follow_the_question_and_the_fill_keeps_each_frames_top_evs_tokens():
    frames = torch.randn(4, 9, 8)
    video = VideoTokens(frames.flatten(0, 1), Grid(4, 3, 3), question=frames[3, :2].clone())
    policy = _policy(fill="evs", temperature=0.01)
    budgets = policy.frame_budgets(video, 12)
    assert int(budgets.sum()) == 12 and budgets.argmax() == 3 and budgets[3] == 9  # frame 3 capped at its 9
    keep = policy.plan(video, 12).keep
    scores = evs_scores(frames).view(4, 9)
    for t, b in enumerate(budgets.tolist()):
        in_frame = keep[(keep >= 9 * t) & (keep < 9 * (t + 1))] - 9 * t
        assert in_frame.numel() == b
        if b:  # the frame's b highest EVS scores (ties to the lower index)
            want = torch.sort(scores[t], descending=True, stable=True).indices[:b].sort().values
            assert in_frame.tolist() == want.tolist()


def test_uniform_scores_reduce_to_the_fill_with_an_even_spread():
    video = VideoTokens(torch.randn(4 * 9, 8), Grid(4, 3, 3), question=torch.randn(3, 8))
    keep = _policy(scorer="uniform").plan(video, 8).keep
    assert keep.numel() == 8
    assert [int(((keep >= 9 * t) & (keep < 9 * t + 9)).sum()) for t in range(4)] == [2, 2, 2, 2]


class _MergeAllButFirst:
    """A per-frame fill that keeps the first ``b`` tokens and replaces the last kept one by the frame's mean."""

    needs_vision_attention, vision_attention = False, "mean_query"

    def plan(self, video, budget):
        feats = video.features[:budget].clone()
        feats[-1] = video.features[budget - 1 :].mean(0)
        sizes = torch.ones(budget)
        sizes[-1] = video.grid.numel - budget + 1
        return Plan(torch.arange(budget), feats, sizes)


def test_given_scores_and_a_merging_fill_keep_offsets_and_features():
    video = VideoTokens(torch.randn(3 * 4, 6), Grid(3, 2, 2), question=torch.zeros(0, 6))
    policy = _policy(scorer="given", frame_scores=[[[0.0, 5.0, 0.0]]], temperature=1.0)
    budgets = policy.frame_budgets(video, 6)
    assert budgets.tolist() == [1, 4, 1]  # softmax(0, 5, 0) * 6 = 0.04, 5.92, 0.04 -> caps 4 -> 1, 4, 1
    policy.fill = _MergeAllButFirst()
    plan = policy.plan(video, 6)
    assert plan.keep.tolist() == [0, 4, 5, 6, 7, 8]  # per-frame indices offset by the frame
    torch.testing.assert_close(plan.features[0], video.features[0:4].mean(0))
    torch.testing.assert_close(plan.features[1:5], video.features[4:8])  # frame 1 keeps all 4 as they are
    assert plan.sizes.tolist() == [4.0, 1.0, 1.0, 1.0, 1.0, 4.0]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(scorer="clip"), "scorer must be one of"),
        (dict(temperature=0), "temperature must be a number > 0"),
        (dict(fill="nope"), "unknown outer policy 'nope'"),
        (dict(fill="framebudget"), "fill must be another outer policy"),
        (dict(scorer="given"), "needs frame_scores"),
    ],
)
def test_bad_options_name_the_fix(options, message):
    with pytest.raises(ConfigError, match=message):
        FrameBudgetConfig(**options)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_onevision"])
@pytest.mark.parametrize("fill", ["uniform", "evs", "visionzip"])
def test_end_to_end_on_a_batch(get_model, family, fill):
    model = get_model(family)
    inputs = batch_inputs(family)
    tokpress.apply(model, outer="framebudget", fill=fill, retain_ratio=0.25)
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    again = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert torch.equal(out, again)
    extra = 1 if family == "llava_onevision" else 0
    grid = [n - extra for n in model.tokpress.last.video_tokens]
    assert model.tokpress.last.after_outer == [tokpress.config.budget(0.25, n) + extra for n in grid]
