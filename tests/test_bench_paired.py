"""Paired per-round ratios and the bootstrap interval of their median, on crafted per-round timings with
hand-derived expectations."""

from __future__ import annotations

import pytest

from tokpress.eval.bench.paired import bootstrap_median_interval, paired_ratios, point_only, summarise


def test_paired_ratios_round_by_round():
    # round k: reference / row; rounds with a missing or zero value are left out
    assert paired_ratios([200, 300, 240], [100, 100, 120]) == [2.0, 3.0, 2.0]
    assert paired_ratios([10, None, 9, 8], [5, 4, 0, float("nan")]) == [2.0]
    assert paired_ratios([1, 3], [4, 4], scale=100.0) == [25.0, 75.0]


def test_paired_median_differs_from_ratio_of_medians():
    # a slow round (round 2) hits both rows alike: every per-round ratio is 2, so the interval collapses on it
    reference, row = [200.0, 400.0, 210.0], [100.0, 200.0, 105.0]
    got = summarise(paired_ratios(reference, row))
    assert got == {"median": 2.0, "low": 2.0, "high": 2.0, "rounds": 3}
    # noise that is not shared: 300/110 = 2.73, 190/200 = 0.95, 200/100 = 2 -> median 2, interval [0.95, 2.73]
    # (three distinct values: each extreme is a resample's median with probability 7/27 > 2.5 %)
    got = summarise(paired_ratios([300.0, 190.0, 200.0], [110.0, 200.0, 100.0]))
    assert got["median"] == pytest.approx(2.0) and got["low"] == pytest.approx(0.95)
    assert got["high"] == pytest.approx(300 / 110)


def test_bootstrap_interval_of_three_values():
    # resample medians of {2, 3, 2}: 3 when >= 2 of 3 draws are the 3 (probability 7/27 > 2.5 %), else 2
    assert bootstrap_median_interval([2.0, 3.0, 2.0], seed=0) == (2.0, 3.0)
    assert bootstrap_median_interval([5.0]) == (5.0, 5.0)  # one round: no spread


def test_bootstrap_interval_contains_the_median_and_narrows_with_less_spread():
    wide = [1.0, 1.3, 0.7, 1.2, 0.8, 1.05, 0.95, 1.6, 0.5]
    narrow = [1.0 + (v - 1.0) / 2 for v in wide]  # half the spread about the same median
    lo_w, hi_w = bootstrap_median_interval(wide, seed=3)
    lo_n, hi_n = bootstrap_median_interval(narrow, seed=3)
    assert lo_w < 1.0 < hi_w and lo_n < 1.0 < hi_n
    # the median commutes with x -> 1 + (x - 1) / 2, and the same seed draws the same resamples: half the width
    assert hi_n - lo_n == pytest.approx((hi_w - lo_w) / 2)
    assert (lo_n, hi_n) == (pytest.approx(1 + (lo_w - 1) / 2), pytest.approx(1 + (hi_w - 1) / 2))


def test_bootstrap_is_seeded():
    values = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert bootstrap_median_interval(values, seed=7) == bootstrap_median_interval(values, seed=7)
    with pytest.raises(ValueError):
        bootstrap_median_interval([])


def test_summaries_without_values():
    assert summarise([None, float("inf")]) is None
    assert point_only(None) is None
    assert point_only(1.5) == {"median": 1.5, "low": None, "high": None, "rounds": 0}
