"""Paired per-round statistics of ``tokpress bench``: ratios of two rows taken round by round, their median and a
seeded bootstrap percentile interval.

Every row of a bench run is measured once per round (:mod:`~tokpress.eval.bench.rounds`), so round ``k`` of two
rows ran a few requests apart, under the same load. A speed-up is therefore computed per round, e.g.
``TTFT_k(uncompressed) / TTFT_k(row)``, and summarised by the median of those per-round ratios; the interval is the
2.5th and 97.5th percentile of the medians of :data:`RESAMPLES` bootstrap resamples of the rounds (seeded, so a
report is reproducible from its records).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def paired_ratios(numerators: Sequence[Any], denominators: Sequence[Any], scale: float = 1.0) -> list[float]:
    """``scale * numerators[k] / denominators[k]`` for every round ``k`` where both are finite and the denominator
    is non-zero (other rounds are left out). Both sequences hold one value per round, in round order."""
    out = []
    for num, den in zip(numerators, denominators):
        n, d = _finite(num), _finite(den)
        if n is not None and d:
            out.append(scale * n / d)
    return out


def bootstrap_median_interval(
    values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (``[n]``, n >= 1).

    ``resamples`` resamples of n values drawn with replacement (``numpy.random.default_rng(seed)``); the interval is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of their medians, widened where needed so that it
    contains the sample median (with very few rounds the percentile interval can otherwise sit beside it).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("bootstrap_median_interval needs a non-empty 1-D sequence of values")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(resamples, data.size))  # [resamples, n]
    medians = np.median(data[picks], axis=1)  # [resamples]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    point = float(np.median(data))
    return min(float(low), point), max(float(high), point)


def summarise(values: Sequence[float], seed: int = 0) -> dict[str, Any] | None:
    """``{"median", "low", "high", "rounds"}`` of per-round values (``None`` when there are none); ``low``/``high``
    bound the bootstrap interval of the median (:func:`bootstrap_median_interval`)."""
    clean = [v for v in (_finite(x) for x in values) if v is not None]
    if not clean:
        return None
    low, high = bootstrap_median_interval(clean, seed=seed)
    return {"median": float(np.median(clean)), "low": low, "high": high, "rounds": len(clean)}


def point_only(value: float | None) -> dict[str, Any] | None:
    """A summary without rounds (records that carry no per-round values): the point, no interval."""
    return None if value is None else {"median": value, "low": None, "high": None, "rounds": 0}
