"""Prefill FLOPs of the decoder from the number of tokens each layer processes.

:func:`fastv_flops` is the convention of the papers (FastV; reused by HoliTom, DyCoke, DivPrune, ...): per layer
``4 n d^2 + 2 n^2 d + 2 n d m`` for ``n`` tokens, hidden size ``d`` and FFN width ``m``. It ignores grouped-query
attention and counts a two-matrix MLP, so it is a convention for comparing with published tables, not an exact
count.
"""

from __future__ import annotations

from collections.abc import Sequence


def fastv_flops(tokens_per_layer: Sequence[int], hidden_size: int, intermediate_size: int) -> float:
    """FLOPs of one prefill under the FastV convention, summed over layers.

    Example: LLaVA-OneVision-7B (d=3584, m=18944, 28 layers) on 32 frames x 196 tokens + 1 newline:
    ``fastv_flops([6273] * 28, 3584, 18944) / 1e12 == 40.77...`` (HoliTom's table: 40.8 T).
    """
    d, m = hidden_size, intermediate_size
    return float(sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in tokens_per_layer))
