"""The load experts that need no training, by name: the flat baselines and the planner peers.

Beside the trained networks these are the experts the load ensemble aggregates
(:mod:`predictor.ensemble`), in the walk-forward bench and in the service alike. Each is a
:class:`~predictor.models.base.Forecaster` over windows of binned load ``[B, L, 3]``.

The peers reproduce the one-step load predictors of NVIDIA Dynamo's SLA planner: a Kalman
local linear trend (raw and ``log1p``) and auto-ARIMA. Auto-ARIMA fits each window
afresh (about 7 ms for a 512-bin window on one core), so the service leaves it out
(:data:`SERVE_PEERS`): rebuilding the ensemble from a partition's history replays every
expert over up to 512 bins per stream on each assignment.
"""

from __future__ import annotations

from collections.abc import Callable

from predictor.models.arima import ArimaPeer
from predictor.models.base import Forecaster
from predictor.models.baselines import EWMA, LastValue, RollingMean, RollingMedian
from predictor.models.kalman import KalmanTrend

#: the planner peers :func:`load_peers` knows
PEERS = ("kalman", "kalman_log1p", "arima")
#: the peers the service aggregates (module docstring)
SERVE_PEERS = ("kalman", "kalman_log1p")


def load_baselines(horizon: int, channels: int = 3) -> list[Forecaster]:
    """Persistence, means over 6 and 30 bins, median over 30, EWMA: the flat load baselines."""
    return [
        LastValue(horizon, channels),
        RollingMean(6, horizon, channels),
        RollingMean(30, horizon, channels),
        RollingMedian(30, horizon, channels),
        EWMA(0.3, 30, horizon, channels),
    ]


def load_peers(names: tuple[str, ...], horizon: int, channels: int = 3) -> list[Forecaster]:
    """The Dynamo planner's load predictors by name (``kind: "peer"``)."""
    make: dict[str, Callable[[], Forecaster]] = {
        "kalman": lambda: KalmanTrend(horizon, channels),
        "kalman_log1p": lambda: KalmanTrend(horizon, channels, log1p=True),
        "arima": lambda: ArimaPeer(horizon, channels),
    }
    return [make[name]() for name in names]
