"""Offline training of the next-request models from a loaded trace, as ``reqcast train`` does.

Trains each requested model on the trace's streams, saves each as a new
artifact and reports what happened, one model failing never stopping the
others. A CUDA out-of-memory error becomes a :class:`TrainingError` that says
what to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from predictor.artifacts import ArtifactInfo, save_artifact
from predictor.errors import ConfigError, TrainingError
from predictor.models.neural import ARCHITECTURES
from predictor.streams import load_series, stream_series
from predictor.tasks import LOAD, NEXT_REQUEST
from trainer.device import is_cuda_oom, resolve_device
from trainer.presets import Preset
from trainer.train import TrainConfig, TrainResult, train_forecaster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadTask:
    """Load forecasting: bin size in seconds and the longest horizon in bins."""

    bin_s: float = 60.0
    horizon: int = 30
    #: networks per model, trained from consecutive seeds and averaged
    ensemble: int = 1

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ConfigError(f"--ensemble must be at least 1, got {self.ensemble}")


@dataclass
class ModelOutcome:
    model: str
    result: TrainResult | None = None
    artifact: ArtifactInfo | None = None
    error: str | None = None


@dataclass
class OfflineReport:
    preset: str
    device: str
    rows: int
    streams: dict[str, int]
    outcomes: list[ModelOutcome] = field(default_factory=list)

    @property
    def trained(self) -> int:
        return sum(1 for o in self.outcomes if o.artifact is not None)


def check_models(models: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [m for m in models if m not in ARCHITECTURES]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; choose from {', '.join(ARCHITECTURES)}")
    return tuple(models)


def train_models(
    df: pd.DataFrame,
    preset: Preset,
    model_dir: str | Path,
    *,
    stream_key: str = "model",
    seed: int = 0,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    task: str = NEXT_REQUEST,
    load: LoadTask | None = None,
) -> OfflineReport:
    """Train and save every model of ``preset`` on ``df`` (a loaded trace).

    ``task="load"`` trains multi-horizon models of per-bin load instead of the
    next request (``load`` sets the bin size and the longest horizon).
    """
    models = check_models(preset.models)
    device = resolve_device(preset.device)
    horizon = 1
    if task == LOAD:
        load = load or LoadTask()
        horizon = load.horizon
        series = load_series(df, stream_key, load.bin_s, min_bins=preset.seq_len + horizon + 1)
    elif task == NEXT_REQUEST:
        series = stream_series(df, stream_key, min_rows=preset.seq_len + 2)
    else:
        raise ConfigError(f"unknown task {task!r}; choose next_request or load")
    rows = sum(len(s) for s in series.values())
    if not series:
        raise TrainingError(
            f"too few rows to train: {len(df)} rows, but seq_len={preset.seq_len} needs at least "
            f"{preset.seq_len + 2} in one stream (and several times that to validate); use more "
            "data or a smaller --seq-len"
        )
    report = OfflineReport(preset.name, device, rows, {k: len(v) for k, v in series.items()})
    for model in models:
        cfg = TrainConfig.for_model(
            model,
            task=task,
            ensemble=load.ensemble if load is not None else 1,
            seq_len=preset.seq_len,
            epochs=preset.epochs,
            batch_size=preset.batch_size,
            patience=preset.patience,
            device=device,
            seed=seed,
            horizon=horizon,
        )
        outcome = ModelOutcome(model)
        try:
            result = train_forecaster(list(series.values()), cfg, progress=progress)
        except TrainingError as exc:
            outcome.error = str(exc)
            report.outcomes.append(outcome)
            log.error("%s: %s", model, exc)
            continue
        except RuntimeError as exc:
            if is_cuda_oom(exc):
                raise TrainingError(
                    f"CUDA ran out of memory training {model}: lower --sample-size or "
                    "--batch-size, or use --device cpu"
                ) from exc
            raise
        outcome.result = result
        meta = result.metadata()
        meta["data"] = {"streams": report.streams, "stream_key": stream_key, **(extra_meta or {})}
        if load is not None:
            meta["load"] = {"bin_s": load.bin_s, "horizon_bins": load.horizon}
        outcome.artifact = save_artifact(
            result.forecaster, model_dir, preset=preset.name, task=task, extra=meta
        )
        report.outcomes.append(outcome)
    return report
