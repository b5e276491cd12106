"""AutoETS from ``statsforecast`` as an optional load baseline (the ``ets`` extra).

Exponential smoothing with the error, trend and season chosen by AICc. It is a
stronger reference than the flat baselines for smooth load series. Without
``statsforecast`` installed, :func:`available` is False and nothing here runs.

Refitting at every step of a walk-forward is slow, so :meth:`AutoETS.rolling_predict`
refits every ``refit_every`` forecast origins on the last ``seq_len`` values, and
in between runs the fitted model forward over the newest window (the state is
updated from the data, the parameters are kept). ``predict`` (the
:class:`~predictor.models.base.Forecaster` protocol) fits each window afresh.
Forecasts and 80 % bounds are clipped at 0 (loads are never negative). Where
a window cannot be fitted (a constant one, say), the forecast is its last value
with a zero-width interval, and ``failures`` counts it.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np

from predictor.errors import ConfigError
from predictor.models.base import NOMINAL_COVERAGE, Prediction

_LEVEL = round(100 * NOMINAL_COVERAGE)


def available() -> bool:
    """Whether ``statsforecast`` can be imported."""
    return importlib.util.find_spec("statsforecast") is not None


def _model_class() -> Any:
    try:
        from statsforecast.models import AutoETS as _StatsAutoETS
    except ImportError as exc:
        raise ConfigError("AutoETS needs statsforecast: pip install 'reqcast[ets]'") from exc
    return _StatsAutoETS


class AutoETS:
    """A baseline per channel: AutoETS fitted on the last ``seq_len`` values."""

    kind = "baseline"
    name = "auto_ets"

    def __init__(
        self,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 500,
        season_length: int = 1,
        refit_every: int = 50,
    ) -> None:
        if refit_every < 1 or seq_len < 2 or season_length < 1:
            raise ConfigError("AutoETS needs refit_every >= 1, seq_len >= 2, season_length >= 1")
        self.horizon, self.channels, self.seq_len = horizon, channels, seq_len
        self.season_length, self.refit_every = season_length, refit_every
        self._cls = _model_class()

        self.failures = 0

    def _fit(self, y: np.ndarray) -> Any:
        """A fitted model, or None where ``y`` cannot be fitted."""
        if len(y) < 2 or np.ptp(y) == 0:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # divide-by-zero and the like on short windows
                return self._cls(season_length=self.season_length).fit(y)
        except Exception:  # statsforecast raises assorted errors on degenerate windows
            self.failures += 1
            return None

    def _forward(self, fitted: Any, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """Point, lower and upper ``[H]`` from ``fitted`` run over ``y``."""
        last = np.full(self.horizon, float(y[-1]) if len(y) else 0.0)
        if fitted is None:
            return last, last, last
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fitted.forward(y=y, h=self.horizon, level=[_LEVEL])
        except Exception:
            self.failures += 1
            return last, last, last
        return tuple(
            np.maximum(np.asarray(out[k], dtype=np.float64), 0.0)
            for k in ("mean", f"lo-{_LEVEL}", f"hi-{_LEVEL}")
        )

    def predict(self, windows: np.ndarray) -> Prediction:
        """Fit each window ``[B, L, C]`` and channel on its own (slow; for small batches)."""
        b, _, c = windows.shape
        point, lower, upper = (np.zeros((b, self.horizon, c)) for _ in range(3))
        for i in range(b):
            for j in range(c):
                y = np.asarray(windows[i, -self.seq_len :, j], dtype=np.float64)
                point[i, :, j], lower[i, :, j], upper[i, :, j] = self._forward(self._fit(y), y)
        return Prediction(point, np.minimum(lower, point), np.maximum(upper, point))

    def rolling_predict(self, series: np.ndarray, start: int = 0) -> Prediction:
        """Forecast after every row ``t >= start`` of ``series [N, C]`` from rows ``<= t`` only."""
        n, c = series.shape
        m = max(n - start, 0)
        point, lower, upper = (np.zeros((m, self.horizon, c)) for _ in range(3))
        for j in range(c):
            fitted = None
            for i, t in enumerate(range(start, n)):
                y = np.asarray(series[max(0, t + 1 - self.seq_len) : t + 1, j], dtype=np.float64)
                if fitted is None or i % self.refit_every == 0:
                    fitted = self._fit(y)
                point[i, :, j], lower[i, :, j], upper[i, :, j] = self._forward(fitted, y)
        return Prediction(point, np.minimum(lower, point), np.maximum(upper, point))
