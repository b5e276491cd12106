"""Walk-forward accuracy of the next-request forecasts against the baselines.

Per stream, the first ``train_fraction`` of rows train the networks (all streams'
heads together, as offline training does); then, over the remaining rows, every
forecaster makes one forecast per request from the rows up to and including that
request only, and is scored against the next request. Errors are pooled over
streams (each forecast counts once). Each model's MAE ratio to the best baseline
comes with a 90 % interval from a paired block bootstrap over the forecast origins
(:func:`trainer.evaluation.stats.ratio_interval`).

With ``aggregate`` (``reqcast bench accuracy`` sets it unless ``--no-ensemble``) an
``ensemble`` row (kind ``ensemble``) aggregates every expert above online, per stream, as
the service's ``--next-request-ensemble`` does (:mod:`trainer.evaluation.next_ensemble`),
scored on the same forecasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from predictor.errors import ConfigError, TrainingError
from predictor.features import QUANTITIES
from predictor.models.base import NOMINAL_COVERAGE, Forecaster, Prediction, rolling_predict
from predictor.models.baselines import default_baselines
from predictor.streams import stream_series
from predictor.tasks import NEXT_REQUEST
from trainer.evaluation.next_ensemble import ENSEMBLE, ensemble_forecasts
from trainer.evaluation.split import check_split
from trainer.evaluation.stats import score, verdict
from trainer.train import TrainConfig, train_forecaster


@dataclass(frozen=True)
class BacktestConfig:
    """How the walk-forward benchmark splits, trains and forecasts."""

    models: tuple[str, ...] = ("lstm", "dlinear")
    train_fraction: float = 0.6
    seq_len: int = 64
    epochs: int = 40
    batch_size: int = 64
    #: fraction of the training head held out for early stopping and calibration
    val_fraction: float = 0.2
    stream_key: str = "model"
    seed: int = 0
    device: str = "auto"
    #: the ``ensemble`` row: every expert aggregated online (module docstring)
    aggregate: bool = False

    def __post_init__(self) -> None:
        check_split(self)
        for name in ("seq_len", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


def split_streams(
    df: pd.DataFrame, stream_key: str, train_fraction: float
) -> dict[str, tuple[np.ndarray, int]]:
    """Each stream's raw series ``[N, 3]`` and its cut (rows ``< cut`` may train).

    Streams without at least one training row and one row to forecast are left out.
    """
    out = {}
    for name, s in stream_series(df, stream_key).items():
        cut = int(len(s) * train_fraction)
        if 1 <= cut < len(s):
            out[name] = (s, cut)
    return out


def walk_forward(
    forecaster: Forecaster, streams: Sequence[tuple[np.ndarray, int]]
) -> tuple[Prediction, np.ndarray]:
    """Next-request forecasts after every row ``t`` in ``cut-1 .. N-2`` of each stream, pooled.

    Returns the forecasts ``[M, 1, C]`` and the outcomes (row ``t+1``) ``[M, 1, C]``,
    with ``M`` the sum of ``N - cut`` over the streams.
    """
    return pool(stream_forecasts(forecaster, streams), streams)


def stream_forecasts(
    forecaster: Forecaster, streams: Sequence[tuple[np.ndarray, int]]
) -> list[Prediction]:
    """Per stream, the next-request forecasts ``[N - cut, 1, C]`` after rows ``cut-1 .. N-2``."""
    out = []
    for series, cut in streams:
        pred = rolling_predict(forecaster, series, start=cut - 1)
        n = len(series) - cut  # the forecast after the last row has no outcome yet
        out.append(Prediction(pred.point[:n, :1], pred.lower[:n, :1], pred.upper[:n, :1]))
    return out


def pool(
    preds: Sequence[Prediction], streams: Sequence[tuple[np.ndarray, int]]
) -> tuple[Prediction, np.ndarray]:
    """The streams' forecasts pooled, and their outcomes ``[M, 1, C]`` (see :func:`walk_forward`)."""
    if not preds:
        raise ConfigError("no stream has rows to forecast")
    pooled = Prediction(
        *(np.concatenate([getattr(p, f) for p in preds]) for f in ("point", "lower", "upper"))
    )
    return pooled, np.concatenate([series[cut:, None, :] for series, cut in streams])


def train_on_heads(
    streams: Mapping[str, tuple[np.ndarray, int]], cfg: BacktestConfig, progress: bool = False
) -> tuple[list[Forecaster], dict[str, dict[str, Any]]]:
    """One network per model in ``cfg``, trained on the streams' heads only; and a summary."""
    # a head trains only if its training part (before the validation split) gives a window
    heads = [
        s[:cut] for s, cut in streams.values() if int(cut * (1 - cfg.val_fraction)) > cfg.seq_len
    ]
    if not heads:
        longest = max((cut for _, cut in streams.values()), default=0)
        raise TrainingError(
            f"too few rows to train: the longest training head has {longest} rows, but "
            f"seq_len={cfg.seq_len} with val_fraction={cfg.val_fraction} needs more than "
            f"{int(cfg.seq_len / (1 - cfg.val_fraction)) + 1}; use more data or a smaller --seq-len"
        )
    models: list[Forecaster] = []
    info: dict[str, dict[str, Any]] = {}
    for name in cfg.models:
        tc = TrainConfig.for_model(
            name,
            seq_len=cfg.seq_len,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            val_fraction=cfg.val_fraction,
            device=cfg.device,
            seed=cfg.seed,
        )
        result = train_forecaster(heads, tc, progress=progress)
        models.append(result.forecaster)
        info[name] = result.summary()
    return models, info


def next_request_backtest(
    df: pd.DataFrame, cfg: BacktestConfig, progress: bool = False
) -> dict[str, Any]:
    """Train on the heads, forecast the tails; ``{"task_config", "results", "verdict"}``."""
    streams = split_streams(df, cfg.stream_key, cfg.train_fraction)
    if not streams:
        raise ConfigError(
            f"no stream of {len(df)} rows has both training and test rows "
            f"at train fraction {cfg.train_fraction}"
        )
    models, training = train_on_heads(streams, cfg, progress)
    forecasters: list[Forecaster] = [*models, *default_baselines(horizon=1, channels=3)]
    parts = list(streams.values())
    results: list[dict[str, Any]] = []
    errors: dict[tuple[str, str, int], np.ndarray] = {}
    points: dict[str, list[np.ndarray]] = {}  # per expert, its points [n, C] per stream
    walked: list[tuple[str, str, list[Prediction]]] = []
    for fc in forecasters:
        per_stream = stream_forecasts(fc, parts)
        walked.append((fc.name, fc.kind, per_stream))
        points[fc.name] = [p.point[:, 0] for p in per_stream]
    if cfg.aggregate:
        walked.append((ENSEMBLE, ENSEMBLE, ensemble_forecasts(parts, points)))
    for name, kind, per_stream in walked:
        pred, actual = pool(per_stream, parts)
        results += score(pred, actual, QUANTITIES, task=NEXT_REQUEST, model=name, kind=kind)
        err = np.abs(pred.point[:, 0] - actual[:, 0])  # [M, C]
        errors.update({(name, q, 1): err[:, c] for c, q in enumerate(QUANTITIES)})
    task_config = {
        **asdict(cfg),
        "models": list(cfg.models),
        "rows": len(df),
        "baselines": [fc.name for fc in forecasters if fc.kind == "baseline"],
        "nominal_coverage": round(NOMINAL_COVERAGE, 6),
        "streams": {
            name: {"rows": len(s), "train_rows": cut, "forecasts": len(s) - cut}
            for name, (s, cut) in streams.items()
        },
        "forecasts": sum(len(s) - cut for s, cut in parts),
        "training": training,
    }
    return {"task_config": task_config, "results": results, "verdict": verdict(results, errors)}
