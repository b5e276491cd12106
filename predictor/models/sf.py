"""statsforecast's AutoARIMA, AutoETS and Theta as load peers (the ``stats`` extra).

These are the library references beside our own numpy peers (:mod:`predictor.models.arima`,
:mod:`predictor.models.kalman`): ``sf_autoarima`` is the auto-ARIMA our ``arima`` peer
approximates (order by AICc over a wider space, exact likelihood, KPSS for ``d``),
``sf_autoets`` exponential smoothing with error, trend and season chosen by AICc, and
``sf_theta`` the Theta method (simple exponential smoothing with half the linear trend).
statsforecast holds pandas below 3, so it is an extra, not a dependency: without it
:func:`available` is False and building one of these peers is a :class:`ConfigError`
that names the extra.

Each fits one model per channel on the last ``seq_len`` bins. :meth:`SfPeer.predict`
(the :class:`~predictor.models.base.Forecaster` protocol) fits each window afresh.
:meth:`SfPeer.rolling_predict` (the walk-forward) refits every ``refit_every`` forecast
origins and in between runs the fitted model forward over the newest window (the state
is updated from the data, the parameters are kept), as the AutoETS baseline does
(:mod:`predictor.models.ets`, built on this class). Forecasts and the model's own 80 %
bounds are clipped at 0. Where a window cannot be fitted (a constant one, say, or one
the library rejects), the forecast is its last value with a zero-width interval;
``failures`` counts the library's refusals.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np

from predictor.errors import ConfigError
from predictor.models.base import NOMINAL_COVERAGE, Prediction

_LEVEL = round(100 * NOMINAL_COVERAGE)
#: the extra that installs statsforecast (``ets`` remains, the AutoETS baseline's old name)
EXTRA = "stats"
#: peer name -> statsforecast model class
MODELS = {"sf_autoarima": "AutoARIMA", "sf_autoets": "AutoETS", "sf_theta": "Theta"}


def available() -> bool:
    """Whether ``statsforecast`` can be imported."""
    return importlib.util.find_spec("statsforecast") is not None


def model_class(model: str, who: str) -> Any:
    """statsforecast's ``model`` class; a ConfigError naming the extra without statsforecast."""
    try:
        import statsforecast.models as sf_models
    except ImportError as exc:
        raise ConfigError(
            f"{who} needs statsforecast, which is not installed: pip install 'reqcast[{EXTRA}]'"
        ) from exc
    return getattr(sf_models, model)


class SfPeer:
    """One statsforecast model per channel on the last ``seq_len`` values (module docstring)."""

    kind = "peer"

    def __init__(
        self,
        name: str,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 200,
        refit_every: int = 50,
        **model_args: Any,
    ) -> None:
        if name not in MODELS:
            raise ConfigError(f"unknown statsforecast peer {name}; known: {', '.join(MODELS)}")
        self._setup(name, MODELS[name], horizon, channels, seq_len, refit_every, model_args)

    def _setup(
        self,
        name: str,
        model: str,
        horizon: int,
        channels: int,
        seq_len: int,
        refit_every: int,
        model_args: dict[str, Any],
    ) -> None:
        if horizon < 1 or refit_every < 1 or seq_len < 2:
            raise ConfigError(f"{name} needs horizon >= 1, refit_every >= 1 and seq_len >= 2")
        self.name = name
        self.horizon, self.channels, self.seq_len = horizon, channels, seq_len
        self.refit_every = refit_every
        self._cls = model_class(model, name)
        self._args = model_args
        self.failures = 0

    def _fit(self, y: np.ndarray) -> Any:
        """A fitted model, or None where ``y`` cannot be fitted."""
        if len(y) < 2 or np.ptp(y) == 0:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # divide-by-zero and the like on short windows
                return self._cls(**self._args).fit(y)
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
        parts = tuple(
            np.asarray(out[k], dtype=np.float64) for k in ("mean", f"lo-{_LEVEL}", f"hi-{_LEVEL}")
        )
        if not all(np.isfinite(p).all() for p in parts):
            self.failures += 1
            return last, last, last
        return tuple(np.maximum(p, 0.0) for p in parts)

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
