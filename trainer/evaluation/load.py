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

Peers (``kind: "peer"``, ``peers`` in the config): the load predictors of NVIDIA
Dynamo's planner, ``kalman`` and ``kalman_log1p`` (:mod:`predictor.models.kalman`) and
``arima`` (:mod:`predictor.models.arima`), walked and scored like the baselines; and,
only when asked for (``--peers``) and with the ``stats`` extra installed, the library
references ``sf_autoarima``, ``sf_autoets``, ``sf_theta`` (:mod:`predictor.models.sf`)
and ``filterpy_kalman`` (:mod:`predictor.models.filterpy_kalman`); with the ``prophet``
extra, ``prophet`` (:mod:`predictor.models.prophet_peer`).

``ensemble`` (``aggregate``): every expert above (networks, baselines, peers)
aggregated online with delayed per-horizon updates, its interval calibrated online
like the others; the report's ``ensemble`` section has its MAE ratio to the best
single expert per quantity and horizon and the Poisson floor of requests/s
(:mod:`trainer.evaluation.ensemble`). A test period too short to score
:data:`MIN_SCORED` forecasts at the largest horizon is a one-line error. The walking
itself lives in :mod:`trainer.evaluation.walk`, the config in
:mod:`trainer.evaluation.load_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from predictor.errors import ConfigError, TrainingError
from predictor.experts import KNOWN_PEERS, load_baselines, load_peers
from predictor.load import LOAD_QUANTITIES
from predictor.models import ets
from predictor.models.base import NOMINAL_COVERAGE, Forecaster
from predictor.streams import load_series
from predictor.tasks import LOAD
from trainer.evaluation.ensemble import ensemble_ratios, ensemble_walk
from trainer.evaluation.load_config import PEERS, LoadBacktestConfig
from trainer.evaluation.stats import verdict
from trainer.evaluation.walk import (
    Primed,
    Walked,
    evaluate,
    outcomes,
    raw_forecasts,
    score_walk,
    scored_part,
    served_best,
    walk,
    walk_and_score,
    walk_errors,
)
from trainer.train import TrainConfig, train_forecaster

__all__ = [
    "KNOWN_PEERS",
    "LOAD",
    "PEERS",
    "LoadBacktestConfig",
    "Walked",
    "evaluate",
    "load_backtest",
    "load_baselines",
    "load_peers",
    "outcomes",
    "raw_forecasts",
    "served_best",
    "split_load",
    "walk",
    "walk_errors",
]

log = logging.getLogger(__name__)


def split_load(df: pd.DataFrame, cfg: LoadBacktestConfig) -> dict[str, tuple[np.ndarray, int]]:
    """Each stream's bins ``[B, 3]`` and its cut (bins ``< cut`` may train)."""
    out = {}
    for name, s in load_series(df, cfg.stream_key, cfg.bin_s).items():
        cut = int(len(s) * cfg.train_fraction)
        if 1 <= cut < len(s) - 1:
            out[name] = (s, cut)
    return out


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


#: fewest forecasts the largest horizon needs in some stream's test period
MIN_SCORED = 10


def check_test_period(
    streams: Mapping[str, tuple[np.ndarray, int]], cfg: LoadBacktestConfig
) -> None:
    """A clear error when no stream's test period can score the largest horizon."""
    most = max(len(s) - cut for s, cut in streams.values())  # forecasts of the longest
    if most - cfg.horizon + 1 < MIN_SCORED:
        fits = most - MIN_SCORED + 1
        hint = f"--horizons up to {fits}, " if fits >= 1 else ""
        raise ConfigError(
            f"load backtest: the test period holds {most} bins of {cfg.bin_s:g}s, too few to "
            f"score {MIN_SCORED} forecasts at horizon {cfg.horizon} (needs "
            f"{cfg.horizon + MIN_SCORED - 1}); use {hint}a smaller --bin-s or more data"
        )


def load_backtest(
    df: pd.DataFrame, cfg: LoadBacktestConfig, progress: bool = False
) -> dict[str, Any]:
    """Train on the heads, forecast the tails; ``{"task_config", "results", "verdict"}``,
    and ``"ensemble"`` (ratios to the best expert, Poisson floor) with ``cfg.aggregate``."""
    streams = split_load(df, cfg)
    if not streams:
        raise ConfigError(
            f"no stream of {len(df)} rows spans enough {cfg.bin_s:g}s bins to both train and "
            f"forecast at train fraction {cfg.train_fraction}"
        )
    check_test_period(streams, cfg)
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
        notes.append("AutoETS baseline skipped: statsforecast is not installed (extra 'stats')")
    forecasters += load_peers(cfg.peers, cfg.horizon)
    results: list[dict[str, Any]] = []
    primed: dict[str, list[Primed]] = {}
    walked: dict[str, list[Walked]] = {}
    errors: dict[tuple[str, str, int], np.ndarray] = {}
    for fc in forecasters:
        rows, p = walk_and_score(fc, streams, cfg)
        w = scored_part(p)
        results += rows
        errors.update(walk_errors(fc.name, w, cfg))
        primed[fc.name] = p
        if fc.kind == "model":
            walked[fc.name] = w
        if getattr(fc, "failures", 0):
            notes.append(f"{fc.name}: {fc.failures} windows could not be fitted (persistence used)")
    if len(walked) > 1:  # as the service publishes it beside the models
        best = served_best(walked, cfg)
        results += score_walk("best", "model", best, cfg)
        errors.update(walk_errors("best", best, cfg))
    ensemble: dict[str, Any] | None = None
    if cfg.aggregate:
        ens = scored_part(ensemble_walk(primed, cfg))
        results += score_walk("ensemble", "model", ens, cfg)
        errors.update(walk_errors("ensemble", ens, cfg))
        ensemble = ensemble_ratios(results, errors, streams, cfg)
    del primed
    parts = list(streams.values())
    task_config = {
        "task": LOAD,
        **asdict(cfg),
        "horizons": list(cfg.horizons),
        "models": list(cfg.models),
        "peers": list(cfg.peers),
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
    report = {"task_config": task_config, "results": results, "verdict": verdict(results, errors)}
    if ensemble is not None:
        report["ensemble"] = ensemble
    return report
