"""The ``ensemble`` load forecast: experts aggregated online, with delayed updates.

One :class:`DelayedAggregator` per load stream keeps one
:class:`~predictor.aggregation.OnlineAggregator` per horizon (cells: the quantities),
by default BOA on the pinball loss of level 0.5 in ``log1p`` space (the setting that
stayed within about 1.00x of the best single expert on synthetic traces, where the
raw-space rule diverged; :mod:`predictor.aggregation`). At every bin, in this order:

1. :meth:`DelayedAggregator.observe` takes the bin's outcome: the forecast made ``h``
   bins ago for horizon ``h`` has matured, and only that one updates horizon ``h``'s
   weights, with the aggregate that was published for it;
2. :meth:`DelayedAggregator.forecast` combines the experts' forecasts made now into
   the published point forecast per horizon, from the weights as they stand.

So a published forecast depends only on outcomes known when it was made: no
look-ahead. :func:`replay` runs this over a recorded walk-forward (the bench's
``ensemble`` row); the serving loop can hold a :class:`DelayedAggregator` per stream
and call the same two methods, so the bench row is what the service would publish.

>>> import numpy as np
>>> series = np.arange(1.0, 101.0)[:, None]                  # [N, 1]
>>> exact = series[1:, None, :]                               # row t: the bin after t
>>> fc = np.stack([exact, exact + 10.0], axis=-1)             # [T, H=1, C=1, K=2]
>>> out = replay(series, 0, fc, (1,), ["exact", "off"])
>>> bool(abs(out[-1, 0, 0] - series[-1, 0]) < 0.5)
True
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from predictor.aggregation import OnlineAggregator
from predictor.errors import ConfigError

#: the aggregation the ``ensemble`` row uses (module docstring)
RULE, SPACE, TAU = "boa", "log1p", 0.5


class DelayedAggregator:
    """Per-horizon online aggregation of ``K`` experts over ``channels`` quantities,
    each horizon learning from its own matured forecasts (module docstring).

    Bins are numbered (``at``): a forecast made after bin ``at`` for horizon ``h`` targets
    bin ``at + h`` and is matured by :meth:`observe` of that bin. Bins may be skipped (a
    long gap in the traffic): a forecast whose target was never observed is dropped once a
    later bin is.
    """

    def __init__(
        self,
        names: Sequence[str],
        horizons: Sequence[int],
        channels: int,
        rule: str = RULE,
        space: str = SPACE,
        tau: float = TAU,
    ) -> None:
        if not horizons or min(horizons) < 1:
            raise ConfigError(f"aggregation horizons must be whole bins >= 1, not {horizons}")
        self.names, self.horizons = list(names), tuple(horizons)
        self._aggs = {
            h: OnlineAggregator(self.names, cells=channels, tau=tau, rule=rule, space=space)
            for h in self.horizons
        }
        # per horizon: (target bin, expert forecasts [C, K], published [C]), oldest first
        self._pending: dict[int, deque[tuple[int, np.ndarray, np.ndarray]]] = {
            h: deque() for h in self.horizons
        }

    def observe(self, outcome: np.ndarray, at: int) -> None:
        """Bin ``at`` is known (``[C]``): each horizon learns from its forecast for that bin."""
        y = np.asarray(outcome, dtype=np.float64)
        for h in self.horizons:
            queue = self._pending[h]
            while queue and queue[0][0] < at:  # its target bin was skipped
                queue.popleft()
            if queue and queue[0][0] == at:
                _, x, published = queue.popleft()
                self._aggs[h].update(x, y, published)

    def forecast(self, experts: np.ndarray, at: int) -> np.ndarray:
        """Publish ``[len(horizons), C]`` after bin ``at`` from the experts' forecasts
        ``[len(horizons), C, K]`` made now (NaN where an expert has nothing to say)."""
        x = np.asarray(experts, dtype=np.float64)
        out = np.empty(x.shape[:2])
        for i, h in enumerate(self.horizons):
            out[i] = self._aggs[h].aggregate(x[i])
            self._pending[h].append((at + h, x[i].copy(), out[i].copy()))
        return out

    def renew(self, name: str) -> None:
        """Expert ``name`` was replaced (a new version): every horizon starts it afresh."""
        for agg in self._aggs.values():
            agg.renew_expert(name)

    def weights(self, horizon: int) -> np.ndarray:
        """Current weights ``[C, K]`` of ``horizon``."""
        return self._aggs[horizon].weights()


def replay(
    series: np.ndarray,
    start: int,
    forecasts: np.ndarray,
    horizons: Sequence[int],
    names: Sequence[str],
    rule: str = RULE,
    space: str = SPACE,
    tau: float = TAU,
) -> np.ndarray:
    """The ensemble's published points ``[T, H, C]`` over a recorded walk, in time order.

    ``forecasts [T, H, C, K]`` are the experts' points made after bins ``start ..
    start+T-1`` of ``series [N, C]`` (row ``i`` forecasts bins ``start+i+1 ..
    start+i+H``). Before the forecast after bin ``t`` is published, bin ``t`` is
    observed, maturing the forecasts that targeted it. Horizon steps not in
    ``horizons`` are NaN. ``rule``, ``space`` and ``tau`` are :class:`DelayedAggregator`'s.
    """
    t_count, h_count, channels, k = forecasts.shape
    if k != len(names):
        raise ValueError(f"{k} experts' forecasts for {len(names)} names")
    if max(horizons) > h_count:
        raise ValueError(f"horizon {max(horizons)} beyond the {h_count} forecast steps")
    agg = DelayedAggregator(names, horizons, channels, rule, space, tau)
    cols = [h - 1 for h in agg.horizons]
    out = np.full((t_count, h_count, channels), np.nan)
    for i in range(t_count):
        agg.observe(series[start + i], start + i)
        out[i, cols] = agg.forecast(forecasts[i, cols], start + i)
    return out
