"""Statistics of ``tokpress eval`` against values computed by hand and published tables: McNemar (exact binomial and
chi-square with continuity correction), the chi-square(1) tail, the percentile bootstrap, answer agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokpress.eval.accuracy.stats import (
    agreement,
    binomial_cdf_half,
    bootstrap_ci,
    chi2_sf_1dof,
    mcnemar,
    mcnemar_test_name,
)


def _pairs(b01: int, b10: int, both_right: int = 0, both_wrong: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and method correctness with the given discordant and concordant counts."""
    a = [0] * b01 + [1] * b10 + [1] * both_right + [0] * both_wrong
    b = [1] * b01 + [0] * b10 + [1] * both_right + [0] * both_wrong
    return np.array(a, bool), np.array(b, bool)


@pytest.mark.parametrize(
    "x,p",
    [(3.841458820694124, 0.05), (6.634896601021214, 0.01), (10.827566170662733, 0.001), (2.705543454095404, 0.10)],
)
def test_chi2_tail_matches_the_published_critical_values(x, p):
    assert chi2_sf_1dof(x) == pytest.approx(p, rel=1e-9)


def test_chi2_tail_edges():
    assert chi2_sf_1dof(0.0) == 1.0 and chi2_sf_1dof(-1.0) == 1.0
    assert chi2_sf_1dof(1.0) == pytest.approx(0.3173105078629141, rel=1e-12)  # P(|Z| >= 1)


def test_binomial_cdf_by_hand():
    # C(22, 0..6) = 1, 22, 231, 1540, 7315, 26334, 74613 -> 110056 of 2**22
    assert binomial_cdf_half(6, 22) == 110056 / 4194304
    assert binomial_cdf_half(0, 5) == 1 / 32
    assert binomial_cdf_half(-1, 5) == 0.0 and binomial_cdf_half(5, 5) == 1.0
    for n in (1, 7, 30, 101):  # symmetry of Binomial(n, 1/2): P(X <= k) + P(X <= n - k - 1) = 1
        for k in range(n):
            assert binomial_cdf_half(k, n) + binomial_cdf_half(n - k - 1, n) == pytest.approx(1.0, abs=1e-12)


def test_mcnemar_exact_small_counts():
    # 6 vs 16 discordant pairs (22 < 25): p = 2 * P(X <= 6), X ~ Bin(22, 1/2) = 2 * 110056 / 2**22
    a, b = _pairs(6, 16, both_right=59, both_wrong=80)
    got = mcnemar(a, b)
    assert (got.b01, got.b10) == (6, 16)
    assert got.statistic == 6.0
    assert got.p_value == pytest.approx(0.052478790283203125, abs=1e-15)
    assert mcnemar_test_name(6, 16) == "exact"
    # the sign-test textbook case: 5 vs 0 -> p = 2 / 32
    assert mcnemar(*_pairs(5, 0, both_right=3)).p_value == pytest.approx(0.0625, abs=1e-15)
    # 1 vs 1 -> p = min(1, 2 * 3/4) = 1
    assert mcnemar(*_pairs(1, 1)).p_value == 1.0


def test_mcnemar_chi_square_with_continuity_correction():
    # Agresti's presidential-approval table: 150 vs 86 discordant -> (|150 - 86| - 1)^2 / 236 = 3969 / 236
    got = mcnemar(*_pairs(150, 86, both_right=794, both_wrong=570))
    assert mcnemar_test_name(got.b01, got.b10) == "chi2"
    assert got.statistic == pytest.approx(3969 / 236, rel=1e-12)  # 16.82 (17.36 without the correction)
    assert got.p_value == pytest.approx(math.erfc(math.sqrt(3969 / 236 / 2)), rel=1e-12)
    assert got.p_value < 1e-4
    # 10 vs 30: (20 - 1)^2 / 40 = 9.025; between the 0.01 and 0.001 critical values (6.63 < 9.025 < 10.83)
    got = mcnemar(*_pairs(10, 30))
    assert got.statistic == pytest.approx(9.025)
    assert 0.001 < got.p_value < 0.01 and got.p_value == pytest.approx(0.002663, abs=1e-6)


def test_mcnemar_rule_switch_symmetry_and_identity():
    assert mcnemar_test_name(13, 12) == "chi2" and mcnemar_test_name(12, 12) == "exact"  # 25 vs 24 pairs
    forced = mcnemar(*_pairs(6, 16), exact_below=0)  # chi-square on 22 pairs: (10 - 1)^2 / 22
    assert forced.statistic == pytest.approx(81 / 22) and forced.p_value == pytest.approx(chi2_sf_1dof(81 / 22))
    a, b = _pairs(4, 9, both_right=10)
    ab, ba = mcnemar(a, b), mcnemar(b, a)
    assert (ab.b01, ab.b10) == (ba.b10, ba.b01) and ab.p_value == ba.p_value
    same = np.array([1, 0, 1, 1, 0], bool)
    assert tuple(mcnemar(same, same)) == (0, 0, 0.0, 1.0)
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    correct = rng.random(60) < 0.4
    low, high = bootstrap_ci(correct, n_boot=2000, seed=3)
    assert low <= correct.mean() <= high and 0 <= low < high <= 1
    assert bootstrap_ci(correct, n_boot=2000, seed=3) == (low, high)
    scores = rng.normal(size=60)  # continuous values: another seed moves the quantiles
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3) != bootstrap_ci(scores, seed=4)
    narrow = bootstrap_ci(correct, n_boot=2000, seed=3, alpha=0.5)
    assert low <= narrow[0] <= narrow[1] <= high  # a 50 % interval sits inside the 95 % one


def test_bootstrap_ci_narrows_with_n_like_the_normal_approximation():
    widths = {}
    for n in (20, 400):
        correct = np.arange(n) % 2 == 0  # accuracy 0.5 exactly
        low, high = bootstrap_ci(correct, n_boot=4000, seed=0)
        widths[n] = high - low
        assert low <= 0.5 <= high
    assert widths[400] < widths[20] / 3
    normal = 2 * 1.959964 * math.sqrt(0.25 / 400)  # ~0.098
    assert widths[400] == pytest.approx(normal, rel=0.15)


def test_bootstrap_ci_edges_and_paired_differences():
    assert bootstrap_ci(np.ones(7)) == (1.0, 1.0)
    assert bootstrap_ci(np.zeros(7)) == (0.0, 0.0)
    low, high = bootstrap_ci([])
    assert math.isnan(low) and math.isnan(high)
    a, b = _pairs(3, 8, both_right=20, both_wrong=9)
    diff = b.astype(float) - a.astype(float)
    low, high = bootstrap_ci(diff, n_boot=2000, seed=0)
    assert low <= diff.mean() <= high and low < 0
    with pytest.raises(ValueError):
        bootstrap_ci([1, 0], n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1, 0], alpha=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones((2, 2)))


def test_agreement():
    assert agreement([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert agreement([0, 1, 2, 3], [0, 2, 2, 1]) == 0.5
    assert agreement(["red", "blue", "up"], ["red", "red", "red"]) == pytest.approx(1 / 3)
    assert agreement(np.array([1, 2]), np.array([2, 2])) == 0.5
    assert math.isnan(agreement([], []))
    with pytest.raises(ValueError):
        agreement([1, 2], [1])
