"""The planner peers (Kalman local linear trend, auto-ARIMA; raw and log1p) run the shared
forecaster contract checks of :mod:`tests.predictor.test_forecaster_contract`: shapes,
finite output on extreme windows, ordered bounds, determinism, no look-ahead."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from predictor.models import Forecaster
from predictor.models.arima import ArimaPeer
from predictor.models.kalman import KalmanTrend
from tests.predictor.test_forecaster_contract import (
    SEQ_LEN,
    C,
    test_finite_on_extreme_windows,
    test_interval_contains_point_and_is_finite,
    test_no_look_ahead,
    test_rolling_predict_start_and_empty,
    test_same_seed_same_output,
)

# the shared contract checks, collected by pytest from this module with the fixtures below
__all__ = [
    "test_finite_on_extreme_windows",
    "test_interval_contains_point_and_is_finite",
    "test_no_look_ahead",
    "test_rolling_predict_start_and_empty",
    "test_same_seed_same_output",
]

PEERS: dict[str, Callable[[int, int], Forecaster]] = {
    "kalman": lambda h, seed: KalmanTrend(horizon=h, channels=C, seq_len=SEQ_LEN),
    "kalman_log1p": lambda h, seed: KalmanTrend(horizon=h, channels=C, seq_len=SEQ_LEN, log1p=True),
    "arima": lambda h, seed: ArimaPeer(horizon=h, channels=C, seq_len=SEQ_LEN),
    "arima_log1p": lambda h, seed: ArimaPeer(horizon=h, channels=C, seq_len=SEQ_LEN, log1p=True),
}


@pytest.fixture(params=sorted(PEERS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def factory(name: str) -> Callable[[int, int], Forecaster]:
    return PEERS[name]
