"""Online conformal calibration of intervals, per model, quantity and horizon.

Each matured forecast leaves a nonconformity score: how far (in ``log1p``
space) the outcome fell outside the model's own interval, negative when it
was inside. The widening applied to new intervals is the nominal-coverage
quantile of the last ``size`` scores, so when traffic drifts and outcomes start
to escape, intervals widen, and when they are too wide, they narrow. With
exchangeable recent scores the calibrated interval covers about 80 %.

>>> import numpy as np
>>> c = OnlineConformal(size=100, min_count=1)
>>> c.update(("lstm", "gap_s", 1), np.array([0.5]), np.array([2.0]), np.array([4.0]))
>>> round(c.widen(("lstm", "gap_s", 1)), 3)  # outcome 0.5 sat below [2, 4]
0.693
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

import numpy as np

from predictor.models.base import NOMINAL_COVERAGE


def scores(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nonconformity of outcomes against intervals, in ``log1p`` space (> 0: outside)."""
    y, lo, hi = (np.log1p(np.maximum(v, 0.0)) for v in (actual, lower, upper))
    return np.maximum(lo - y, y - hi)


def widen_interval(
    point: np.ndarray, lower: np.ndarray, upper: np.ndarray, w: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a widening ``w`` (log1p space; negative narrows, never past the point)."""
    lo = np.expm1(np.log1p(np.maximum(lower, 0.0)) - w)
    hi = np.expm1(np.log1p(np.maximum(upper, 0.0)) + w)
    return np.maximum(np.minimum(lo, point), 0.0), np.maximum(hi, point)


class OnlineConformal:
    """Rolling buffers of nonconformity scores and the widening they imply."""

    def __init__(
        self, size: int = 500, min_count: int = 30, coverage: float = NOMINAL_COVERAGE
    ) -> None:
        self.size, self.min_count, self.coverage = size, min_count, coverage
        self._scores: dict[Hashable, deque[float]] = {}

    def update(
        self, key: Hashable, actual: np.ndarray, lower: np.ndarray, upper: np.ndarray
    ) -> None:
        """Record outcomes against the model's *uncalibrated* intervals."""
        buf = self._scores.get(key)
        if buf is None:
            buf = self._scores[key] = deque(maxlen=self.size)
        buf.extend(scores(actual, lower, upper).tolist())

    def widen(self, key: Hashable) -> float:
        """Current widening for ``key`` (0 until ``min_count`` scores are in)."""
        buf = self._scores.get(key)
        if buf is None or len(buf) < self.min_count:
            return 0.0
        n = len(buf)
        level = min(1.0, np.ceil((n + 1) * self.coverage) / n)
        return float(np.quantile(np.fromiter(buf, float, n), level))
