"""Tiny Qwen3-VL-MoE: :mod:`tokpress.eval.tiny.qwen3_vl` with a sparse MLP (4 experts, 2 per token)."""

from __future__ import annotations

from tokpress.eval.tiny.qwen3_vl import EXTRA, batch_inputs, grid_tokens, make_inputs, processor, sample_inputs
from tokpress.eval.tiny.qwen3_vl import config as _config

__all__ = ["EXTRA", "batch_inputs", "config", "grid_tokens", "make_inputs", "processor", "sample_inputs"]


def config():
    return _config("qwen3_vl_moe")
