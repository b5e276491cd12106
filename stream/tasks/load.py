"""Load forecasts, a task of the serving loop: bins close as events arrive, each closed bin
triggers a multi-horizon forecast per load model, and matured forecasts are scored.

For every stream, when an event opens a new time bin the previous bin closes
(empty bins close as zeros). Each load model then forecasts requests/s,
request tokens/s and response tokens/s for the configured horizons; intervals
are recalibrated online (:mod:`predictor.calibration`) per model, quantity and
horizon; forecasts whose target bin has closed are scored into rolling MAE and
coverage; a ``best`` forecast takes, per quantity and horizon, the model
with the lower rolling error; and ``ensemble``, the recommended forecast, aggregates
every expert online (:mod:`stream.tasks.load_ensemble`), its interval calibrated online
around its point like every other model's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.calibration import PRIME_BINS, calibrate_online, load_conformal
from predictor.events import RequestEvent
from predictor.features import pad_window
from predictor.forecast import finite_or_none
from predictor.load import LOAD_QUANTITIES, LoadBins
from predictor.models.base import Forecaster, Prediction
from predictor.scoring import LOAD_BEST_MIN_COUNT, LOAD_BEST_SIZE, RollingScores, score_key
from stream.loop import Message
from stream.metrics import Metrics
from stream.tasks.common import (
    Slots,
    calibrated,
    confidence,
    export_scores,
    longest_window,
    ready,
    score,
)
from stream.tasks.drift import DriftWatch
from stream.tasks.load_ensemble import ENSEMBLE, LoadEnsemble
from stream.transport import Record
from stream.validation import Valid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadConfig:
    output_topic: str
    bin_s: float = 60.0
    horizons: tuple[int, ...] = (1, 6, 30)
    stream_key: str = "model"


@dataclass
class _Made:
    """One forecast entry waiting for its target bin: raw and calibrated bounds, ``[3]`` each."""

    model: str
    horizon: int
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    raw_lower: np.ndarray
    raw_upper: np.ndarray


@dataclass
class _ModelForecasts:
    """One model's forecasts for the windows of a batch's closed bins, ``[m, H, 3]`` each."""

    version: int
    forecaster: Forecaster
    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    warm: list[bool]

    def __getitem__(
        self, i: int
    ) -> tuple[int, Forecaster, np.ndarray, np.ndarray, np.ndarray, bool]:
        return (
            self.version,
            self.forecaster,
            self.point[i],
            self.lower[i],
            self.upper[i],
            self.warm[i],
        )


def _split_key(key: str) -> tuple[str, str]:
    """``(quantity, horizon)`` of a load score key (:func:`~predictor.scoring.score_key`)."""
    q, h = key.split("@")
    return q, h


class LoadForecasting:
    """Per-stream bins, load forecasts per model and ``best``, online scoring and calibration."""

    def __init__(self, config: LoadConfig, slots: Slots, metrics: Metrics) -> None:
        self.config, self.slots, self.metrics = config, slots, metrics
        self.bins = self._new_bins()
        self.conformal = load_conformal()
        self.scores = RollingScores(size=LOAD_BEST_SIZE)
        #: per stream, forecast entries by the bin they target, scored once it closes
        self._pending: dict[str, dict[int, list[_Made]]] = {}
        self._latest: dict[str, dict[str, dict[int, _Made]]] = {}
        self.ensemble = LoadEnsemble(config.horizons, list(slots))
        self.published = 0
        #: the drift check fed with the networks' matured one-bin-ahead errors (None: none)
        self.drift: DriftWatch | None = None

    def _new_bins(self) -> LoadBins:
        capacity = max(512, longest_window(self.slots, default=64))
        return LoadBins(self.config.bin_s, capacity=capacity, on_evict=self._forget)

    def _forget(self, stream: str) -> None:
        """Drop what is kept for ``stream`` besides its bins (evicted: least recently seen)."""
        self._pending.pop(stream, None)
        self._latest.pop(stream, None)
        self.ensemble.forget(stream)
        self.metrics.ensemble_weights.remove(stream)
        self.metrics.load_streams.remove(stream)
        self.metrics.actual_streams.remove(stream)

    def on_assign(self, events: list[RequestEvent]) -> None:
        """After a (re)assignment: rebuild the bins from ``events``, the recent history of
        the partitions now owned (in time order), and the calibration from them. Without
        history all is left as it is (a fresh group starts at the beginning of its input)."""
        if not events:
            return
        self.bins = self._new_bins()
        self.conformal = load_conformal()  # primed again below, from the new history
        self._pending.clear()
        self._latest.clear()
        self.ensemble.clear()
        self.metrics.ensemble_weights.clear()
        self.metrics.load_streams.clear()
        self.metrics.actual_streams.clear()
        self.warm(events)
        log.info(
            "load: %d stream(s) rebuilt from %d past events", len(self.bins.streams()), len(events)
        )

    def warm(self, events: list[RequestEvent]) -> None:
        """Count past events into the bins without publishing, then prime the calibration."""
        for ev in events:
            self.bins.add(
                ev.stream_key(self.config.stream_key),
                ev.timestamp_s,
                ev.request_tokens,
                ev.response_tokens,
            )
        self.prime()

    def prime(self, bins: int = PRIME_BINS) -> int:
        """Replay every stream's closed bins through the ensemble, so its weights are what
        an uninterrupted run over the same bins would have learnt, and score what each model
        and the ensemble would have forecast over the last ``bins`` of them into the
        conformal buffers, so intervals are calibrated from the first published forecast
        instead of after ``min_count`` outcomes per horizon. Returns the outcomes scored
        (nothing is published or counted in the online error)."""
        scored = 0
        horizons = self.config.horizons
        for stream in self.bins.streams():
            history = self.bins.history(stream)
            n, open_bin = len(history), self.bins.open_bin(stream)
            if n == 0 or open_bin is None:
                continue
            windows = [history[: t + 1] for t in range(n)]
            preds = self._predict(windows)
            ens = self._replay_ensemble(stream, open_bin - n, history, preds, windows)
            start = max(0, n - 1 - bins)
            if start >= n - 1:
                continue
            # forecasts after each of those bins (the last one targets the open bin)
            for name, batch in preds.items():
                usable = [h for h in horizons if h <= batch.forecaster.horizon]
                raw = Prediction(batch.point[start:], batch.lower[start:], batch.upper[start:])
                calibrate_online(name, [(history, start, raw)], usable, self.conformal)
                scored += sum(max(0, n - start - h) for h in usable)
            point = ens[start:]
            raw = Prediction(point, point, point)
            calibrate_online(ENSEMBLE, [(history, start, raw)], horizons, self.conformal)
            scored += sum(max(0, n - start - h) for h in horizons)
        return scored

    def _replay_ensemble(
        self,
        stream: str,
        first: int,
        history: np.ndarray,
        preds: dict[str, _ModelForecasts],
        windows: list[np.ndarray],
    ) -> np.ndarray:
        """The ensemble's points ``[n, max horizon, 3]`` after each closed bin of ``stream``
        (bin numbers from ``first``), learning as it goes, exactly as :meth:`process` would."""
        horizons = self.config.horizons
        others = self.ensemble.expert_points(windows)
        out = np.full((len(history), max(horizons), 3), np.nan)
        cols = [h - 1 for h in horizons]
        for t in range(len(history)):
            self.ensemble.observe(stream, first + t, history[t])
            nets = {name: batch.point[t] for name, batch in preds.items()}
            out[t, cols] = self.ensemble.forecast(stream, first + t, nets, others[t])
        return out

    def process(self, valid: list[Valid]) -> list[Message]:
        """Bins closed by ``valid``, scored in order; one forward pass per model for all of them."""
        closures: list[tuple[str, int, Record, list[tuple[int, np.ndarray]], np.ndarray]] = []
        longest = max(longest_window(self.slots, default=1), self.ensemble.seq_len)
        for ev, rec in valid:
            stream = ev.stream_key(self.config.stream_key)
            closed = self.bins.add(stream, ev.timestamp_s, ev.request_tokens, ev.response_tokens)
            if closed:
                # the window as it is now: later events of this batch must not leak into it
                closures.append(
                    (stream, closed[-1][0], rec, closed, self.bins.history(stream, last=longest))
                )
        if not closures:
            return []
        preds = self._predict([c[4] for c in closures])
        self.ensemble.note_versions({n: p.version for n, p in preds.items()})
        others = self.ensemble.expert_points([c[4] for c in closures])
        now = time.time()
        out: list[Message] = []
        for i, (stream, k, rec, closed, _) in enumerate(closures):
            for kk, actual in closed:
                self._score(stream, kk, actual)
                self.ensemble.observe(stream, kk, actual)
            pending = self._pending.get(stream, {})
            for skipped in [kk for kk in pending if kk <= k]:  # bins past max_gap_bins
                del pending[skipped]
            if self.bins.open_bin(stream) is not None:
                self._export_actual(stream, closed[-1][1])
            made = {n: p[i] for n, p in preds.items()}
            out.extend(self._forecast(stream, k, rec, made, others[i], now))
        self._export_latest()
        return out

    def _export_latest(self) -> None:
        """The newest forecast per stream, model, quantity and horizon as gauges."""
        g = self.metrics.load_streams
        for stream, per_model in self._latest.items():
            for name, made in per_model.items():
                for h, m in made.items():
                    for c, q in enumerate(LOAD_QUANTITIES):
                        g.set((stream, name, q, str(h), "point"), m.point[c])
                        g.set((stream, name, q, str(h), "lower"), m.lower[c])
                        g.set((stream, name, q, str(h), "upper"), m.upper[c])
            for h, w in self.ensemble.weights(stream).items():
                for c, q in enumerate(LOAD_QUANTITIES):
                    for j, expert in enumerate(self.ensemble.names):
                        self.metrics.ensemble_weights.set((stream, expert, q, str(h)), w[c, j])
        self._latest.clear()

    def _predict(self, histories: list[np.ndarray]) -> dict[str, _ModelForecasts]:
        """Each load model's forecasts for every window, ``[m, H, 3]`` per bound."""
        out: dict[str, _ModelForecasts] = {}
        for name, loaded in ready(self.slots):
            fc = loaded.forecaster
            padded = [pad_window(h[-fc.seq_len :], fc.seq_len) for h in histories]
            pred = fc.predict(np.stack([w for w, _ in padded]))  # [m, H, 3]
            out[name] = _ModelForecasts(
                loaded.version, fc, pred.point, pred.lower, pred.upper, [w for _, w in padded]
            )
        return out

    def _export_actual(self, stream: str, rates: np.ndarray) -> None:
        for c, q in enumerate(LOAD_QUANTITIES):
            self.metrics.actual_streams.set((stream, q), rates[c])

    def _score(self, stream: str, k: int, actual: np.ndarray) -> None:
        for made in self._pending.get(stream, {}).pop(k, []):
            h = made.horizon
            keys: list[tuple[str, Any]] = [
                (score_key(q, h), (made.model, q, h)) for q in LOAD_QUANTITIES
            ]
            rows = (made.point, made.lower, made.upper, made.raw_lower, made.raw_upper)
            score(self.scores, self.conformal, made.model, keys, actual, rows)
            if self.drift is not None and h == 1:  # the horizon the held-out MAE is of
                self.drift.observe(made.model, None, np.abs(made.point - actual)[None])

    def export_metrics(self) -> None:
        """Push rolling load MAE and coverage to the gauges (called about once a second)."""
        export_scores(self.scores, self.metrics, "load", _split_key)
        if self.drift is not None:
            self.drift.check()

    def _forecast(
        self,
        stream: str,
        k: int,
        rec: Record,
        preds: dict[str, tuple[int, Forecaster, np.ndarray, np.ndarray, np.ndarray, bool]],
        others: np.ndarray,
        now: float,
    ) -> list[Message]:
        per_model: dict[str, dict[int, _Made]] = {}
        versions: dict[str, int] = {}
        messages: list[Message] = []
        for name, (version, fc, point_h, lo_h, hi_h, warm) in preds.items():
            made: dict[int, _Made] = {}
            for h in self.config.horizons:
                if h > fc.horizon:
                    continue
                point, lo, hi = point_h[h - 1], lo_h[h - 1], hi_h[h - 1]
                keys = [(name, q, h) for q in LOAD_QUANTITIES]
                clo, chi = calibrated(self.conformal, keys, point, lo, hi)
                made[h] = _Made(name, h, point, clo, chi, lo, hi)
            per_model[name], versions[name] = made, version
            messages.append(
                self._message(
                    stream,
                    name,
                    version,
                    k,
                    made,
                    warm,
                    rec,
                    now,
                    confidence(self.scores, name, fc),
                )
            )
        if len(per_model) > 1:
            best = self._best(per_model)
            messages.append(
                self._message(
                    stream,
                    "best",
                    max(versions.values()),
                    k,
                    best,
                    True,
                    rec,
                    now,
                    confidence(self.scores, "best", None),
                )
            )
            per_model["best"] = best
        ensemble = self._ensemble(stream, k, {n: p[2] for n, p in preds.items()}, others)
        version = max(versions.values(), default=0)
        # warm as soon as one of its experts has a full window
        warm = any(p[5] for p in preds.values()) or (
            self.bins.closed(stream) >= self.ensemble.shortest
        )
        ens_conf = confidence(self.scores, ENSEMBLE, None)
        messages.append(
            self._message(stream, ENSEMBLE, version, k, ensemble, warm, rec, now, ens_conf)
        )
        per_model[ENSEMBLE] = ensemble
        if self.bins.open_bin(stream) is not None:  # else evicted by a later stream: forget it
            pending = self._pending.setdefault(stream, {})
            for made in per_model.values():
                for h, m in made.items():
                    pending.setdefault(k + h, []).append(m)
            self._latest[stream] = per_model
        self.published += len(messages)
        for name in per_model:
            self.metrics.forecasts.labels(name, "load").inc()
        return messages

    def _ensemble(
        self, stream: str, k: int, networks: dict[str, np.ndarray], others: np.ndarray
    ) -> dict[int, _Made]:
        """The ensemble's entries after bin ``k``: its point, and an interval that is the
        online calibration's widening around it (it has no interval of its own)."""
        points = self.ensemble.forecast(stream, k, networks, others)
        out: dict[int, _Made] = {}
        for point, h in zip(points, self.config.horizons, strict=True):
            keys = [(ENSEMBLE, q, h) for q in LOAD_QUANTITIES]
            lo, hi = calibrated(self.conformal, keys, point, point, point)
            out[h] = _Made(ENSEMBLE, h, point, lo, hi, point, point)
        return out

    def _best(self, per_model: dict[str, dict[int, _Made]]) -> dict[int, _Made]:
        """Per horizon and quantity, the entry of the model with the lowest rolling MAE."""
        names = list(per_model)
        out: dict[int, _Made] = {}
        horizons = set.intersection(*(set(m) for m in per_model.values()))
        for h in sorted(horizons):
            point, lo, hi, rlo, rhi = (np.zeros(3) for _ in range(5))
            for c, q in enumerate(LOAD_QUANTITIES):
                choice = (
                    self.scores.best(score_key(q, h), names, min_count=LOAD_BEST_MIN_COUNT)
                    or names[0]
                )
                m = per_model[choice][h]
                point[c], lo[c], hi[c], rlo[c], rhi[c] = (
                    m.point[c],
                    m.lower[c],
                    m.upper[c],
                    m.raw_lower[c],
                    m.raw_upper[c],
                )
            out[h] = _Made("best", h, point, lo, hi, rlo, rhi)
        return out

    def _message(
        self,
        stream: str,
        model: str,
        version: int,
        k: int,
        made: dict[int, _Made],
        warm: bool,
        rec: Record,
        now: float,
        confidence: float | None,
    ) -> Message:
        bin_s = self.config.bin_s
        horizons: list[dict[str, Any]] = []
        for h, m in sorted(made.items()):
            entry: dict[str, Any] = {"horizon_bins": h, "bin_start": (k + h) * bin_s}
            # JSON has no NaN: a value that is not finite is null (forecast.schema.json)
            entry.update({q: finite_or_none(m.point[c]) for c, q in enumerate(LOAD_QUANTITIES)})
            entry["interval"] = {
                q: [finite_or_none(m.lower[c]), finite_or_none(m.upper[c])]
                for c, q in enumerate(LOAD_QUANTITIES)
            }
            horizons.append(entry)
        body = {
            "kind": "load",
            "stream": stream,
            "model": model,
            "model_version": version,
            "source": {"partition": rec.partition, "offset": rec.offset},
            "bin_s": bin_s,
            "bin_start": (k + 1) * bin_s,
            "last_closed_bin_start": k * bin_s,
            "horizons": horizons,
            "nominal_coverage": 0.8,
            "confidence": finite_or_none(confidence),
            "warm": warm,
            "produced_at": now,
        }
        return (self.config.output_topic, stream.encode(), json.dumps(body).encode())
