"""Prefill FLOPs of the decoder from the number of tokens each layer processes.

:func:`fastv_flops` is the convention of the papers (FastV; reused by HoliTom, DyCoke, DivPrune, ...): per layer
``4 n d^2 + 2 n^2 d + 2 n d m`` for ``n`` tokens, hidden size ``d`` and FFN width ``m``. It ignores grouped-query
attention and counts a two-matrix MLP, so it is a convention for comparing with published tables, not an exact
count.

Two extensions keep the convention meaningful for newer decoders, and leave dense softmax-attention models exactly
as published: a MoE layer's ``m`` is the width a token actually goes through (``experts_per_token *
moe_intermediate`` plus a shared expert's width), and a linear-attention layer (Gated DeltaNet) replaces
``2 n^2 d`` -- the ``Q K^T`` and ``P V`` products -- by ``2 n S``: per token one update and one readout of its
recurrent state of ``S = heads * d_k * d_v`` entries.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokpress.errors import ConfigError


def _per_layer(value: int | Sequence[int], layers: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * layers
    values = list(value)
    if len(values) != layers:
        raise ConfigError(f"{name} has {len(values)} entries; tokens_per_layer has {layers}")
    return values


def fastv_flops(
    tokens_per_layer: Sequence[int],
    hidden_size: int,
    intermediate_size: int | Sequence[int],
    *,
    linear_state: int | Sequence[int] = 0,
) -> float:
    """FLOPs of one prefill under the FastV convention, summed over layers.

    Args:
        tokens_per_layer: tokens ``n`` each decoder layer processes.
        hidden_size: ``d``.
        intermediate_size: FFN width ``m``, or one per layer (a MoE layer: its active width, ``experts_per_token *
            moe_intermediate_size`` plus the shared expert's width).
        linear_state: per layer (or one value for all), 0 for a softmax-attention layer, else the recurrent-state
            size ``S = heads * d_k * d_v`` of a linear-attention layer, whose ``2 n^2 d`` term becomes ``2 n S``.

    Example: LLaVA-OneVision-7B (d=3584, m=18944, 28 layers) on 32 frames x 196 tokens + 1 newline:
    ``fastv_flops([6273] * 28, 3584, 18944) / 1e12 == 40.77...`` (HoliTom's table: 40.8 T).

    Raises:
        ConfigError: a per-layer list does not have one entry per layer.
    """
    tokens = list(tokens_per_layer)
    d = hidden_size
    widths = _per_layer(intermediate_size, len(tokens), "intermediate_size")
    states = _per_layer(linear_state, len(tokens), "linear_state")
    total = 0
    for n, m, state in zip(tokens, widths, states):
        mixing = 2 * n * state if state else 2 * n * n * d
        total += 4 * n * d * d + mixing + 2 * n * d * m
    return float(total)
