"""The row-wise cosine ops (tokpress/ops/similarity.py) normalise every row once, on every device: bit for bit
``F.cosine_similarity`` on CPU where a row's norm does not depend on the rows reduced with it, within 1e-6 wherever
the norms may round differently, and the policies built on them select the same tokens as with the straightforward
form on non-degenerate inputs."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from tokpress.eval.bench.overhead import NUM_LAYERS, inner_tokens
from tokpress.ops import cosine_adjacent, cosine_pairs
from tokpress.ops.similarity import _GRAIN
from tokpress.policies.base import Grid, VideoTokens
from tokpress.registry import get_policy

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rows(seed: int, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Random rows with very different norms and one all-zero row (the eps clamp's case)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen) * torch.rand(*shape[:-1], 1, generator=gen) * 10
    x.view(-1, shape[-1])[0] = 0
    return x.to(dtype)


# ---- CPU: bit for bit the straightforward form ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 1, 1), (5, 7, 33), (3, 196, 896), (4, 16, 3584)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cosine_adjacent_is_bit_identical_to_cosine_similarity_on_cpu(shape, dtype):
    x = _rows(0, shape, dtype)
    f = x.float()
    assert torch.equal(cosine_adjacent(x), F.cosine_similarity(f[1:], f[:-1], dim=-1))


@pytest.mark.parametrize("shape", [(50, 40), (50, 3, 40), (30, 3584)])
def test_cosine_pairs_is_bit_identical_to_cosine_similarity_on_cpu(shape):
    x = _rows(1, shape)
    gen = torch.Generator().manual_seed(2)
    first, second = torch.randint(0, shape[0], (70,), generator=gen), torch.randint(0, shape[0], (70,), generator=gen)
    assert torch.equal(cosine_pairs(x, first, second), F.cosine_similarity(x[first], x[second], dim=-1))


def test_hand_derived_values():
    base = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    frames = torch.stack([base, 2 * base, -base])  # scaled, then opposite; the zero row has cosine 0 everywhere
    got = cosine_adjacent(frames)
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0, 1.0], [-1.0, 0.0, -1.0]]), atol=1e-6, rtol=0)
    pair = cosine_pairs(base, torch.tensor([0, 0, 1]), torch.tensor([2, 0, 2]))
    torch.testing.assert_close(pair, torch.tensor([0.6, 1.0, 0.0]), atol=1e-6, rtol=0)


# ---- wherever norms may round differently: within 1e-6 ----------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dim", [64, 3584, _GRAIN + 1000])
def test_within_1e6_of_the_straightforward_form(device, dim):
    """Long rows (one row's norm split across threads on CPU) and CUDA (layout by row count): not necessarily the
    same bits as the gathered copies' norms, but the same cosines to 1e-6."""
    x = _rows(3, (4, 6, dim)).to(device)
    want = F.cosine_similarity(x[1:], x[:-1], dim=-1)
    torch.testing.assert_close(cosine_adjacent(x), want, atol=1e-6, rtol=0)
    flat = x.reshape(24, dim)
    first, second = torch.arange(24, device=device), torch.arange(23, -1, -1, device=device)
    want = F.cosine_similarity(flat[first], flat[second], dim=-1)
    torch.testing.assert_close(cosine_pairs(flat, first, second), want, atol=1e-6, rtol=0)


# ---- the policies built on them select the same tokens -----------------------------------------------------------
def _adjacent64(frames: torch.Tensor) -> torch.Tensor:
    """The straightforward form, in float64 and rounded: other last bits than the float32 ops (another device's)."""
    x = frames.double()
    return F.cosine_similarity(x[1:], x[:-1], dim=-1).float()


def _pairs64(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return F.cosine_similarity(x[first], x[second], dim=-1).float()


def _video(seed: int, frames: int = 8, side: int = 6, dim: int = 32) -> VideoTokens:
    """Non-degenerate: every frame is the previous one plus noise (similar, never equal), random attention."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randn(frames, side * side, dim, generator=gen)
    steps[1:] *= 0.4
    x = steps.cumsum(0).reshape(-1, dim)
    attention = torch.randn(frames, side * side, generator=gen).softmax(-1).flatten()
    return VideoTokens(x, Grid(frames, side, side), attention=attention, family="")


OUTER = [("evs", "cosine_adjacent"), ("holitom", "cosine_adjacent"), ("fastvid", "cosine_adjacent")]
OUTER += [("dycoke", "cosine_pairs")]


def _check_same(a, b) -> None:
    assert torch.equal(a.keep, b.keep)
    for name in ("features", "sizes"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("method", "op"), OUTER)
def test_outer_policies_select_the_same_tokens_as_with_the_straightforward_form(method, op, monkeypatch):
    module = importlib.import_module(f"tokpress.policies.outer.{method}")
    cls = get_policy("outer", method)
    policy = cls(cls.config_cls())
    videos = [_video(seed) for seed in range(3)]
    budgets = [int(r * videos[0].grid.numel) for r in (0.5, 0.25, 0.1)]
    fast = [[policy.plan(v, k) for k in budgets] for v in videos]
    monkeypatch.setattr(module, op, _adjacent64 if op == "cosine_adjacent" else _pairs64)
    for v, plans in zip(videos, fast):
        for k, plan in zip(budgets, plans):
            _check_same(plan, policy.plan(v, k))


def test_framefusion_selects_the_same_tokens_as_with_the_straightforward_form(monkeypatch):
    module = importlib.import_module("tokpress.policies.inner.framefusion")
    cls = get_policy("inner", "framefusion")
    policy = cls(cls.config_cls())
    cases = []
    for seed in range(3):
        tokens = inner_tokens(_video(seed), cls.default_layer(NUM_LAYERS))
        cases += [(tokens, k) for k in (144, 72, 29)]
    fast = [policy.plan(tokens, k) for tokens, k in cases]
    monkeypatch.setattr(module, "cosine_pairs", _pairs64)
    for (tokens, k), plan in zip(cases, fast):
        tokens.memory = {}
        _check_same(plan, policy.plan(tokens, k))


def test_the_float64_form_really_differs_in_the_last_bits():
    """Otherwise the policy comparisons above would compare a form with itself."""
    x = _video(0).features.reshape(8, 36, 32)
    assert not torch.equal(cosine_adjacent(x), _adjacent64(x))
    torch.testing.assert_close(cosine_adjacent(x), _adjacent64(x), atol=1e-6, rtol=0)
