"""Online scoring: rolling error and interval coverage of forecasts once their outcome is known.

>>> import numpy as np
>>> s = RollingScores(size=3)
>>> s.add("lstm", "gap_s", np.array([1.0, 3.0]), np.array([True, False]))
>>> s.mae("lstm", "gap_s"), s.coverage("lstm", "gap_s")
(2.0, 0.5)
>>> s.best("gap_s", ["lstm"], min_count=1)
'lstm'
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from predictor.ring import Ring

#: the rolling scores behind a ``best`` load forecast: errors kept per model, quantity and
#: horizon, and how many each model needs before it can be chosen
LOAD_BEST_SIZE = 500
LOAD_BEST_MIN_COUNT = 5


def score_key(quantity: str, horizon: int) -> str:
    """The score name of a load quantity at a horizon (``requests_per_s@6``)."""
    return f"{quantity}@{horizon}"


class RollingScores:
    """Per (model, quantity[, horizon]) rolling buffers of absolute errors and hit flags."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._err: dict[tuple[str, str], Ring] = {}
        self._hit: dict[tuple[str, str], Ring] = {}
        self.scored: dict[str, int] = {}

    def add(self, model: str, quantity: str, abs_errors: np.ndarray, covered: np.ndarray) -> None:
        key = (model, quantity)
        if key not in self._err:
            self._err[key] = Ring(self.size)
            self._hit[key] = Ring(self.size)
        self._err[key].extend(abs_errors)
        self._hit[key].extend(covered)
        self.scored[model] = self.scored.get(model, 0) + len(abs_errors)

    def tracked(self) -> list[tuple[str, str]]:
        return list(self._err)

    def count(self, model: str, quantity: str) -> int:
        return len(self._err.get((model, quantity), ()))

    def mae(self, model: str, quantity: str) -> float | None:
        buf = self._err.get((model, quantity))
        return buf.mean() if buf else None

    def coverage(self, model: str, quantity: str) -> float | None:
        buf = self._hit.get((model, quantity))
        return buf.mean() if buf else None

    def model_coverage(self, model: str) -> float | None:
        """Mean coverage over every quantity of ``model`` (its online ``confidence``)."""
        vals = [buf.mean() for (m, _), buf in self._hit.items() if m == model and buf]
        return float(np.mean(vals)) if vals else None

    def best(self, quantity: str, models: Iterable[str], min_count: int = 20) -> str | None:
        """The model with the lowest rolling MAE on ``quantity`` among ``models`` that have at
        least ``min_count`` outcomes of it (None while none has)."""
        scored = [
            (self.mae(m, quantity), m) for m in models if self.count(m, quantity) >= min_count
        ]
        scored = [(e, m) for e, m in scored if e is not None]
        return min(scored)[1] if scored else None
