"""Stage layers of multi-stage inner methods whose authors name fixed decoder layers (SparseVLM, MustDrop)."""

from __future__ import annotations

from tokpress.errors import ConfigError

#: the decoder depth the authors' layer numbers refer to (LLaMA-7B / Vicuna-7B in LLaVA-1.5)
AUTHOR_DEPTH = 32


def scaled_stage_layers(score_layers: tuple[int, ...], num_layers: int) -> list[int]:
    """The authors' stages on a ``num_layers`` decoder: each score layer ``l`` of 32 scaled to ``round(l L / 32)``
    (halves up), plus one (a stage at K reads layer K - 1's attention)."""
    return [(2 * s * num_layers + AUTHOR_DEPTH) // (2 * AUTHOR_DEPTH) + 1 for s in score_layers]


def stage_layers(
    name: str, given: tuple[int, ...], score_layers: tuple[int, ...], num_layers: int, layer: int
) -> list[int]:
    """The stage layers K of method ``name``: ``given`` outright (checked against the depth), else the authors'
    :func:`scaled_stage_layers` moved so that the first lies at ``layer``, clamped to the last decoder layer."""
    if given:
        if given[-1] >= num_layers:
            raise ConfigError(
                f"{name} layers {list(given)} must lie in [1, {num_layers - 1}] for a {num_layers}-layer decoder; "
                "pass smaller layers=(...)"
            )
        return list(given)
    base = scaled_stage_layers(score_layers, num_layers)
    return [min(k + layer - base[0], num_layers - 1) for k in base]


def check_layers(layers, example: str) -> tuple[int, ...]:
    """``layers`` as a tuple, or :class:`ConfigError` unless they are increasing ints >= 1."""
    ok = (
        isinstance(layers, (tuple, list))
        and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in layers)
        and list(layers) == sorted(set(layers))
    )
    if not ok:
        raise ConfigError(f"layers must be increasing ints >= 1 (the stage layers K, e.g. {example}), got {layers!r}")
    return tuple(layers)
