"""The forecaster interface every model and baseline implements.

A forecaster maps raw windows ``[B, L, C]`` (the last ``L`` observations of
``C`` quantities, in their own units) to a :class:`Prediction` over the next
``H`` steps: a point forecast and an interval per quantity. Nothing here does
I/O; a forecaster never sees data after its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from predictor.features import pad_window

#: Nominal interval of every forecast: the 10th to the 90th percentile (80 %).
QUANTILES = (0.1, 0.5, 0.9)
NOMINAL_COVERAGE = QUANTILES[-1] - QUANTILES[0]


@dataclass(frozen=True)
class Prediction:
    """Point forecasts and interval bounds, each ``[B, H, C]`` in raw units."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        if not (self.point.shape == self.lower.shape == self.upper.shape):
            raise ValueError("point, lower and upper must have the same shape")

    def __len__(self) -> int:
        return int(self.point.shape[0])


@runtime_checkable
class Forecaster(Protocol):
    """What the serving loop, the trainer and the benchmarks need of a model."""

    #: short name: ``lstm``, ``dlinear``, ``last_value``, ...
    name: str
    #: ``model`` for trained networks, ``baseline`` for the reference rules.
    kind: str
    seq_len: int
    horizon: int
    channels: int

    def predict(self, windows: np.ndarray) -> Prediction:
        """Forecast from raw windows ``[B, seq_len, C]``."""
        ...


def rolling_predict(
    forecaster: Forecaster, series: np.ndarray, start: int = 0, batch_size: int = 2048
) -> Prediction:
    """Forecast after every row ``t >= start`` of a raw series ``[N, C]``, using rows ``<= t`` only.

    Row ``t`` of the result is the forecast made once row ``t`` is known (so it
    targets rows ``t+1 .. t+H``). Windows shorter than ``seq_len`` are left-padded
    by repeating their first row, as the serving loop does.
    """
    seq_len = forecaster.seq_len
    points, lowers, uppers = [], [], []
    for lo in range(start, len(series), batch_size):
        hi = min(lo + batch_size, len(series))
        wins = np.stack(
            [pad_window(series[max(0, t + 1 - seq_len) : t + 1], seq_len)[0] for t in range(lo, hi)]
        )
        pred = forecaster.predict(wins)
        points.append(pred.point)
        lowers.append(pred.lower)
        uppers.append(pred.upper)
    if not points:
        h, c = forecaster.horizon, series.shape[1]
        empty = np.empty((0, h, c))
        return Prediction(empty, empty, empty)
    return Prediction(np.concatenate(points), np.concatenate(lowers), np.concatenate(uppers))
