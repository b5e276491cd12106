"""Online conformal calibration: its quantile, and coverage where a fixed quantile fails."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.calibration import OnlineConformal, quantile, scores, widen_interval
from predictor.ring import Ring


@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_quantile_matches_numpy(n: int) -> None:
    values = np.random.default_rng(n).normal(size=n)
    for level in np.linspace(0.0, 1.0, 41):
        assert quantile(values, level) == pytest.approx(np.quantile(values, level), abs=1e-12)


def test_ring_keeps_the_last_values() -> None:
    ring = Ring(5)
    seen: list[float] = []
    rng = np.random.default_rng(0)
    for size in rng.integers(0, 9, size=60):
        chunk = rng.normal(size=int(size))
        ring.extend(chunk)
        seen.extend(chunk.tolist())
        assert sorted(ring.values().tolist()) == sorted(seen[-5:])
    with pytest.raises(ValueError):
        Ring(0)


def _coverage(
    conformal: OnlineConformal, actual: np.ndarray, point: float, lower: float, upper: float
) -> float:
    """Serve one forecast at a time (the same raw interval each time) and return the share
    of outcomes inside the calibrated interval, after a warm-up of 200."""
    key = ("m", "q", 1)
    hits = []
    p, lo_raw, hi_raw = np.array([point]), np.array([lower]), np.array([upper])
    for y in actual:
        lo, hi = widen_interval(p, lo_raw, hi_raw, conformal.widen(key))
        hits.append(bool(lo[0] <= y <= hi[0]))
        conformal.update(key, np.array([y]), lo_raw, hi_raw)
    return float(np.mean(hits[200:]))


def test_adaptive_level_reaches_nominal_coverage_on_counts() -> None:
    """Requests per bin as small counts: one width covers 66 % of bins, the next 88 %, so
    a fixed 80 % quantile of the scores over-covers; the adaptive level alternates between
    the two and covers about 80 %."""
    actual = np.random.default_rng(7).poisson(1.2, 8_000).astype(float)
    fixed = _coverage(OnlineConformal(min_count=20, step=0.0), actual, 1.0, 0.5, 1.5)
    adaptive = _coverage(OnlineConformal(min_count=20, step=0.05), actual, 1.0, 0.5, 1.5)
    assert fixed > 0.86
    assert adaptive == pytest.approx(0.8, abs=0.02)


def test_intervals_follow_a_jump_in_traffic() -> None:
    """After the scale of outcomes jumps tenfold, coverage over the later part is back
    near nominal: the buffer and the level both follow recent outcomes."""
    rng = np.random.default_rng(3)
    before = rng.lognormal(1.0, 0.5, 3_000)
    after = rng.lognormal(1.0 + np.log(10), 0.5, 3_000)
    conformal = OnlineConformal(size=500, min_count=30)
    _coverage(conformal, before, 2.7, 1.0, 6.0)
    late = _coverage(conformal, after, 2.7, 1.0, 6.0)  # the first 200 after the jump are skipped
    assert late == pytest.approx(0.8, abs=0.05)


def test_zero_floor_lets_intervals_narrow_on_sparse_traffic() -> None:
    """Load in short bins is often exactly 0. With the model's lower bound at that floor,
    an outcome of 0 must not count as sitting on the interval's edge: otherwise the scores
    of the empty bins pin the widening at 0 and a too-wide interval can never narrow.
    Here 70 % of bins are empty and the raw interval [0, 400] holds every outcome; the
    calibrated one narrows its upper bound to about 80 % coverage, its lower bound stays 0."""
    rng = np.random.default_rng(11)
    actual = np.where(rng.random(6_000) < 0.7, 0.0, rng.lognormal(2.0, 1.0, 6_000))
    conformal = OnlineConformal(size=500, min_count=20, step=0.05)
    assert _coverage(conformal, actual, 0.0, 0.0, 400.0) == pytest.approx(0.8, abs=0.02)
    lo, hi = widen_interval(np.array([0.0]), np.array([0.0]), np.array([400.0]), -2.0)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(np.expm1(np.log1p(400.0) - 2.0))


def test_a_lower_bound_above_the_floor_still_counts() -> None:
    """Above 0 the score is the usual two-sided one: an outcome under the lower bound is
    outside by the log distance to it, and narrowing raises that bound."""
    s = scores(np.array([0.0, 5.0, 0.0]), np.array([1.0, 1.0, 0.0]), np.array([9.0, 9.0, 9.0]))
    assert s[0] == pytest.approx(np.log1p(1.0))
    assert s[1] == pytest.approx(max(np.log1p(1.0) - np.log1p(5.0), np.log1p(5.0) - np.log1p(9.0)))
    assert s[2] == pytest.approx(-np.log1p(9.0))
    lo, _ = widen_interval(np.array([3.0]), np.array([1.0]), np.array([9.0]), -0.5)
    assert lo[0] == pytest.approx(np.expm1(np.log1p(1.0) + 0.5))


def test_unbounded_and_missing_bounds() -> None:
    """An interval no widening can narrow past (floor to infinity) scores a finite value,
    so the widening stays a number; a missing (NaN) lower bound stays missing instead of
    passing for the floor, so the service's finiteness check still sees it."""
    conformal = OnlineConformal(size=100, min_count=20)
    for _ in range(50):
        conformal.update("k", np.array([1.0]), np.array([0.0]), np.array([np.inf]))
    assert np.isfinite(conformal.widen("k"))
    assert np.isnan(scores(np.array([1.0]), np.array([np.nan]), np.array([5.0])))[0]
    lo, _ = widen_interval(np.array([1.0]), np.array([np.nan]), np.array([5.0]), 0.1)
    assert np.isnan(lo[0])
