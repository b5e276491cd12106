"""The Kalman peer: it equals a plain matrix Kalman filter run point by point (as
Dynamo's planner runs filterpy's), tracks a linear trend, and meets the forecaster
contract (shapes, finite, ordered bounds, no look-ahead)."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import ConfigError
from predictor.models import Forecaster, rolling_predict
from predictor.models.kalman import KalmanTrend
from tests.predictor.test_forecaster_contract import SEQ_LEN, C


def _reference(z: np.ndarray, q_level: float, q_trend: float, r: float) -> tuple[float, float]:
    """Level and trend after a point-by-point matrix filter (filterpy's Joseph-form update)."""
    f = np.array([[1.0, 1.0], [0.0, 1.0]])
    h = np.array([[1.0, 0.0]])
    q = np.diag([q_level, q_trend])
    x, p, started = np.zeros((2, 1)), np.eye(2) * 1000.0, False
    for value in z:
        if not started:
            if value == 0.0:
                continue  # the idle run before the first request
            x, started = np.array([[value], [0.0]]), True
            continue
        x, p = f @ x, f @ p @ f.T + q
        s = h @ p @ h.T + r
        k = p @ h.T / s
        x = x + k * (value - (h @ x)[0, 0])
        i_kh = np.eye(2) - k @ h
        p = i_kh @ p @ i_kh.T + k * r @ k.T
    return float(x[0, 0]), float(x[1, 0])


@pytest.mark.parametrize(("q_level", "q_trend", "r"), [(1.0, 0.1, 10.0), (0.3, 0.02, 2.0)])
def test_matches_a_matrix_reference_filter(q_level: float, q_trend: float, r: float) -> None:
    rng = np.random.default_rng(0)
    windows = rng.gamma(2.0, 40.0, size=(6, 80, 2))
    windows[1, :7, 0] = 0.0  # a leading idle run is skipped, as Dynamo does
    windows[2, :, 1] = 0.0  # never started: forecast 0
    fc = KalmanTrend(horizon=4, channels=2, seq_len=80, q_level=q_level, q_trend=q_trend, r=r)
    point = fc.predict(windows).point  # [B, H, C]
    for b in range(6):
        for c in range(2):
            level, trend = _reference(windows[b, :, c], q_level, q_trend, r)
            want = np.maximum(level + np.arange(1, 5) * trend, 0.0)
            np.testing.assert_allclose(point[b, :, c], want, rtol=1e-9, atol=1e-9)
    assert (point[2, :, 1] == 0.0).all()


def test_log1p_variant_filters_log1p_of_the_load() -> None:
    rng = np.random.default_rng(1)
    windows = rng.gamma(2.0, 40.0, size=(3, 50, 1))
    point = KalmanTrend(horizon=1, channels=1, seq_len=50, log1p=True).predict(windows).point
    for b in range(3):
        level, trend = _reference(np.log1p(windows[b, :, 0]), 1.0, 0.1, 10.0)
        assert point[b, 0, 0] == pytest.approx(max(np.expm1(level + trend), 0.0), rel=1e-9)


def test_tracks_a_linear_trend() -> None:
    t = np.arange(200, dtype=np.float64)
    series = np.stack([50.0 + 3.0 * t, 1000.0 - 2.0 * t, 7.0 + 0.0 * t], axis=1)  # [N, 3]
    fc = KalmanTrend(horizon=5, channels=3, seq_len=60)
    pred = rolling_predict(fc, series, start=100)
    target = np.stack([series[i + 1 : i + 6] for i in range(100, 195)])  # [95, 5, 3]
    np.testing.assert_allclose(pred.point[:95], target, rtol=1e-4)
    # persistence lags a trend by h steps; the filter does not
    assert np.abs(pred.point[:95, -1, 0] - target[:, -1, 0]).max() < 0.1


def test_shapes_kind_and_name() -> None:
    fc = KalmanTrend(horizon=3, channels=C, seq_len=SEQ_LEN, log1p=True)
    assert isinstance(fc, Forecaster)
    assert (fc.kind, fc.name) == ("peer", "kalman_log1p")
    pred = fc.predict(np.ones((5, SEQ_LEN, C)))
    assert pred.point.shape == pred.lower.shape == pred.upper.shape == (5, 3, C)


def test_interval_widens_with_the_innovations() -> None:
    rng = np.random.default_rng(2)
    calm = 100.0 + rng.normal(0.0, 1.0, size=(1, 60, 1))
    wild = 100.0 + rng.normal(0.0, 20.0, size=(1, 60, 1))
    fc = KalmanTrend(horizon=2, channels=1, seq_len=60)
    width = [float((p.upper - p.lower)[0, 0, 0]) for p in map(fc.predict, (calm, wild))]
    assert 0.0 < width[0] < width[1] / 5


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError):
        KalmanTrend(r=0.0)
    with pytest.raises(ConfigError):
        KalmanTrend(seq_len=0)
