"""The shipped t quantiles and the Wilson interval agree with scipy, the library they stand in for."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest, t

from edgeflow.operators.summarize import wilson_interval
from edgeflow.student_t import t975


@pytest.mark.parametrize("df", [*range(1, 40), 50, 77, 100, 1_000, 100_000])
def test_t975_matches_scipy(df: int) -> None:
    assert t975(df) == pytest.approx(t.ppf(0.975, df), rel=2e-8)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 50), (3, 50), (50, 50), (1, 78), (40, 78), (999, 1000)])
def test_wilson_interval_matches_scipy_binomtest(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert (lo, hi) == (pytest.approx(ci.low, abs=1e-10), pytest.approx(ci.high, abs=1e-10))


def test_t975_refuses_zero_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="degrees of freedom must be >= 1, got 0"):
        t975(0)
