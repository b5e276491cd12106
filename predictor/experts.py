"""The load experts that need no training, by name: the flat baselines and the planner peers.

Beside the trained networks these are the experts the load ensemble aggregates
(:mod:`predictor.ensemble`), in the walk-forward bench and in the service alike. Each is a
:class:`~predictor.models.base.Forecaster` over windows of binned load ``[B, L, 3]``.

The peers reproduce the one-step load predictors of NVIDIA Dynamo's SLA planner: a Kalman
local linear trend (raw and ``log1p``) and auto-ARIMA. Auto-ARIMA fits each window
afresh (about 7 ms for a 512-bin window on one core), so the service leaves it out
(:data:`SERVE_PEERS`): rebuilding the ensemble from a partition's history replays every
expert over up to 512 bins per stream on each assignment.

The library peers (:data:`LIBRARY_PEERS`) are well-kept references beside those:
statsforecast's AutoARIMA, AutoETS and Theta (:mod:`predictor.models.sf`) and filterpy's
Kalman filter, the one Dynamo runs (:mod:`predictor.models.filterpy_kalman`). They come
with the ``stats`` extra (statsforecast holds pandas below 3), only the bench scores them,
and only when asked: one whose library is missing is a one-line :class:`ConfigError`
that names the extra. None suits the serve path: a window fitted afresh (200 bins, three
quantities, one busy core) costs about 710 ms with statsforecast's AutoARIMA, 38 ms with
AutoETS, 19 ms with Theta, where our ``arima``, left out for its 7 ms, is cheaper; and
``filterpy_kalman`` (3.6 ms) forecasts what ``kalman`` (1.1 ms) does. ``prophet``
(:mod:`predictor.models.prophet_peer`, the ``prophet`` extra: Prophet brings Stan)
fits a Prophet per window and quantity as Dynamo's planner does, tens of milliseconds
each.
"""

from __future__ import annotations

from collections.abc import Callable

from predictor.errors import ConfigError
from predictor.models import filterpy_kalman, prophet_peer, sf
from predictor.models.arima import ArimaPeer
from predictor.models.base import Forecaster
from predictor.models.baselines import EWMA, LastValue, RollingMean, RollingMedian
from predictor.models.kalman import KalmanTrend

#: our own numpy planner peers (the bench's default)
PEERS = ("kalman", "kalman_log1p", "arima")
#: the library peers, each with the library it needs (extras: :data:`EXTRAS`)
LIBRARY_PEERS = {
    "sf_autoarima": "statsforecast",
    "sf_autoets": "statsforecast",
    "sf_theta": "statsforecast",
    "filterpy_kalman": "filterpy",
    "prophet": "prophet",
}
#: the extra that installs each library
EXTRAS = {
    "statsforecast": sf.EXTRA,
    "filterpy": filterpy_kalman.EXTRA,
    "prophet": prophet_peer.EXTRA,
}
#: every peer :func:`load_peers` knows
KNOWN_PEERS = (*PEERS, *LIBRARY_PEERS)
#: the peers the service aggregates (module docstring)
SERVE_PEERS = ("kalman", "kalman_log1p")


def load_baselines(horizon: int, channels: int = 3) -> list[Forecaster]:
    """Persistence, means over 6 and 30 bins, median over 30, EWMA: the flat load baselines."""
    return [
        LastValue(horizon, channels),
        RollingMean(6, horizon, channels),
        RollingMean(30, horizon, channels),
        RollingMedian(30, horizon, channels),
        EWMA(0.3, 30, horizon, channels),
    ]


def library_available(library: str) -> bool:
    """Whether ``library`` (``statsforecast``, ``filterpy`` or ``prophet``) can be imported."""
    checks = {
        "statsforecast": sf.available,
        "filterpy": filterpy_kalman.available,
        "prophet": prophet_peer.available,
    }
    return checks[library]()


def check_peers(names: tuple[str, ...]) -> None:
    """A ConfigError for an unknown peer, or for a library peer whose library is missing."""
    unknown = sorted(set(names) - set(KNOWN_PEERS))
    if unknown:
        raise ConfigError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PEERS)}")
    for name in names:
        library = LIBRARY_PEERS.get(name)
        if library is not None and not library_available(library):
            raise ConfigError(
                f"peer {name} needs {library}, which is not installed: "
                f"pip install 'reqcast[{EXTRAS[library]}]'"
            )


def load_peers(names: tuple[str, ...], horizon: int, channels: int = 3) -> list[Forecaster]:
    """The load peers by name (``kind: "peer"``): the Dynamo planner's predictors and the
    library references (module docstring)."""
    check_peers(names)
    make: dict[str, Callable[[], Forecaster]] = {
        "kalman": lambda: KalmanTrend(horizon, channels),
        "kalman_log1p": lambda: KalmanTrend(horizon, channels, log1p=True),
        "arima": lambda: ArimaPeer(horizon, channels),
        "filterpy_kalman": lambda: filterpy_kalman.FilterpyKalman(horizon, channels),
        "prophet": lambda: prophet_peer.ProphetPeer(horizon, channels),
        **{name: _sf_maker(name, horizon, channels) for name in sf.MODELS},
    }
    return [make[name]() for name in names]


def _sf_maker(name: str, horizon: int, channels: int) -> Callable[[], Forecaster]:
    return lambda: sf.SfPeer(name, horizon, channels)
