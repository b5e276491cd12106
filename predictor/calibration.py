"""Online conformal calibration of intervals, per model, quantity and horizon.

Each matured forecast leaves a nonconformity score: how far (in ``log1p``
space) the outcome fell outside the model's own interval, negative when it
was inside. The widening applied to new intervals is a quantile of the last
``size`` scores, so when traffic drifts and outcomes start to escape, intervals
widen, and when they are too wide, they narrow. A lower bound of 0 is the floor
of every quantity: it is never raised, and an outcome of 0 is inside it, not on
its edge (otherwise the empty bins of sparse traffic, scored 0 each, would pin
the widening at 0 and a too-wide interval could not narrow).

The quantile's level adapts too (adaptive conformal inference, Gibbs and Candès,
2021): it starts at the nominal coverage and, with every outcome, moves up by
``step * coverage`` when the calibrated interval missed it and down by
``step * (1 - coverage)`` when it held it (at coverage 0.8: up 0.8 steps, down 0.2).
Over any long run the calibrated intervals then cover close to the nominal share of
outcomes, also where a fixed quantile cannot: on small counts, say, where one width
covers 66 % of bins and the next 88 % (the level then alternates between them;
``tests/predictor/test_calibration.py``).

>>> import numpy as np
>>> c = OnlineConformal(size=100, min_count=1)
>>> c.update(("lstm", "gap_s", 1), np.array([0.5]), np.array([2.0]), np.array([4.0]))
>>> round(c.widen(("lstm", "gap_s", 1)), 3)  # outcome 0.5 sat below [2, 4]
0.693
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from predictor.load import LOAD_QUANTITIES
from predictor.models.base import NOMINAL_COVERAGE, Prediction
from predictor.ring import Ring

#: the score of an outcome no widening can exclude (a floor lower bound, an infinite
#: upper one): finite, so quantiles of the scores stay finite, and below any real score
INSIDE = -1e3


def scores(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nonconformity of outcomes against intervals, in ``log1p`` space (> 0: outside).

    Every quantity is non-negative, so a lower bound of 0 is the floor: no widening can
    lower it and no narrowing raises it (:func:`widen_interval`). Against such an
    interval only the upper bound can be missed, and only its distance counts; an
    outcome of 0 is then well inside, not on the edge.
    """
    y, lo, hi = (np.log1p(np.maximum(v, 0.0)) for v in (actual, lower, upper))
    below = np.where(np.isnan(lo) | (lo > 0.0), lo - y, INSIDE)
    return np.maximum(np.maximum(below, y - hi), INSIDE)  # NaN stays NaN


def widen_interval(
    point: np.ndarray, lower: np.ndarray, upper: np.ndarray, w: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a widening ``w`` (log1p space; negative narrows, never past the point); a lower
    bound at the floor (0) stays there (see :func:`scores`)."""
    lower = np.maximum(lower, 0.0)
    lo = np.where(np.isnan(lower) | (lower > 0.0), np.expm1(np.log1p(lower) - w), 0.0)
    hi = np.expm1(np.log1p(np.maximum(upper, 0.0)) + w)
    return np.maximum(np.minimum(lo, point), 0.0), np.maximum(hi, point)


#: adaptation step per outcome for next-request forecasts (thousands of outcomes a minute)
STEP_EVENTS = 0.005
#: adaptation step per outcome for load forecasts (one outcome a bin per horizon): the
#: level can cross from 0.8 to 0.3 within about fifty bins
STEP_BINS = 0.05
#: scores kept per load model, quantity and horizon, and how many before they widen
LOAD_SIZE, LOAD_MIN_COUNT = 500, 20
#: bins of history whose forecasts prime the calibration of load intervals before the
#: first one is published: ``min_count`` outcomes even at a 30-bin horizon
PRIME_BINS = 60


class OnlineConformal:
    """Rolling buffers of nonconformity scores, an adaptive level, and the widening they imply."""

    def __init__(
        self,
        size: int = 500,
        min_count: int = 30,
        coverage: float = NOMINAL_COVERAGE,
        step: float = STEP_EVENTS,
    ) -> None:
        self.size, self.min_count, self.coverage, self.step = size, min_count, coverage, step
        self._scores: dict[Hashable, Ring] = {}
        self._level: dict[Hashable, float] = {}
        self._widen: dict[Hashable, float] = {}  # until the next update of the key

    def update(
        self, key: Hashable, actual: np.ndarray, lower: np.ndarray, upper: np.ndarray
    ) -> None:
        """Record outcomes against the model's *uncalibrated* intervals."""
        buf = self._scores.get(key)
        if buf is None:
            buf = self._scores[key] = Ring(self.size)
        s = scores(actual, lower, upper)
        if len(buf) >= self.min_count:  # calibrated intervals were out: adapt the level
            missed = int(np.count_nonzero(s > self.widen(key)))
            level = self.level(key) + self.step * (missed - len(s) * (1.0 - self.coverage))
            self._level[key] = min(1.0, max(0.0, level))
        buf.extend(s)
        self._widen.pop(key, None)

    def count(self, key: Hashable) -> int:
        """Scores held for ``key``."""
        buf = self._scores.get(key)
        return len(buf) if buf is not None else 0

    def level(self, key: Hashable) -> float:
        """The quantile level of ``key``'s scores that sets its widening now."""
        return self._level.get(key, self.coverage)

    def widen(self, key: Hashable) -> float:
        """Current widening for ``key`` (0 until ``min_count`` scores are in)."""
        cached = self._widen.get(key)
        if cached is not None:
            return cached
        buf = self._scores.get(key)
        if buf is None or len(buf) < self.min_count:
            return 0.0
        w = self._widen[key] = quantile(buf.values(), self.level(key))
        return w


def load_conformal() -> OnlineConformal:
    """The online calibration of load intervals, as the service keeps it."""
    return OnlineConformal(LOAD_SIZE, LOAD_MIN_COUNT, step=STEP_BINS)


def quantile(values: np.ndarray, level: float) -> float:
    """``np.quantile(values, level)`` (linear interpolation) through one partial sort.

    >>> v = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    >>> [quantile(v, q) for q in (0.0, 0.3, 0.8, 1.0)] == [np.quantile(v, q) for q in (0.0, 0.3, 0.8, 1.0)]
    True
    """
    pos = level * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def calibrate_online(
    name: str,
    parts: Sequence[tuple[np.ndarray, int, Prediction]],
    horizons: Sequence[int],
    conformal: OnlineConformal,
) -> list[Prediction]:
    """The published (calibrated) intervals of ``name``'s forecasts, replayed in time order.

    ``parts`` holds per stream its bins, first origin and raw forecasts. At each bin
    ``t`` (streams in turn) the forecasts that targeted ``t`` are scored into
    ``conformal`` first, then the forecast made at ``t`` is widened by the current
    widening. Horizons not in ``horizons`` keep their raw interval.
    """
    lowers = [p.lower.copy() for _, _, p in parts]
    uppers = [p.upper.copy() for _, _, p in parts]
    first = min(start for _, start, _ in parts)
    last = max(start + len(p) for _, start, p in parts)
    for t in range(first, last):
        for k, (series, start, pred) in enumerate(parts):
            i = t - start
            if not 0 <= i < len(pred):
                continue
            for h in horizons:  # bin t is known: score the forecasts that targeted it
                j = i - h
                if j < 0:
                    continue
                for c, q in enumerate(LOAD_QUANTITIES):
                    conformal.update(
                        (name, q, h),
                        series[t, c : c + 1],
                        pred.lower[j, h - 1, c : c + 1],
                        pred.upper[j, h - 1, c : c + 1],
                    )
            for h in horizons:
                w = np.array([conformal.widen((name, q, h)) for q in LOAD_QUANTITIES])
                lo, hi = widen_interval(
                    pred.point[i, h - 1], pred.lower[i, h - 1], pred.upper[i, h - 1], w
                )
                lowers[k][i, h - 1], uppers[k][i, h - 1] = lo, hi
    return [
        Prediction(p.point, lo, hi) for (_, _, p), lo, hi in zip(parts, lowers, uppers, strict=True)
    ]
