"""Reference forecasters every trained model must beat: last value, rolling mean and
median, exponentially weighted moving average. All forecast a flat future.

Their interval is the empirical 10th to 90th percentile of the values in the
window (widened to include the point forecast), so it is comparable in meaning
to the models' 80 % interval.

>>> import numpy as np
>>> w = np.array([[[1.0, 10.0, 5.0], [3.0, 20.0, 5.0]]])  # [B=1, L=2, C=3]
>>> LastValue().predict(w).point.tolist()
[[[3.0, 20.0, 5.0]]]
>>> RollingMean(2).predict(w).point.tolist()
[[[2.0, 15.0, 5.0]]]
"""

from __future__ import annotations

import numpy as np

from predictor.models.base import QUANTILES, Prediction


class _Baseline:
    kind = "baseline"
    name = "baseline"

    def __init__(self, seq_len: int, horizon: int = 1, channels: int = 3) -> None:
        self.seq_len, self.horizon, self.channels = seq_len, horizon, channels

    def _point(self, windows: np.ndarray) -> np.ndarray:  # [B, L, C] -> [B, C]
        raise NotImplementedError

    def point(self, windows: np.ndarray) -> np.ndarray:
        """The point forecast ``[B, C]`` alone (what :meth:`predict` repeats over the
        horizon), without the interval's quantiles."""
        return self._point(windows[:, -self.seq_len :, :])

    def predict(self, windows: np.ndarray) -> Prediction:
        w = windows[:, -self.seq_len :, :]  # [B, L, C]
        point = self._point(w)  # [B, C]
        lo = np.minimum(np.quantile(w, QUANTILES[0], axis=1), point)
        hi = np.maximum(np.quantile(w, QUANTILES[-1], axis=1), point)

        def flat(v: np.ndarray) -> np.ndarray:  # [B, C] -> [B, H, C]
            return np.repeat(v[:, None, :], self.horizon, axis=1)

        return Prediction(flat(point), flat(lo), flat(hi))


class LastValue(_Baseline):
    """Tomorrow looks like today: the last observation (persistence)."""

    name = "last_value"

    def __init__(self, horizon: int = 1, channels: int = 3, seq_len: int = 10) -> None:
        # the window only feeds the interval; the point uses the last row
        super().__init__(seq_len, horizon, channels)

    def _point(self, windows: np.ndarray) -> np.ndarray:
        return windows[:, -1, :]


class RollingMean(_Baseline):
    """Mean of the last ``k`` observations."""

    def __init__(self, k: int = 10, horizon: int = 1, channels: int = 3) -> None:
        super().__init__(k, horizon, channels)
        self.name = f"mean_{k}"

    def _point(self, windows: np.ndarray) -> np.ndarray:
        return windows.mean(axis=1)


class RollingMedian(_Baseline):
    """Median of the last ``k`` observations."""

    def __init__(self, k: int = 10, horizon: int = 1, channels: int = 3) -> None:
        super().__init__(k, horizon, channels)
        self.name = f"median_{k}"

    def _point(self, windows: np.ndarray) -> np.ndarray:
        return np.median(windows, axis=1)


class EWMA(_Baseline):
    """Exponentially weighted mean over the window with smoothing ``alpha``."""

    def __init__(
        self, alpha: float = 0.3, seq_len: int = 30, horizon: int = 1, channels: int = 3
    ) -> None:
        super().__init__(seq_len, horizon, channels)
        self.alpha = alpha
        self.name = f"ewma_{alpha:g}"

    def _point(self, windows: np.ndarray) -> np.ndarray:
        n = windows.shape[1]
        weights = self.alpha * (1 - self.alpha) ** np.arange(n - 1, -1, -1)  # oldest first
        weights /= weights.sum()
        return np.einsum("blc,l->bc", windows, weights)


def default_baselines(
    horizon: int = 1, channels: int = 3, windows: tuple[int, ...] = (10, 50)
) -> list[_Baseline]:
    """The baseline set the accuracy benchmark compares against."""
    out: list[_Baseline] = [LastValue(horizon, channels)]
    for k in windows:
        out.append(RollingMean(k, horizon, channels))
        out.append(RollingMedian(k, horizon, channels))
    out.append(EWMA(0.3, 30, horizon, channels))
    return out
