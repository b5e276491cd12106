"""Dynamo's Kalman load predictor run by filterpy itself (the ``stats`` extra).

NVIDIA Dynamo's SLA planner runs ``filterpy.kalman.KalmanFilter`` over each load series:
a local linear trend (level and trend, ``F = [[1, 1], [0, 1]]``, ``H = [1, 0]``,
``Q = diag(q_level, q_trend)``, ``R = r``, ``P_0 = 1000 I``), started at the first
nonzero value with trend 0. Our ``kalman`` peer (:mod:`predictor.models.kalman`)
reproduces that filter in vectorised numpy; this peer runs the library's own filter
point by point over each window and channel, so the two forecasts agree to rounding
(a check on ours) while this one costs a Python loop per point.

Its forecast is the same (``level + h * trend``). Its interval is the filter's own:
the ``h``-step predicted variance of the observation, ``(F^h P F^h')_00`` plus the
process noise of the ``h`` steps and ``R``, as a Gaussian 80 % interval, where ours
takes the quantiles of the window's innovations. Forecasts and bounds are clipped at
0. Without filterpy, building it is a :class:`ConfigError` that names the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from predictor.errors import ConfigError
from predictor.models.arima import Z_UPPER
from predictor.models.base import Prediction
from predictor.models.kalman import P0, check_filter

EXTRA = "stats"


def available() -> bool:
    """Whether ``filterpy`` can be imported."""
    return importlib.util.find_spec("filterpy") is not None


def _filter_class() -> Any:
    try:
        from filterpy.kalman import KalmanFilter
    except ImportError as exc:
        raise ConfigError(
            f"filterpy_kalman needs filterpy, which is not installed: pip install 'reqcast[{EXTRA}]'"
        ) from exc
    return KalmanFilter


class FilterpyKalman:
    """filterpy's Kalman local linear trend over each window (module docstring)."""

    kind = "peer"
    name = "filterpy_kalman"

    def __init__(
        self,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 60,
        q_level: float = 1.0,
        q_trend: float = 0.1,
        r: float = 10.0,
    ) -> None:
        check_filter("filterpy_kalman", seq_len, horizon, q_level, q_trend, r)
        self.horizon, self.channels, self.seq_len = horizon, channels, seq_len
        self.q_level, self.q_trend, self.r = q_level, q_trend, r
        self._cls = _filter_class()

    def _filter(self, z: np.ndarray) -> Any:
        """The filter after ``z`` (started at its first nonzero value); None if all zero."""
        nonzero = np.flatnonzero(z)
        if len(nonzero) == 0:
            return None
        kf = self._cls(dim_x=2, dim_z=1)
        kf.F = np.array([[1.0, 1.0], [0.0, 1.0]])
        kf.H = np.array([[1.0, 0.0]])
        kf.Q = np.diag([self.q_level, self.q_trend])
        kf.R = np.array([[self.r]])
        kf.P = np.eye(2) * P0
        kf.x = np.array([[z[nonzero[0]]], [0.0]])
        for value in z[nonzero[0] + 1 :]:
            kf.predict()
            kf.update(value)
        return kf

    def _forecast(self, kf: Any) -> tuple[np.ndarray, np.ndarray]:
        """Point and the observation's predicted standard deviation, each ``[H]``."""
        x, p = np.asarray(kf.x, dtype=np.float64), np.asarray(kf.P, dtype=np.float64)
        f, q = np.asarray(kf.F), np.asarray(kf.Q)
        point, sd = np.zeros(self.horizon), np.zeros(self.horizon)
        for h in range(self.horizon):
            x, p = f @ x, f @ p @ f.T + q
            point[h] = x[0, 0]
            sd[h] = np.sqrt(max(p[0, 0] + self.r, 0.0))
        return point, sd

    def predict(self, windows: np.ndarray) -> Prediction:
        """Filter each window ``[B, L, C]`` and channel with filterpy (a loop per point)."""
        w = np.asarray(windows[:, -self.seq_len :, :], dtype=np.float64)
        b, _, c = w.shape
        point, half = np.zeros((b, self.horizon, c)), np.zeros((b, self.horizon, c))
        for i in range(b):
            for j in range(c):
                kf = self._filter(w[i, :, j])
                if kf is not None:
                    point[i, :, j], sd = self._forecast(kf)
                    half[i, :, j] = Z_UPPER * sd
        lower, upper = point - half, point + half
        point = np.maximum(point, 0.0)
        return Prediction(point, np.clip(lower, 0.0, point), np.maximum(upper, point))
