"""A Kalman local linear trend filter: the ``kalman`` load predictor of NVIDIA Dynamo's planner.

Dynamo's SLA planner (``components/planner/src/dynamo/planner/utils/load_predictor.py``)
runs a two-state filter over each load series: level ``x`` and trend ``v`` with

    x_t = x_{t-1} + v_{t-1} + w,   v_t = v_{t-1} + u,   z_t = x_t + e
    Q = diag(q_level, q_trend),    R = r,    P_0 = 1000 I

(defaults ``q_level = 1``, ``q_trend = 0.1``, ``r = 10``), started at the first
observation with level ``z_0`` and trend 0, skipping a leading run of zeros (the idle
period before traffic), and optionally on ``log1p`` of the load. Its forecast is the
predicted level; this one forecasts ``h`` steps ahead as ``level + h * trend``.

This class reproduces that filter in numpy as a :class:`~predictor.models.base.Forecaster`
peer: each window ``[B, L, C]`` is filtered from its start (vectorised over ``B`` and
``C``, one loop over ``L``), so a forecast never sees data after its window. The
steady-state gain depends only on ``q / r``, so the defaults suit any unit once the
``P_0`` transient is over (a few steps).

Dynamo publishes no interval. Here the 80 % interval is the forecast plus the 10th
and 90th percentiles of the filter's one-step innovations within the window, times
``sqrt(h)`` (in ``log1p`` space for the ``log1p`` variant); with fewer than two
innovations it has zero width. Forecasts and bounds are clipped at 0.
"""

from __future__ import annotations

import numpy as np

from predictor.errors import ConfigError
from predictor.models.base import QUANTILES, Prediction

#: initial state covariance (filterpy's default ``P *= 1000``, as Dynamo sets it)
P0 = 1000.0


def filter_windows(
    z: np.ndarray, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the filter over ``z [B, L, C]``: final level, trend, started mask, innovations.

    Innovations ``[B, L, C]`` are NaN where no prediction was made (before the start).
    """
    b, length, c = z.shape
    level, trend = np.zeros((b, c)), np.zeros((b, c))
    p11, p12, p22 = np.full((b, c), P0), np.zeros((b, c)), np.full((b, c), P0)
    started = np.zeros((b, c), dtype=bool)
    innovations = np.full(z.shape, np.nan)
    for i in range(length):
        zi = z[:, i, :]  # [B, C]
        # predict (F = [[1, 1], [0, 1]]), then update with H = [1, 0]
        a, t = level + trend, trend
        m11, m12, m22 = p11 + 2.0 * p12 + p22 + q_level, p12 + p22, p22 + q_trend
        s = m11 + r
        k1, k2 = m11 / s, m12 / s
        innov = zi - a
        new_level, new_trend = a + k1 * innov, t + k2 * innov
        n11, n12, n22 = (1.0 - k1) * m11, (1.0 - k1) * m12, m22 - k2 * m12
        # a series starts at its first nonzero value: level z, trend 0, P = P0 I
        start = ~started & (zi != 0.0)
        level = np.where(started, new_level, np.where(start, zi, level))
        trend = np.where(started, new_trend, 0.0)
        p11 = np.where(started, n11, P0)
        p12 = np.where(started, n12, 0.0)
        p22 = np.where(started, n22, P0)
        innovations[:, i, :] = np.where(started, innov, np.nan)
        started = started | start
    return level, trend, started, innovations


def _finite_quantile(x: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile ``q`` over axis 1 of ``x [B, L, C]`` ignoring NaN; 0 with
    fewer than two finite values (a fast ``nanquantile`` for this one layout)."""
    ordered = np.sort(x, axis=1)  # NaN sort last
    n = np.isfinite(x).sum(axis=1)  # [B, C]
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    at_lo = np.take_along_axis(ordered, lo[:, None, :], axis=1)[:, 0, :]
    at_hi = np.take_along_axis(ordered, hi[:, None, :], axis=1)[:, 0, :]
    value = at_lo + (pos - lo) * (at_hi - at_lo)
    return np.where(n >= 2, value, 0.0)


def check_filter(
    who: str, seq_len: int, horizon: int, q_level: float, q_trend: float, r: float
) -> None:
    """A :class:`ConfigError` naming ``who`` for a window, horizon or noise it cannot use."""
    if seq_len < 1 or horizon < 1:
        raise ConfigError(f"{who} needs seq_len >= 1 and horizon >= 1")
    if q_level <= 0 or q_trend <= 0 or r <= 0:
        raise ConfigError(f"{who} needs q_level, q_trend and r > 0")


class KalmanTrend:
    """Dynamo's ``kalman`` predictor over each window (module docstring)."""

    kind = "peer"

    def __init__(
        self,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 60,
        q_level: float = 1.0,
        q_trend: float = 0.1,
        r: float = 10.0,
        log1p: bool = False,
    ) -> None:
        check_filter("the Kalman peer", seq_len, horizon, q_level, q_trend, r)
        self.horizon, self.channels, self.seq_len = horizon, channels, seq_len
        self.q_level, self.q_trend, self.r, self.log1p = q_level, q_trend, r, log1p
        self.name = "kalman_log1p" if log1p else "kalman"

    def predict(self, windows: np.ndarray) -> Prediction:
        w = np.asarray(windows[:, -self.seq_len :, :], dtype=np.float64)  # [B, L, C]
        z = np.log1p(np.maximum(w, 0.0)) if self.log1p else w
        level, trend, started, innov = filter_windows(z, self.q_level, self.q_trend, self.r)
        steps = np.arange(1, self.horizon + 1, dtype=np.float64)[None, :, None]  # [1, H, 1]
        point = np.where(started[:, None, :], level[:, None, :] + steps * trend[:, None, :], 0.0)
        lo_q, hi_q = (_finite_quantile(innov, q) for q in (QUANTILES[0], QUANTILES[-1]))
        spread = np.sqrt(steps)
        lower = point + np.minimum(lo_q, 0.0)[:, None, :] * spread  # [B, H, C]
        upper = point + np.maximum(hi_q, 0.0)[:, None, :] * spread
        if self.log1p:
            point, lower, upper = (np.expm1(np.minimum(v, 700.0)) for v in (point, lower, upper))
        point = np.maximum(point, 0.0)
        lower = np.clip(lower, 0.0, point)
        upper = np.maximum(upper, point)
        return Prediction(point, lower, upper)
