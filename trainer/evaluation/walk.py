"""Walking one forecaster forward over the load streams: forecasts, online intervals, scores.

See :mod:`trainer.evaluation.load` for the protocol. A walk starts ``prime_bins``
before each stream's test period (:func:`walk_primed`), as the service primes its
calibration from history; :func:`scored_part` keeps the scored part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal, calibrate_online
from predictor.load import LOAD_QUANTITIES
from predictor.models.base import Prediction, rolling_predict
from predictor.scoring import LOAD_BEST_MIN_COUNT, LOAD_BEST_SIZE, RollingScores, score_key
from predictor.tasks import LOAD
from trainer.evaluation.load_config import LoadBacktestConfig
from trainer.evaluation.stats import score

log = logging.getLogger(__name__)

PARTS = ("point", "lower", "upper")


def outcomes(series: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """Bins ``t+1 .. t+H`` for every origin ``t`` in ``start .. N-2``, NaN past the end.

    >>> outcomes(np.arange(4.0)[:, None], 1, 2)[..., 0].tolist()
    [[2.0, 3.0], [3.0, nan]]
    """
    n, c = series.shape
    origins = np.arange(start, n - 1)
    idx = origins[:, None] + np.arange(1, horizon + 1)[None, :]  # [T, H]
    out = np.full((len(origins), horizon, c), np.nan)
    ok = idx < n
    out[ok] = series[idx[ok]]
    return out


def raw_forecasts(fc: Any, series: np.ndarray, start: int) -> Prediction:
    """Forecasts ``[T, H, C]`` after every bin ``start .. N-2`` from bins up to it only."""
    custom = getattr(fc, "rolling_predict", None)
    pred = custom(series, start) if custom is not None else rolling_predict(fc, series, start)
    t = len(series) - 1 - start  # the forecast after the last bin has no outcome
    return Prediction(pred.point[:t], pred.lower[:t], pred.upper[:t])


#: one stream's test period as a forecaster walked it: its bins, the first test origin,
#: the forecaster's own forecasts and the published (online-calibrated) ones, ``[T, H, 3]``
Walked = tuple[np.ndarray, int, Prediction, Prediction]


#: one stream walked from its first priming origin: its bins, that origin, the raw and
#: the published forecasts ``[T, H, 3]`` from there, and how many of them only prime
Primed = tuple[np.ndarray, int, Prediction, Prediction, int]


def walk_primed(
    fc: Any, streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> list[Primed]:
    """Walk ``fc`` forward from ``prime_bins`` before every stream's test bins, calibrating
    online as it goes (the priming forecasts included)."""
    primed, skip = [], []
    for series, cut in streams.values():
        start = max(0, cut - 1 - cfg.prime_bins)  # as the service primes from its history
        primed.append((series, start, raw_forecasts(fc, series, start)))
        skip.append(cut - 1 - start)
    return calibrated_walk(fc.name, primed, skip, cfg)


def calibrated_walk(
    name: str,
    primed: Sequence[tuple[np.ndarray, int, Prediction]],
    skip: Sequence[int],
    cfg: LoadBacktestConfig,
) -> list[Primed]:
    """Calibrate ``name``'s primed forecasts online, one buffer pooled over streams."""
    conformal = OnlineConformal(
        cfg.conformal_size, cfg.conformal_min_count, step=cfg.conformal_step
    )
    calibrated = calibrate_online(name, primed, cfg.horizons, conformal)
    return [
        (series, start, p, c, k)
        for (series, start, p), c, k in zip(primed, calibrated, skip, strict=True)
    ]


def scored_part(primed: Sequence[Primed]) -> list[Walked]:
    """The test-period part of primed walks."""
    return [(s, start + k, _tail(p, k), _tail(c, k)) for s, start, p, c, k in primed]


def walk(
    fc: Any, streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> list[Walked]:
    """Walk ``fc`` forward over every stream's test bins, calibrating online as it goes."""
    return scored_part(walk_primed(fc, streams, cfg))


def _tail(p: Prediction, k: int) -> Prediction:
    return Prediction(p.point[k:], p.lower[k:], p.upper[k:])


def score_walk(
    name: str, kind: str, walked: Sequence[Walked], cfg: LoadBacktestConfig
) -> list[dict[str, Any]]:
    """MAE, sMAPE and calibrated coverage per quantity and horizon, pooled over streams,
    with the forecaster's own coverage as ``coverage_raw``."""

    def pooled(preds: Sequence[Prediction]) -> Prediction:
        return Prediction(
            *(np.concatenate([getattr(p, f) for p in preds]) for f in ("point", "lower", "upper"))
        )

    actual = _actual(walked, cfg)
    common: dict[str, Any] = {"task": LOAD, "model": name, "kind": kind}
    cal = score(
        pooled([c for *_, c in walked]), actual, LOAD_QUANTITIES, cfg.horizons, smape=True, **common
    )
    raw = score(
        pooled([r for _, _, r, _ in walked]), actual, LOAD_QUANTITIES, cfg.horizons, **common
    )
    rows = []
    for c_row, r_row in zip(cal, raw, strict=True):
        n = c_row.pop("n")
        rows.append({**c_row, "coverage_raw": r_row["coverage"], "n": n})
    return rows


def _actual(walked: Sequence[Walked], cfg: LoadBacktestConfig) -> np.ndarray:
    """The outcomes of every walked forecast, ``[T, H, 3]`` pooled over streams."""
    return np.concatenate([outcomes(s, start, cfg.horizon) for s, start, _, _ in walked])


def walk_errors(
    name: str, walked: Sequence[Walked], cfg: LoadBacktestConfig
) -> dict[tuple[str, str, int], np.ndarray]:
    """Absolute errors of the published point forecasts per ``(name, quantity, horizon)``,
    in time order per stream (for :func:`trainer.evaluation.stats.ratio_interval`)."""
    point = np.concatenate([c.point for *_, c in walked])
    err = np.abs(point - _actual(walked, cfg))  # [T, H, 3], NaN past the end
    return {
        (name, q, h): err[:, h - 1, c] for c, q in enumerate(LOAD_QUANTITIES) for h in cfg.horizons
    }


def evaluate(
    fc: Any,
    streams: Mapping[str, tuple[np.ndarray, int]],
    cfg: LoadBacktestConfig,
) -> list[dict[str, Any]]:
    """Walk ``fc`` forward over every stream's test bins and score it per quantity and horizon."""
    return _walk_and_score(fc, streams, cfg)[0]


def _walk_and_score(
    fc: Any, streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> tuple[list[dict[str, Any]], list[Walked]]:
    rows, primed = walk_and_score(fc, streams, cfg)
    return rows, scored_part(primed)


def walk_and_score(
    fc: Any, streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> tuple[list[dict[str, Any]], list[Primed]]:
    """Walk ``fc`` (from its priming origins) and score its test period."""
    started = time.perf_counter()
    primed = walk_primed(fc, streams, cfg)
    rows = score_walk(fc.name, fc.kind, scored_part(primed), cfg)
    log.info("%s: walk-forward and scoring in %.1fs", fc.name, time.perf_counter() - started)
    return rows, primed


def served_best(walked: Mapping[str, Sequence[Walked]], cfg: LoadBacktestConfig) -> list[Walked]:
    """The ``best`` forecasts the service publishes, replayed: at each origin, per quantity
    and horizon, the published forecast of the model with the lower rolling MAE over the
    forecasts matured by then (:class:`~predictor.scoring.RollingScores` of the service's
    size and minimum count; the first model until each has that many), pooled over
    streams as the service pools them."""
    names = list(walked)
    scores = RollingScores(size=LOAD_BEST_SIZE)
    # until a model has been scored (and at horizons nobody scores) `best` is the first's
    out = [
        (series, start, Prediction(*(getattr(first, f).copy() for f in PARTS)))
        for series, start, _, first in walked[names[0]]
    ]
    for i in range(max(len(best.point) for _, _, best in out)):  # in time, streams in turn
        for k, (series, start, best) in enumerate(out):
            if i >= len(best.point):
                continue
            t = start + i  # bin t is known: score the forecasts that targeted it
            for h in cfg.horizons:
                if i < h:
                    continue
                for name in names:
                    pred = walked[name][k][3]
                    for c, q in enumerate(LOAD_QUANTITIES):
                        y = series[t, c]
                        err = abs(pred.point[i - h, h - 1, c] - y)
                        hit = pred.lower[i - h, h - 1, c] <= y <= pred.upper[i - h, h - 1, c]
                        scores.add(name, score_key(q, h), np.array([err]), np.array([hit]))
            for h in cfg.horizons:
                for c, q in enumerate(LOAD_QUANTITIES):
                    choice = scores.best(score_key(q, h), names, min_count=LOAD_BEST_MIN_COUNT)
                    pred = walked[choice or names[0]][k][3]
                    for f in PARTS:
                        getattr(best, f)[i, h - 1, c] = getattr(pred, f)[i, h - 1, c]
    return [(series, start, best, best) for series, start, best in out]
