"""Dynamo's Prophet load predictor run by Prophet itself (the ``prophet`` extra).

NVIDIA Dynamo's SLA planner offers Meta's Prophet as a load predictor: at every
adjustment interval it fits a default ``Prophet()`` to the last ``window`` values of the
series, stamped one second apart whatever the real interval (so no daily or weekly
season can be found in a short window), and forecasts the next step. This peer does the
same per window and channel, for ``horizon`` steps ahead, with Prophet's own 80 %
interval (``interval_width=0.8``). Forecasts and bounds are clipped at 0; a window
Prophet cannot fit (a constant one, say) forecasts its last value with a zero-width
interval and counts a failure when the library raised.

A fit costs tens of milliseconds (Stan's optimiser, per window and quantity), so the
bench scores it only when asked (``--peers prophet``) and the service never aggregates
it. Prophet does not hold pandas back, but it brings Stan, hence an extra of its own.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np

from predictor.errors import ConfigError
from predictor.models.base import NOMINAL_COVERAGE, Prediction

EXTRA = "prophet"
#: values per fit in Dynamo's planner
WINDOW = 50


def available() -> bool:
    """Whether ``prophet`` can be imported."""
    return importlib.util.find_spec("prophet") is not None


def _prophet_class() -> Any:
    # cmdstanpy and prophet log every fit at INFO (and a missing plotly at import), with
    # handlers of their own
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).disabled = True
    try:
        from prophet import Prophet
    except ImportError as exc:
        raise ConfigError(
            f"prophet needs the prophet library, which is not installed: pip install 'reqcast[{EXTRA}]'"
        ) from exc
    return Prophet


class ProphetPeer:
    """A default Prophet fitted to each window's last ``window`` values (module docstring)."""

    kind = "peer"
    name = "prophet"

    def __init__(self, horizon: int = 1, channels: int = 3, window: int = WINDOW) -> None:
        if horizon < 1 or window < 2:
            raise ConfigError("prophet needs horizon >= 1 and window >= 2")
        self.horizon, self.channels, self.window = horizon, channels, window
        self.seq_len = window  # the generic walk's window
        self._cls = _prophet_class()
        self.failures = 0

    def _one(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point, lower and upper ``[H]`` after ``y``."""
        last = np.full(self.horizon, float(y[-1]) if len(y) else 0.0)
        if len(y) < 2 or np.ptp(y) == 0:
            return last, last, last
        import pandas as pd

        stamps = pd.date_range("2024-01-01", periods=len(y) + self.horizon, freq="s")
        try:
            model = self._cls(interval_width=NOMINAL_COVERAGE)
            model.fit(pd.DataFrame({"ds": stamps[: len(y)], "y": y}))
            out = model.predict(pd.DataFrame({"ds": stamps[len(y) :]}))
        except Exception:  # Stan's optimiser and Prophet raise assorted errors
            self.failures += 1
            return last, last, last
        parts = [out[k].to_numpy(dtype=np.float64) for k in ("yhat", "yhat_lower", "yhat_upper")]
        if not all(np.isfinite(p).all() for p in parts):
            self.failures += 1
            return last, last, last
        point, lower, upper = (np.maximum(p, 0.0) for p in parts)
        return point, np.minimum(lower, point), np.maximum(upper, point)

    def predict(self, windows: np.ndarray) -> Prediction:
        """Fit each window ``[B, L, C]`` and channel on its own."""
        w = np.asarray(windows[:, -self.window :, :], dtype=np.float64)
        b, _, c = w.shape
        point, lower, upper = (np.zeros((b, self.horizon, c)) for _ in range(3))
        for i in range(b):
            for j in range(c):
                point[i, :, j], lower[i, :, j], upper[i, :, j] = self._one(w[i, :, j])
        return Prediction(point, lower, upper)
