"""Statistics of ``tokpress eval``: bootstrap confidence intervals, McNemar's paired test and answer agreement.

Pure numpy and the standard library (no scipy):

* :func:`bootstrap_ci` — percentile bootstrap of a mean. For per-sample 0/1 correctness it is the CI of an accuracy;
  for the per-sample difference ``method_correct - reference_correct`` it is the *paired* CI of an accuracy change.
* :func:`mcnemar` — McNemar's test of two classifiers scored on the same samples. Only the discordant pairs count:
  ``b01`` (reference wrong, method right) and ``b10`` (reference right, method wrong). Under the null hypothesis
  (equal accuracy) each discordant pair goes either way with probability ½, so ``b01 ~ Binomial(b01 + b10, ½)``.

  - ``b01 + b10 < exact_below`` (default 25, the usual rule of thumb): the **exact** two-sided binomial test,
    ``p = min(1, 2 · P(X ≤ min(b01, b10)))`` with ``X ~ Binomial(b01 + b10, ½)``; the statistic reported is
    ``min(b01, b10)``. With no discordant pair at all the test is vacuous: statistic 0, ``p = 1``.
  - otherwise: the **chi-square** approximation with Edwards' continuity correction,
    ``χ² = (|b01 − b10| − 1)² / (b01 + b10)`` on 1 degree of freedom, ``p = P(χ²₁ ≥ χ²) = erfc(√(χ²/2))``.

* :func:`agreement` — the fraction of samples on which two models give the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

#: Discordant-pair count below which :func:`mcnemar` uses the exact binomial test.
EXACT_BELOW = 25
#: Largest number of resampled values held in memory at once by :func:`bootstrap_ci`.
_CHUNK_VALUES = 4_000_000


def _vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def bootstrap_ci(
    correct: Sequence[float] | np.ndarray, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` interval of the mean of ``correct`` at level ``1 - alpha``.

    ``n_boot`` resamples of ``len(correct)`` values drawn with replacement (``numpy.random.default_rng(seed)``); the
    interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles (linear interpolation) of the resampled means. The
    same ``(correct, n_boot, seed, alpha)`` always gives the same interval. An empty input gives ``(nan, nan)``; a
    constant one the degenerate interval ``(c, c)``.

    Args:
        correct: per-sample values — 0/1 correctness, or paired differences in ``{-1, 0, 1}``.
        n_boot: number of bootstrap resamples (>= 1).
        seed: seed of the resampling.
        alpha: 1 - confidence level (0.05 for a 95 % interval).
    """
    values = _vector(correct, "correct")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = values.size
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    step = max(1, _CHUNK_VALUES // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def binomial_cdf_half(k: int, n: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, exactly: ``sum_{i<=k} C(n, i) / 2**n`` in integer arithmetic."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def chi2_sf_1dof(x: float) -> float:
    """Upper tail ``P(χ²₁ >= x)`` of the chi-square distribution with one degree of freedom: ``erfc(√(x/2))``."""
    if x <= 0:
        return 1.0
    return math.erfc(math.sqrt(x / 2.0))


class McNemar(NamedTuple):
    """Result of :func:`mcnemar`; unpacks as ``b01, b10, statistic, p_value``."""

    b01: int  # reference (a) wrong, other (b) right
    b10: int  # reference (a) right, other (b) wrong
    statistic: float  # exact test: min(b01, b10); chi-square test: the corrected χ²
    p_value: float  # two-sided


def mcnemar_test_name(b01: int, b10: int, exact_below: int = EXACT_BELOW) -> str:
    """``"exact"`` or ``"chi2"``: which test :func:`mcnemar` uses for these discordant counts."""
    return "exact" if b01 + b10 < exact_below else "chi2"


def mcnemar(
    a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray, exact_below: int = EXACT_BELOW
) -> McNemar:
    """McNemar's paired test of ``b`` against the reference ``a`` on the same samples (rules in the module doc).

    Args:
        a_correct: per-sample correctness of the reference (e.g. the uncompressed model), truthy = right.
        b_correct: per-sample correctness of the other model, same samples in the same order.
        exact_below: use the exact binomial test when ``b01 + b10 < exact_below``, else the chi-square test with
            continuity correction.

    Returns:
        ``(b01, b10, statistic, p_value)``; with ``b01 + b10 == 0`` (identical correctness): ``(0, 0, 0.0, 1.0)``.
    """
    a = np.asarray(a_correct).astype(bool)
    b = np.asarray(b_correct).astype(bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a_correct and b_correct must be 1-D and of one length, got {a.shape} and {b.shape}")
    b01 = int(np.sum(~a & b))
    b10 = int(np.sum(a & ~b))
    n = b01 + b10
    if n == 0:
        return McNemar(0, 0, 0.0, 1.0)
    if mcnemar_test_name(b01, b10, exact_below) == "exact":
        k = min(b01, b10)
        return McNemar(b01, b10, float(k), min(1.0, 2.0 * binomial_cdf_half(k, n)))
    statistic = (abs(b01 - b10) - 1) ** 2 / n
    return McNemar(b01, b10, float(statistic), chi2_sf_1dof(statistic))


def agreement(a_answers: Sequence[Any], b_answers: Sequence[Any]) -> float:
    """Fraction of positions where ``a_answers[i] == b_answers[i]`` (``nan`` for empty inputs)."""
    if len(a_answers) != len(b_answers):
        raise ValueError(f"answer lists differ in length: {len(a_answers)} vs {len(b_answers)}")
    if not len(a_answers):
        return math.nan
    return sum(x == y for x, y in zip(a_answers, b_answers)) / len(a_answers)


__all__ = [
    "EXACT_BELOW",
    "McNemar",
    "agreement",
    "binomial_cdf_half",
    "bootstrap_ci",
    "chi2_sf_1dof",
    "mcnemar",
    "mcnemar_test_name",
]
