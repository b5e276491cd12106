"""The ``ensemble`` next-request forecast: every next-request expert aggregated online, per stream.

The experts are the next-request networks in their slots and the baselines that need no
training (:func:`predictor.models.baselines.default_baselines`: last value, means and
medians over 10 and 50 requests, EWMA), the same set ``reqcast bench accuracy`` scores.
Each stream has a :class:`~predictor.ensemble.DelayedAggregator` of horizon 1 over the
three quantities (gap, request tokens, response tokens), BOA on the pinball loss of level
0.5 in ``log1p`` space, whose "bins" are the stream's events: the forecast made after
event ``i`` matures when event ``i + 1`` arrives. At each event, in this order, the
aggregator learns from the forecast that targeted it, then combines the experts' new
forecasts into the published one. This is the same object, called in the same order, as
the ``ensemble`` row of ``reqcast bench accuracy`` (:func:`predictor.ensemble.replay`).

A network that has no model yet forecasts NaN: the rule then leaves it out and
renormalises over the others, so the ensemble publishes from the first event and a network
joins when its first version arrives. A newly swapped network version starts at the
weight the rule gives a new expert (prior 1/K, no regret), in every stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from predictor.ensemble import DelayedAggregator
from predictor.features import QUANTITIES
from predictor.models.baselines import default_baselines
from stream.tasks.common import ExpertEnsemble

#: the name of the aggregated next-request forecast
ENSEMBLE = "ensemble"
#: the one horizon of a next-request forecast: the next event
HORIZON = 1


class NextRequestEnsemble(ExpertEnsemble):
    """Per-stream online aggregation of the next-request experts (module docstring)."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.baselines = default_baselines(horizon=HORIZON, channels=len(QUANTITIES))
        super().__init__(networks, self.baselines)
        #: per stream, the events aggregated so far: the index of its next event
        self._seen: dict[str, int] = {}

    def expert_points(self, windows: np.ndarray) -> np.ndarray:
        """The baselines' points ``[n, 3, E]`` after windows ``[n, L >= seq_len, 3]``."""
        return np.stack([e.point(windows) for e in self.baselines], axis=-1)

    def step(
        self,
        stream: str,
        actual: np.ndarray,
        networks: dict[str, np.ndarray],
        others: np.ndarray,
    ) -> np.ndarray:
        """The published points ``[m, 3]`` after each of ``stream``'s next ``m`` events, in
        order: event ``j``'s own row ``actual[j]`` first matures the forecast made after the
        event before it, then ``networks[name][j]`` (``[m, 3]`` each; a network missing is
        not ready) and ``others[j]`` (``[m, 3, E]``) are combined."""
        m = len(actual)
        x = np.full((m, 1, len(QUANTITIES), len(self.names)), np.nan)
        for j, name in enumerate(self.networks):
            point = networks.get(name)
            if point is not None:
                x[:, 0, :, j] = point
        x[:, 0, :, len(self.networks) :] = others
        agg = self._aggs.get(stream)
        if agg is None:
            agg = self._aggs[stream] = DelayedAggregator(self.names, (HORIZON,), len(QUANTITIES))
        first = self._seen.get(stream, 0)
        out = np.empty((m, len(QUANTITIES)))
        for i in range(m):
            agg.observe(actual[i], first + i)
            out[i] = agg.forecast(x[i], first + i)[0]
        self._seen[stream] = first + m
        return out

    def weights(self, stream: str) -> np.ndarray | None:
        """The current weights ``[3, K]`` of ``stream`` (None: nothing aggregated yet)."""
        agg = self._aggs.get(stream)
        return None if agg is None else agg.weights(HORIZON)

    def forget(self, stream: str) -> None:
        self._aggs.pop(stream, None)
        self._seen.pop(stream, None)

    def clear(self) -> None:
        self._aggs.clear()
        self._seen.clear()

    def streams(self) -> list[str]:
        return list(self._aggs)
