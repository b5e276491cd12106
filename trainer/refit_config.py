"""What a :class:`~trainer.refit.RefitWorker` is told (:class:`RefitConfig`), what it reports
to (:class:`RefitMetrics`), and how many closed bins a load refit needs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class RefitMetrics(Protocol):
    """What the worker reports to (``stream.metrics.Metrics`` provides it)."""

    swaps: Any
    last_swap: Any
    training_duration: Any
    training_device: Any
    model_version: Any
    refit_requests: Any


@dataclass(frozen=True)
class RefitConfig:
    model_dir: str | Path
    models: tuple[str, ...] = ("lstm", "dlinear")
    #: next-request refits: after this many new events (None: not by count)
    every_events: int | None = None
    #: next-request refits: this long after the last one started (None: not by time)
    every_s: float | None = 600.0
    window_events: int = 20_000
    holdout_fraction: float = 0.1
    min_events: int = 2_000
    seq_len: int = 64
    epochs: int = 10
    batch_size: int = 64
    patience: int = 3
    device: str = "auto"
    tolerance: float = 0.0
    stream_key: str = "model"
    seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: train in a child process at lower priority, so training never holds the serving
    #: process's interpreter lock or starves its threads (the CLI turns this on)
    isolate: bool = False
    child_threads: int = 1
    #: load refits: the serving bins in seconds (None: no load refits)
    load_bin_s: float | None = None
    #: load refits: this long after the last one started (None: never)
    load_every_s: float | None = 600.0
    #: load refits: recent closed bins per stream kept and trained on
    load_window_bins: int = 1440
    #: load refits: settings over the serving load network's, per model
    load_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: first load models (a load slot without a model): window in bins
    load_seq_len: int = 48
    #: first load models: bins ahead (the serving service's longest load horizon)
    load_horizon: int = 30


def load_bins_needed(seq_len: int, horizon: int, holdout_fraction: float) -> int:
    """Closed bins a stream needs for a load refit: after the guard's held-out slice, enough
    for training windows and (``TrainConfig.val_fraction`` 0.2) validation windows."""
    rows = max(5 * (horizon + 1), math.ceil((seq_len + horizon + 1) / 0.8)) + 2
    return math.ceil(rows / (1 - holdout_fraction)) + 1
