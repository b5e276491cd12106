"""How the load walk-forward (:mod:`trainer.evaluation.load`) bins, splits, trains,
forecasts, calibrates and aggregates."""

from __future__ import annotations

from dataclasses import dataclass

from predictor.calibration import LOAD_MIN_COUNT, LOAD_SIZE, PRIME_BINS, STEP_BINS
from predictor.errors import ConfigError
from predictor.experts import PEERS, check_peers
from trainer.evaluation.split import check_split


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
    #: the Dynamo planner's predictors as peers (``kind: "peer"``): ``kalman``,
    #: ``kalman_log1p``, ``arima``; and, asked for, the library peers
    #: (:data:`predictor.experts.LIBRARY_PEERS`: ``sf_autoarima``, ``sf_autoets``,
    #: ``sf_theta``, ``filterpy_kalman``)
    peers: tuple[str, ...] = PEERS
    #: the ``ensemble`` row: every expert aggregated online (:mod:`predictor.ensemble`)
    aggregate: bool = True

    def __post_init__(self) -> None:
        check_split(self)
        if not self.bin_s > 0:
            raise ConfigError(f"bin size must be positive, got {self.bin_s}")
        if not self.horizons or min(self.horizons) < 1:
            raise ConfigError(f"horizons must be whole bins >= 1, got {list(self.horizons)}")
        for name in ("seq_len", "epochs", "batch_size", "patience", "conformal_size", "ensemble"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_peers(self.peers)
        object.__setattr__(self, "horizons", tuple(sorted(set(self.horizons))))

    @property
    def horizon(self) -> int:
        """The longest scored horizon, which the networks are trained for."""
        return max(self.horizons)
