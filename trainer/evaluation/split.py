"""The checks every walk-forward config (next request, load) shares."""

from __future__ import annotations

from typing import Any

from predictor.errors import ConfigError
from predictor.streams import STREAM_KEYS
from trainer.offline import check_models


def check_split(cfg: Any) -> None:
    """The checks every walk-forward config (next request, load) shares: models, split
    fractions, stream key."""
    check_models(cfg.models)
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ConfigError(f"train fraction must be in (0, 1), got {cfg.train_fraction}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.stream_key not in STREAM_KEYS:
        raise ConfigError(f"unknown stream key {cfg.stream_key!r}")
