"""PyramidDrop: the drop schedule over the depth and attention ranking at each drop (no model)."""

from __future__ import annotations

import math

import pytest
import torch

from tokpress.config import budget
from tokpress.errors import ConfigError, InputError
from tokpress.policies.base import InnerTokens
from tokpress.policies.inner.pdrop import PyramidDropConfig, PyramidDropPolicy
from tokpress.registry import get_policy


def tokens(attention: torch.Tensor, dim: int = 8, layer: int = 8, dtype=torch.float32, seed: int = 0) -> InnerTokens:
    n = attention.shape[0]
    gen = torch.Generator().manual_seed(seed)
    return InnerTokens(torch.randn(n, dim, generator=gen).to(dtype), torch.arange(n) * 3 + 1, attention, layer)


def schedule(num_layers: int, ratio: float, layer: int | None = None, **options):
    layer = PyramidDropPolicy.default_layer(num_layers) if layer is None else layer
    return PyramidDropPolicy.schedule(PyramidDropConfig(**options), num_layers, layer, ratio)


def test_registered_as_inner_attention_policy():
    assert get_policy("inner", "pdrop") is PyramidDropPolicy
    assert PyramidDropPolicy.needs_attention and PyramidDropPolicy.attention_queries == "last"


@pytest.mark.parametrize(("num_layers", "expected"), [(32, 8), (28, 7), (24, 6), (6, 2), (4, 1), (3, 1), (2, 1)])
def test_default_layer_is_a_quarter_of_the_depth(num_layers, expected):
    assert PyramidDropPolicy.default_layer(num_layers) == expected


def test_schedule_reproduces_the_paper_on_32_layers():
    # LLaVA-1.5: drops before layers 8, 16, 24, each halving; r = 0.125 = 0.5 ** 3
    assert schedule(32, 0.125) == [(8, pytest.approx(0.5)), (16, pytest.approx(0.5)), (24, pytest.approx(0.5))]


def test_schedule_scales_to_28_layers():
    lam = 0.25 ** (1 / 3)
    assert schedule(28, 0.25) == [(7, pytest.approx(lam)), (14, pytest.approx(lam)), (21, pytest.approx(lam))]


def test_schedule_spaces_from_a_user_layer_to_the_depth():
    # K = 2 of 32: the remaining 30 layers split in thirds -> 2, 12, 22
    assert [k for k, _ in schedule(32, 0.1, layer=2)] == [2, 12, 22]
    assert [k for k, _ in schedule(32, 0.1, layer=8, num_stages=4)] == [8, 14, 20, 26]
    # spacing rounds down: 2 + floor(i * 26 / 4) = 2, 8, 15, 21
    assert [k for k, _ in schedule(28, 0.1, layer=2, num_stages=4)] == [2, 8, 15, 21]


@pytest.mark.parametrize(
    ("num_layers", "layer", "layers"),
    [
        (4, None, [1, 2, 3]),  # just deep enough for three drops
        (3, None, [1, 2]),  # 1 + floor(i * 2 / 3) = 1, 1, 2: two drops collapse
        (2, None, [1]),
        (32, 31, [31]),  # a first drop at the last layer leaves room for one
        (32, 30, [30, 31]),
    ],
)
def test_schedule_collapses_stages_on_shallow_depths(num_layers, layer, layers):
    r = 0.2
    stages = schedule(num_layers, r, layer=layer)
    got = [k for k, _ in stages]
    assert got == layers
    assert all(1 <= k <= num_layers - 1 for k in got)
    assert all(b > a for a, b in zip(got, got[1:]))
    # the ratio is shared among the distinct drops so the product still gives r
    assert [lam for _, lam in stages] == [pytest.approx(r ** (1 / len(layers)))] * len(layers)


@pytest.mark.parametrize("num_layers", [2, 3, 4, 5, 7, 16, 28, 32, 40, 80])
@pytest.mark.parametrize("ratio", [0.05, 0.125, 0.3, 1.0])
@pytest.mark.parametrize("num_stages", [1, 2, 3, 5])
def test_schedule_layers_valid_and_ratio_product_is_r(num_layers, ratio, num_stages):
    stages = schedule(num_layers, ratio, num_stages=num_stages)
    layers = [k for k, _ in stages]
    assert layers[0] == PyramidDropPolicy.default_layer(num_layers)
    assert all(1 <= k <= num_layers - 1 for k in layers)
    assert all(b > a for a, b in zip(layers, layers[1:]))
    assert 1 <= len(stages) <= num_stages
    assert math.prod(lam for _, lam in stages) == pytest.approx(ratio)
    assert all(0 < lam <= 1 for _, lam in stages)


def test_one_stage_is_fastv_like():
    assert schedule(28, 0.3, layer=2, num_stages=1) == [(2, 0.3)]


def test_schedule_rejects_a_layer_outside_the_decoder():
    with pytest.raises(ConfigError, match="32"):
        schedule(32, 0.5, layer=32)
    with pytest.raises(ConfigError, match="0"):
        schedule(32, 0.5, layer=0)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_config_rejects_bad_num_stages(bad):
    with pytest.raises(ConfigError, match="num_stages"):
        PyramidDropConfig(num_stages=bad)


def test_plan_keeps_top_attention_in_index_order():
    attention = torch.tensor([0.05, 0.30, 0.01, 0.20, 0.14, 0.25, 0.02, 0.03])
    policy = PyramidDropPolicy(PyramidDropConfig())
    assert policy.plan(tokens(attention), 3).keep.tolist() == [1, 3, 5]
    assert policy.plan(tokens(attention), 4).keep.tolist() == [1, 3, 4, 5]


def test_plan_breaks_ties_towards_the_lower_index():
    attention = torch.tensor([0.1, 0.2, 0.2, 0.1, 0.2, 0.2])
    keep = PyramidDropPolicy(PyramidDropConfig()).plan(tokens(attention), 3).keep
    assert keep.tolist() == [1, 2, 4]


def test_plan_ignores_hidden_states_and_needs_attention():
    attention = torch.rand(10, generator=torch.Generator().manual_seed(3))
    policy = PyramidDropPolicy(PyramidDropConfig())
    a = policy.plan(tokens(attention, seed=0), 4).keep
    b = policy.plan(tokens(attention, seed=1), 4).keep
    assert torch.equal(a, b)
    with pytest.raises(InputError, match="attention"):
        policy.plan(InnerTokens(torch.zeros(3, 4), torch.arange(3), None, 8), 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_budget_sorted_distinct_and_deterministic(dtype):
    n = 37
    policy = PyramidDropPolicy(PyramidDropConfig())
    for b in (1, 2, 18, 36, 37):
        attention = torch.rand(n, generator=torch.Generator().manual_seed(b)).softmax(0)
        plan = policy.plan(tokens(attention, dtype=dtype), b)
        keep = plan.keep
        assert keep.dtype == torch.long and keep.shape == (b,)
        assert bool((keep[1:] > keep[:-1]).all()) and 0 <= int(keep[0]) and int(keep[-1]) < n
        assert plan.features is None and plan.sizes is None
        assert torch.equal(keep, policy.plan(tokens(attention, dtype=dtype), b).keep)
    assert policy.plan(tokens(torch.rand(n), dtype=dtype), n).keep.tolist() == list(range(n))


def test_pyramid_run_drops_geometrically_and_keeps_the_top_tokens():
    # Simulate the engine: each stage keeps budget(lambda, n_in) of the survivors of the previous one. With a fixed
    # score per token, the final survivors are the top tokens overall, and the counts shrink by lambda per stage.
    n, r = 1024, 0.125
    score = torch.rand(n, generator=torch.Generator().manual_seed(0))
    policy = PyramidDropPolicy(PyramidDropConfig())
    alive = torch.arange(n)
    counts = [n]
    for layer, lam in schedule(32, r):
        n = alive.numel()
        plan = policy.plan(InnerTokens(torch.zeros(n, 4), alive, score[alive], layer), budget(lam, n))
        alive = alive[plan.keep]
        counts.append(alive.numel())
    assert counts == [1024, 512, 256, 128]
    assert alive.tolist() == score.topk(128).indices.sort().values.tolist()


def test_pin_three_drops_rerank_the_survivors_hand_derived():
    """The paper's LLaVA-1.5 setting by hand on N = 8 visual tokens: 32 layers, drops before layers 8, 16 and 24,
    lambda = 0.5 (r = 0.125). Each drop ranks only the tokens that survived the previous one, by the attention the
    last instruction token pays them at *that* depth, and keeps the top lambda of them in their original order.
    Counts: the reference's int(8 * 0.5 ** s) = 4, 2, 1; tokpress's round(0.5 * n) of the tokens entering: the same.

    layer 8,  tokens 0..7: .10 .30 .05 .20 .15 .02 .08 .10 -> top 4: 1 (.30), 3 (.20), 4 (.15), then the .10 tie
              between 0 and 7 goes to the lower index 0 -> survivors 0 1 3 4
    layer 16, tokens 0 1 3 4: .40 .10 .35 .15 -> top 2: 0, 3 (token 1, first at layer 8, now drops)
    layer 24, tokens 0 3: .45 .55 -> top 1: 3
    """
    stages = schedule(32, 0.125)
    assert [k for k, _ in stages] == [8, 16, 24]
    policy = PyramidDropPolicy(PyramidDropConfig())
    steps = [
        # (ordinals entering, their attention at this depth, budget, expected keep as positions among them)
        ([0, 1, 2, 3, 4, 5, 6, 7], [0.10, 0.30, 0.05, 0.20, 0.15, 0.02, 0.08, 0.10], 4, [0, 1, 3, 4]),
        ([0, 1, 3, 4], [0.40, 0.10, 0.35, 0.15], 2, [0, 2]),
        ([0, 3], [0.45, 0.55], 1, [1]),
    ]
    alive = torch.arange(8)
    for (layer, lam), (entering, attention, count, keep) in zip(stages, steps):
        assert alive.tolist() == entering
        assert budget(lam, alive.numel()) == count
        plan = policy.plan(InnerTokens(torch.zeros(len(entering), 4), alive, torch.tensor(attention), layer), count)
        assert plan.keep.tolist() == keep and plan.features is None
        alive = alive[plan.keep]
    assert alive.tolist() == [3]
