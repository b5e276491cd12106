"""What the forecasting tasks share: the models ready in their slots, online scoring and
calibration of matured forecasts, confidence, and the export of rolling scores."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal, widen_interval
from predictor.ensemble import DelayedAggregator
from predictor.models.base import Forecaster
from predictor.scoring import RollingScores
from predictor.slot import ModelSlot
from stream.metrics import Metrics

Slots = dict[str, ModelSlot[Forecaster]]


def ready(slots: Slots) -> list[tuple[str, Any]]:
    """``(name, loaded)`` of every slot holding a model, in slot order."""
    return [(n, cur) for n, slot in slots.items() if (cur := slot.current()) is not None]


def longest_window(slots: Slots, default: int) -> int:
    """The longest ``seq_len`` of the models ready (``default`` when none is)."""
    return max((cur.forecaster.seq_len for _, cur in ready(slots)), default=default)


def calibrated(
    conformal: OnlineConformal,
    keys: Iterable[Hashable],
    point: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` widened by the online calibration of each quantity's key (last axis)."""
    widen = np.array([conformal.widen(k) for k in keys])
    return widen_interval(point, lower, upper, widen)


def score(
    scores: RollingScores,
    conformal: OnlineConformal,
    model: str,
    keys: list[tuple[str, Hashable]],
    targets: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Score forecasts against their ``targets`` (``[n, c]`` or ``[c]``, one column per
    quantity): absolute error and interval hit into ``scores`` under ``keys[c][0]``, and the
    model's own interval into the calibration under ``keys[c][1]`` (not for ``best``, which
    has no interval of its own). ``rows``: point, calibrated lower and upper, raw lower and
    upper, shaped like ``targets``."""
    point, lo, hi, raw_lo, raw_hi = rows
    err = np.abs(point - targets)
    hit = (targets >= lo) & (targets <= hi)
    for c, (score_key, conformal_key) in enumerate(keys):
        col = np.s_[..., c : c + 1] if targets.ndim == 1 else np.s_[:, c]
        scores.add(model, score_key, err[col], hit[col])
        if model != "best":
            conformal.update(conformal_key, targets[col], raw_lo[col], raw_hi[col])


def confidence(scores: RollingScores, model: str, fc: Forecaster | None) -> float | None:
    """The model's rolling interval coverage online (rounded), else its artifact's."""
    online = scores.model_coverage(model)
    if online is not None:
        return round(online, 4)
    return getattr(fc, "confidence", None)


def export_scores(
    scores: RollingScores, metrics: Metrics, kind: str, split: Callable[[str], tuple[str, str]]
) -> None:
    """Rolling MAE and coverage of every tracked model and key to the gauges; ``split`` makes
    a score key ``(quantity, horizon_bins)``."""
    for model, key in scores.tracked():
        q, h = split(key)
        mae, cov = scores.mae(model, key), scores.coverage(model, key)
        if mae is not None:
            metrics.online_mae.labels(model, kind, q, h).set(mae)
        if cov is not None:
            metrics.online_coverage.labels(model, kind, q, h).set(cov)


class ExpertEnsemble:
    """What the load and next-request ensembles share: the networks served and the untrained
    experts by name, one :class:`~predictor.ensemble.DelayedAggregator` per stream, and the
    networks' versions, a new one starting afresh in every stream."""

    def __init__(self, networks: Sequence[str], experts: Sequence[Forecaster]) -> None:
        self.experts = list(experts)
        self.networks = list(networks)
        self.names = self.networks + [str(e.name) for e in self.experts]
        #: history the untrained experts look at (bins or requests)
        self.seq_len = max(e.seq_len for e in self.experts)
        #: the shortest of those windows (a full one makes the ensemble's forecast warm)
        self.shortest = min(e.seq_len for e in self.experts)
        self._aggs: dict[str, DelayedAggregator] = {}
        self._versions: dict[str, int] = {}

    def note_versions(self, versions: dict[str, int]) -> None:
        """The versions the networks forecast with now; a network whose version changed
        starts afresh in every stream's aggregation."""
        for name, version in versions.items():
            old = self._versions.get(name)
            if old is not None and old != version:
                for agg in self._aggs.values():
                    agg.renew(name)
            self._versions[name] = version
