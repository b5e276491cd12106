"""The ``ensemble`` row of the next-request walk-forward: every expert aggregated online.

Per stream, the experts' next-request forecasts over the test period (the networks and
the baselines the walk-forward scored) are replayed through
:func:`predictor.ensemble.replay` with horizon 1, an event a step: BOA on the pinball loss
of level 0.5 in ``log1p`` space per quantity, starting from equal weights at the first
test origin (the networks' forecasts of their training rows would flatter them) and
learning from each forecast once the next request is known. This is what the service's
``--next-request-ensemble`` publishes (:mod:`stream.tasks.next_ensemble`) for a stream it
serves from that origin on: the same aggregator, called in the same order.

The interval is the online conformal calibration the service applies (one buffer per
quantity, :class:`~predictor.calibration.OnlineConformal` with the service's settings)
around a zero-width interval at the point, streams in turn, each forecast widened by the
scores of the outcomes known before it. The service widens a micro-batch's forecasts
together and interleaves its streams in time, so its intervals differ in detail; its
points do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from predictor.calibration import OnlineConformal, widen_interval
from predictor.ensemble import replay
from predictor.features import QUANTITIES
from predictor.models.base import Prediction

#: the row's name (and kind: it is neither a trained model nor a baseline)
ENSEMBLE = "ensemble"


def ensemble_forecasts(
    streams: Sequence[tuple[np.ndarray, int]], points: Mapping[str, Sequence[np.ndarray]]
) -> list[Prediction]:
    """Per stream, the ensemble's calibrated forecasts ``[N - cut, 1, 3]`` after rows
    ``cut-1 .. N-2``, from ``points[expert][k]``: that expert's points ``[N - cut, 3]``
    after the same rows of stream ``k`` (module docstring)."""
    names = list(points)
    conformal = OnlineConformal()
    keys = [(ENSEMBLE, q) for q in QUANTITIES]
    out = []
    for k, (series, cut) in enumerate(streams):
        experts = np.stack([points[n][k] for n in names], axis=-1)[:, None]  # [T, 1, 3, K]
        point = replay(series, cut - 1, experts, (1,), names)[:, 0]  # [T, 3]
        lower, upper = np.empty_like(point), np.empty_like(point)
        for i, p in enumerate(point):
            widen = np.array([conformal.widen(key) for key in keys])
            lower[i], upper[i] = widen_interval(p, p, p, widen)
            y = series[cut + i]
            for c, key in enumerate(keys):
                conformal.update(key, y[c : c + 1], p[c : c + 1], p[c : c + 1])
        out.append(Prediction(point[:, None], lower[:, None], upper[:, None]))
    return out
