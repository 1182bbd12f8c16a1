"""Timing statistics: arithmetic checked against numpy, ordering checked on random series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsdeploy.bench.stats import NOISY_COV, TimingStats, summarize


def test_known_samples_match_numpy():
    samples_s = [0.001, 0.002, 0.003, 0.004, 0.010]  # seconds
    s = summarize(samples_s)
    ms = np.array(samples_s) * 1e3
    assert s.n == 5
    assert s.total_s == pytest.approx(0.020)
    assert s.median_ms == pytest.approx(3.0)
    assert s.mean_ms == pytest.approx(4.0)
    # Linear interpolation: p90 lies 60 % of the way from 4 ms to 10 ms.
    assert s.p90_ms == pytest.approx(7.6)
    assert s.p95_ms == pytest.approx(np.percentile(ms, 95))
    assert s.p99_ms == pytest.approx(9.76)
    assert (s.min_ms, s.max_ms) == (pytest.approx(1.0), pytest.approx(10.0))
    assert s.std_ms == pytest.approx(np.std(ms))
    assert s.cov == pytest.approx(np.std(ms) / 4.0)
    assert s.noisy


def test_constant_series_has_zero_spread():
    s = summarize([0.005] * 10)
    assert s.median_ms == s.p99_ms == s.min_ms == s.max_ms == pytest.approx(5.0)
    assert s.std_ms == 0 and s.cov == 0 and not s.noisy


def test_single_sample():
    s = summarize([0.0025])
    assert s.n == 1 and s.median_ms == pytest.approx(2.5) and s.cov == 0


def test_rejects_empty_and_invalid():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([0.001, float("nan")])
    with pytest.raises(ValueError):
        summarize([-0.001])


def test_noisy_threshold_is_trtexec_s():
    assert NOISY_COV == 0.025
    assert set(TimingStats.__dataclass_fields__) == {
        "n", "total_s", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "cov"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-7, max_value=10.0, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=300))
def test_order_and_agreement_with_numpy(samples):
    s = summarize(samples)
    ms = np.asarray(samples, dtype=np.float64) * 1e3
    eps = 1e-9 * max(1.0, s.max_ms)
    assert s.min_ms - eps <= s.median_ms <= s.p90_ms + eps
    assert s.p90_ms <= s.p95_ms + eps <= s.p99_ms + 2 * eps <= s.max_ms + 3 * eps
    assert s.min_ms - eps <= s.mean_ms <= s.max_ms + eps
    assert s.n == len(samples)
    assert s.median_ms == pytest.approx(float(np.median(ms)), rel=1e-12)
    assert s.p99_ms == pytest.approx(float(np.percentile(ms, 99)), rel=1e-12)
    assert s.cov >= 0 and math.isfinite(s.cov)
    assert s.cov == pytest.approx(float(np.std(ms)) / float(np.mean(ms)), rel=1e-9, abs=1e-12)
