"""Tiny Qwen3.5-MoE: :mod:`tokpress.eval.tiny.qwen3_5` with a sparse MLP (4 experts, 2 per token, a shared one)."""

from __future__ import annotations

from tokpress.eval.tiny.qwen3_5 import EXTRA, batch_inputs, grid_tokens, make_inputs, processor, sample_inputs
from tokpress.eval.tiny.qwen3_5 import config as _config

__all__ = ["EXTRA", "batch_inputs", "config", "grid_tokens", "make_inputs", "processor", "sample_inputs"]


def config():
    return _config("qwen3_5_moe")
