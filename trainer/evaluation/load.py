"""Walk-forward accuracy of load forecasts against the baselines, with online intervals.

The load task: each stream of the trace is binned into requests/s, request
tokens/s and response tokens/s per bin (:func:`predictor.streams.load_series`;
every stream spans the trace's time range). The first ``train_fraction`` of the
bins of every stream train the networks (all heads together, forecasting the
longest scored horizon). Then, for every bin ``t`` from the last training bin
to the last but one, each forecaster forecasts bins ``t+1 .. t+H`` from bins
``<= t`` only (windows reach back into the training bins, so no padding is
needed once the head is longer than ``seq_len``). Each scored horizon ``h`` is
scored on every forecast whose target bin ``t+h`` is in the trace, pooled over
streams: MAE, sMAPE (:func:`trainer.evaluation.stats._smape`), interval coverage, n.

Intervals are calibrated online, as the service does
(:mod:`stream.tasks.load`): one :class:`~predictor.calibration.OnlineConformal`
per forecaster, keyed by quantity and horizon and pooled over streams; the
interval published at ``t`` is widened by the current widening, and once bin
``t+h`` is known the forecaster's own interval of that forecast is scored into
the buffer. The same applies to the baselines, so coverage compares like with
like; ``coverage`` is the calibrated interval's and ``coverage_raw`` the
forecaster's own (for the networks that already includes their offline
split-conformal widening).

Each model's MAE ratio to the best baseline comes with a 90 % interval from a
paired block bootstrap over the forecast origins
(:func:`trainer.evaluation.stats.ratio_interval`): on a short test period (the Azure
trace's is 23 minutes) a ratio a few percent from 1 can be chance.

Baselines: persistence (``last_value``), moving means over 6 and 30 bins,
the moving median over 30 bins, EWMA (alpha 0.3 over 30 bins) and, when
``statsforecast`` is importable, AutoETS (:mod:`predictor.models.ets`). The
median is there because MAE rewards the median: on bursty traffic with many
empty bins a forecast near 0 scores a low MAE, and only a median baseline
shows whether a network does better than that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from predictor.calibration import (
    LOAD_MIN_COUNT,
    LOAD_SIZE,
    PRIME_BINS,
    STEP_BINS,
    OnlineConformal,
    calibrate_online,
)
from predictor.errors import ConfigError, TrainingError
from predictor.load import LOAD_QUANTITIES
from predictor.models import ets
from predictor.models.base import NOMINAL_COVERAGE, Forecaster, Prediction, rolling_predict
from predictor.models.baselines import EWMA, LastValue, RollingMean, RollingMedian
from predictor.scoring import LOAD_BEST_MIN_COUNT, LOAD_BEST_SIZE, RollingScores, score_key
from predictor.streams import load_series
from predictor.tasks import LOAD
from trainer.evaluation.split import check_split
from trainer.evaluation.stats import score, verdict
from trainer.train import TrainConfig, train_forecaster

log = logging.getLogger(__name__)

PARTS = ("point", "lower", "upper")


@dataclass(frozen=True)
class LoadBacktestConfig:
    """How the load walk-forward bins, splits, trains, forecasts and calibrates."""

    bin_s: float = 60.0
    horizons: tuple[int, ...] = (1, 6, 30)
    models: tuple[str, ...] = ("lstm", "dlinear")
    train_fraction: float = 0.6
    #: input window of the networks, in bins
    seq_len: int = 48
    epochs: int = 40
    batch_size: int = 32
    patience: int = 8
    #: networks per model, trained from consecutive seeds and averaged (1: one network)
    ensemble: int = 1
    #: fraction of the training head held out for early stopping and offline calibration
    val_fraction: float = 0.2
    #: ``none`` (one stream for all traffic) by default: the service's load streams
    #: follow ``--stream-key`` too, and per-model load is often too sparse to bin finely
    stream_key: str = "none"
    seed: int = 0
    device: str = "auto"
    #: online conformal buffer (scores kept) and the scores needed before it widens
    conformal_size: int = LOAD_SIZE
    conformal_min_count: int = LOAD_MIN_COUNT
    conformal_step: float = STEP_BINS
    #: bins before the test period whose forecasts only prime the calibration
    prime_bins: int = PRIME_BINS
    #: AutoETS baseline when statsforecast is importable
    ets: bool = True
    ets_window: int = 500
    ets_refit_every: int = 50

    def __post_init__(self) -> None:
        check_split(self)
        if not self.bin_s > 0:
            raise ConfigError(f"bin size must be positive, got {self.bin_s}")
        if not self.horizons or min(self.horizons) < 1:
            raise ConfigError(f"horizons must be whole bins >= 1, got {list(self.horizons)}")
        for name in ("seq_len", "epochs", "batch_size", "patience", "conformal_size", "ensemble"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        object.__setattr__(self, "horizons", tuple(sorted(set(self.horizons))))

    @property
    def horizon(self) -> int:
        """The longest scored horizon, which the networks are trained for."""
        return max(self.horizons)


def load_baselines(horizon: int, channels: int = 3) -> list[Forecaster]:
    """Persistence, means over 6 and 30 bins, median over 30, EWMA: the flat load baselines."""
    return [
        LastValue(horizon, channels),
        RollingMean(6, horizon, channels),
        RollingMean(30, horizon, channels),
        RollingMedian(30, horizon, channels),
        EWMA(0.3, 30, horizon, channels),
    ]


def split_load(df: pd.DataFrame, cfg: LoadBacktestConfig) -> dict[str, tuple[np.ndarray, int]]:
    """Each stream's bins ``[B, 3]`` and its cut (bins ``< cut`` may train)."""
    out = {}
    for name, s in load_series(df, cfg.stream_key, cfg.bin_s).items():
        cut = int(len(s) * cfg.train_fraction)
        if 1 <= cut < len(s) - 1:
            out[name] = (s, cut)
    return out


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


def walk(
    fc: Any, streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> list[Walked]:
    """Walk ``fc`` forward over every stream's test bins, calibrating online as it goes."""
    primed, skip = [], []
    for series, cut in streams.values():
        start = max(0, cut - 1 - cfg.prime_bins)  # as the service primes from its history
        primed.append((series, start, raw_forecasts(fc, series, start)))
        skip.append(cut - 1 - start)
    conformal = OnlineConformal(
        cfg.conformal_size, cfg.conformal_min_count, step=cfg.conformal_step
    )
    calibrated = calibrate_online(fc.name, primed, cfg.horizons, conformal)
    return [
        (series, start + k, _tail(p, k), _tail(c, k))
        for (series, start, p), c, k in zip(primed, calibrated, skip, strict=True)
    ]


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
    started = time.perf_counter()
    walked = walk(fc, streams, cfg)
    rows = score_walk(fc.name, fc.kind, walked, cfg)
    log.info("%s: walk-forward and scoring in %.1fs", fc.name, time.perf_counter() - started)
    return rows, walked


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


def train_on_heads(
    streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig, progress: bool = False
) -> tuple[list[Forecaster], dict[str, dict[str, Any]]]:
    """One network per model, trained on the streams' training bins only; and a summary."""
    heads = [s[:cut] for s, cut in streams.values()]
    models: list[Forecaster] = []
    info: dict[str, dict[str, Any]] = {}
    for name in cfg.models:
        tc = TrainConfig.for_model(
            name,
            task=LOAD,
            ensemble=cfg.ensemble,
            seq_len=cfg.seq_len,
            horizon=cfg.horizon,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            patience=cfg.patience,
            val_fraction=cfg.val_fraction,
            device=cfg.device,
            seed=cfg.seed,
        )
        try:
            result = train_forecaster(heads, tc, progress=progress)
        except TrainingError as exc:
            longest = max(len(h) for h in heads)
            raise TrainingError(
                f"load backtest: {longest} training bins of {cfg.bin_s:g}s per stream at "
                f"horizon {cfg.horizon}: {exc} (here rows are bins: use more data, a smaller "
                "--bin-s or --seq-len, or a larger --train-fraction)"
            ) from exc
        models.append(result.forecaster)
        info[name] = result.summary()
        log.info("%s: trained %d epochs in %.1fs", name, result.epochs_run, result.duration_s)
    return models, info


def load_backtest(
    df: pd.DataFrame, cfg: LoadBacktestConfig, progress: bool = False
) -> dict[str, Any]:
    """Train on the heads, forecast the tails; ``{"task_config", "results", "verdict"}``."""
    streams = split_load(df, cfg)
    if not streams:
        raise ConfigError(
            f"no stream of {len(df)} rows spans enough {cfg.bin_s:g}s bins to both train and "
            f"forecast at train fraction {cfg.train_fraction}"
        )
    notes: list[str] = []
    models, training = train_on_heads(streams, cfg, progress)
    forecasters: list[Any] = [*models, *load_baselines(cfg.horizon)]
    if not cfg.ets:
        notes.append("AutoETS baseline switched off (--no-ets)")
    elif ets.available():
        forecasters.append(
            ets.AutoETS(cfg.horizon, 3, seq_len=cfg.ets_window, refit_every=cfg.ets_refit_every)
        )
    else:
        notes.append("AutoETS baseline skipped: statsforecast is not installed (extra 'ets')")
    results: list[dict[str, Any]] = []
    walked: dict[str, list[Walked]] = {}
    errors: dict[tuple[str, str, int], np.ndarray] = {}
    for fc in forecasters:
        rows, w = _walk_and_score(fc, streams, cfg)
        results += rows
        errors.update(walk_errors(fc.name, w, cfg))
        if fc.kind == "model":
            walked[fc.name] = w
        if getattr(fc, "failures", 0):
            notes.append(f"{fc.name}: {fc.failures} windows could not be fitted (persistence used)")
    if len(walked) > 1:  # as the service publishes it beside the models
        best = served_best(walked, cfg)
        results += score_walk("best", "model", best, cfg)
        errors.update(walk_errors("best", best, cfg))
    parts = list(streams.values())
    task_config = {
        "task": LOAD,
        **asdict(cfg),
        "horizons": list(cfg.horizons),
        "models": list(cfg.models),
        "rows": len(df),
        "quantities": list(LOAD_QUANTITIES),
        "baselines": [fc.name for fc in forecasters if fc.kind == "baseline"],
        "nominal_coverage": round(NOMINAL_COVERAGE, 6),
        "calibration": "online conformal per forecaster, quantity and horizon (all forecasters); "
        "coverage_raw is the forecaster's own interval",
        "streams": {
            name: {"bins": len(s), "train_bins": cut, "forecasts": len(s) - cut}
            for name, (s, cut) in streams.items()
        },
        "forecasts": sum(len(s) - cut for s, cut in parts),
        "training": training,
        "notes": notes,
    }
    return {"task_config": task_config, "results": results, "verdict": verdict(results, errors)}
