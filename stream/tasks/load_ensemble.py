"""The recommended load forecast, ``ensemble``: every load expert aggregated online, per stream.

The experts are the load networks in their slots and the ones that need no training
(:func:`predictor.experts.load_baselines`, the planner peers of
:data:`predictor.experts.SERVE_PEERS`). Each stream has a
:class:`~predictor.ensemble.DelayedAggregator`: after each closed bin it learns from the
forecasts that targeted that bin, and combines the experts' new forecasts into the
published one, per quantity and horizon (BOA on the pinball loss of level 0.5 in
``log1p`` space). This is the same object, called in the same order, as the ``ensemble``
row of ``reqcast bench accuracy --task load`` (:func:`predictor.ensemble.replay`).

A network that has no model yet, or whose horizon is shorter, forecasts NaN: the rule
then leaves it out of that cell and renormalises over the others, so the ensemble
publishes from the first closed bin and a network joins when its first version arrives.
A newly swapped network version starts at the weight the rule gives a new expert (prior
1/K, no regret), in every stream: what the previous version earned or lost does not carry
over (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from predictor.ensemble import DelayedAggregator
from predictor.experts import SERVE_PEERS, load_baselines, load_peers
from predictor.features import pad_window
from predictor.load import LOAD_QUANTITIES
from stream.tasks.common import ExpertEnsemble

#: the name of the recommended load forecast
ENSEMBLE = "ensemble"


class LoadEnsemble(ExpertEnsemble):
    """Per-stream online aggregation of the load experts (module docstring)."""

    def __init__(
        self,
        horizons: Sequence[int],
        networks: Sequence[str],
        peers: tuple[str, ...] = SERVE_PEERS,
    ) -> None:
        self.horizons = tuple(horizons)
        top = max(self.horizons)
        super().__init__(networks, load_baselines(top) + load_peers(peers, top))

    def expert_points(self, histories: list[np.ndarray]) -> np.ndarray:
        """The untrained experts' points after each history ``[n_i, 3]``: ``[m, H, 3, E]``."""
        windows = np.stack([pad_window(h[-self.seq_len :], self.seq_len)[0] for h in histories])
        return np.stack([e.predict(windows).point for e in self.experts], axis=-1)

    def observe(self, stream: str, at: int, actual: np.ndarray) -> None:
        """Bin ``at`` of ``stream`` closed with ``actual`` ``[3]``."""
        agg = self._aggs.get(stream)
        if agg is not None:
            agg.observe(actual, at)

    def forecast(
        self, stream: str, at: int, networks: dict[str, np.ndarray], others: np.ndarray
    ) -> np.ndarray:
        """The published points ``[len(horizons), 3]`` after bin ``at``, from each network's
        points ``[H_model, 3]`` (missing: not ready) and the other experts' ``[H, 3, E]``."""
        x = np.full((len(self.horizons), len(LOAD_QUANTITIES), len(self.names)), np.nan)
        for i, h in enumerate(self.horizons):
            for j, name in enumerate(self.networks):
                point = networks.get(name)
                if point is not None and h <= len(point):
                    x[i, :, j] = point[h - 1]
            x[i, :, len(self.networks) :] = others[h - 1]
        agg = self._aggs.get(stream)
        if agg is None:
            agg = self._aggs[stream] = DelayedAggregator(
                self.names, self.horizons, len(LOAD_QUANTITIES)
            )
        return agg.forecast(x, at)

    def weights(self, stream: str) -> dict[int, np.ndarray]:
        """Per horizon, the current weights ``[3, K]`` of ``stream`` (empty: none yet)."""
        agg = self._aggs.get(stream)
        return {} if agg is None else {h: agg.weights(h) for h in self.horizons}

    def forget(self, stream: str) -> None:
        self._aggs.pop(stream, None)

    def clear(self) -> None:
        self._aggs.clear()

    def streams(self) -> list[str]:
        return list(self._aggs)
