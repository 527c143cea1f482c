"""Merges carried over to other per-token tensors (Qwen3-VL's deepstack rows) with forward-mode dual tensors.

For a merging policy, ``merged_side_features`` must apply *the policy's own merge* to a side tensor: applied to the
features themselves it returns the policy's features, it is linear in the side tensor, and a kept token that
absorbed nothing keeps its own row.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokpress.ops import primal
from tokpress.patches.deepstack import merged_side_features
from tokpress.policies.base import Grid, InnerTokens, VideoSlot, VideoTokens
from tokpress.registry import get_policy

GRID = Grid(8, 4, 4)
OUTER_MERGING = ["fastvid", "flashvid", "holitom", "prunevid", "scissor"]
INNER_MERGING = ["holitom", "framefusion", "sttm"]


def _frames(seed: int) -> torch.Tensor:
    """Video-like features: frames drifting from a shared base, so merges happen."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(GRID.per_frame, 24, generator=g)
    drift = 0.3 * torch.randn(GRID.frames, GRID.per_frame, 24, generator=g)
    return (base + drift.cumsum(0)).reshape(GRID.numel, 24)


def _outer(name: str, family: str):
    cls = get_policy("outer", name)
    policy = cls(cls.config_cls())
    attention = torch.rand(GRID.numel, generator=torch.Generator().manual_seed(5))
    return lambda x: policy.plan(VideoTokens(x, GRID, attention=attention, family=family), 32)


def _inner(name: str):
    cls = get_policy("inner", name)
    policy = cls(cls.config_cls())
    tokens = InnerTokens(
        _frames(0),
        torch.arange(GRID.numel),
        torch.rand(GRID.numel, generator=torch.Generator().manual_seed(6)),
        layer=2,
        videos=(VideoSlot(0, GRID),),
        sizes=torch.ones(GRID.numel),
    )
    return lambda x: policy.plan(dataclasses.replace(tokens, hidden=x), 48)


CASES = [(f"outer-{n}-{f}", _outer, (n, f)) for n in OUTER_MERGING for f in ("llava_onevision", "qwen2_vl")]
CASES += [(f"inner-{n}", _inner, (n,)) for n in INNER_MERGING]


@pytest.mark.parametrize("make,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_side_tensor_gets_the_policys_own_merge(make, args):
    plan_of = make(*args)
    x = _frames(0)
    plan = plan_of(x)
    assert plan.features is not None and plan.sizes is not None
    a, b = torch.randn_like(x), torch.randn_like(x)
    itself, side_a, side_b, side_ab = merged_side_features(plan_of, x, plan, [x, a, b, a + 2 * b])
    torch.testing.assert_close(itself, plan.features.float(), rtol=1e-5, atol=1e-5)  # the same map as the features
    torch.testing.assert_close(side_ab, side_a + 2 * side_b, rtol=1e-5, atol=1e-5)  # linear in the side tensor
    single = (plan.sizes == 1).nonzero().squeeze(1)  # tokens that absorbed nothing: their own row (merges weigh
    if single.numel():  # by size, so a size-1 token is a plain copy unless a policy re-weights it)
        alone = plan.keep[single]
        same = (side_a[single] - a[alone]).abs().amax(-1) < 1e-5
        assert bool(same.any())


def test_primal_strips_only_the_tangent():
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(3, 4)
    assert primal(x) is x
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        assert fwAD.unpack_dual(primal(dual)).tangent is None
        assert torch.equal(primal(dual), x)
