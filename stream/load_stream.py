"""Load forecasts in the serving loop: bins close as events arrive, each closed bin
triggers a multi-horizon forecast per load model, and matured forecasts are scored.

For every stream, when an event opens a new time bin the previous bin closes
(empty bins close as zeros). Each load model then forecasts requests/s,
request tokens/s and response tokens/s for the configured horizons; intervals
are recalibrated online (:mod:`predictor.calibration`) per model, quantity and
horizon; forecasts whose target bin has closed are scored into rolling MAE and
coverage; and a ``best`` forecast takes, per quantity and horizon, the model
with the lower rolling error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal, widen_interval
from predictor.events import RequestEvent
from predictor.features import pad_window
from predictor.load import LOAD_QUANTITIES, LoadBins
from predictor.models.base import Forecaster
from predictor.scoring import RollingScores
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.transport import Record

Message = tuple[str, bytes | None, bytes]


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


def score_key(quantity: str, horizon: int) -> str:
    return f"{quantity}@{horizon}"


class LoadForecasting:
    """Per-stream bins, load forecasts per model and ``best``, online scoring and calibration."""

    def __init__(
        self, config: LoadConfig, slots: dict[str, ModelSlot[Forecaster]], metrics: Metrics
    ) -> None:
        self.config, self.slots, self.metrics = config, slots, metrics
        lens = [cur.forecaster.seq_len for s in slots.values() if (cur := s.current())]
        longest = max(lens, default=64)
        self.bins = LoadBins(config.bin_s, capacity=max(512, longest))
        self.conformal = OnlineConformal(size=500, min_count=20)
        self.scores = RollingScores(size=500)
        self._pending: dict[tuple[str, int], list[_Made]] = {}
        self.published = 0

    def warm(self, events: list[RequestEvent]) -> None:
        """Count past events into the bins without forecasting or scoring."""
        for ev in events:
            self.bins.add(
                ev.stream_key(self.config.stream_key),
                ev.timestamp_s,
                ev.request_tokens,
                ev.response_tokens,
            )

    def process(self, valid: list[tuple[RequestEvent, Record]]) -> list[Message]:
        out: list[Message] = []
        for ev, rec in valid:
            stream = ev.stream_key(self.config.stream_key)
            closed = self.bins.add(stream, ev.timestamp_s, ev.request_tokens, ev.response_tokens)
            if not closed:
                continue
            for k, actual in closed:
                self._score(stream, k, actual)
            last = closed[-1][0]
            self._export_actual(stream, closed[-1][1])
            out.extend(self._forecast(stream, last, rec))
        return out

    def _export_actual(self, stream: str, rates: np.ndarray) -> None:
        for c, q in enumerate(LOAD_QUANTITIES):
            self.metrics.actual_value.labels(stream, q).set(rates[c])

    def _score(self, stream: str, k: int, actual: np.ndarray) -> None:
        for made in self._pending.pop((stream, k), []):
            hit = (actual >= made.lower) & (actual <= made.upper)
            err = np.abs(made.point - actual)
            for c, q in enumerate(LOAD_QUANTITIES):
                key = score_key(q, made.horizon)
                self.scores.add(made.model, key, err[c : c + 1], hit[c : c + 1])
                if made.model != "best":
                    self.conformal.update(
                        (made.model, q, made.horizon),
                        actual[c : c + 1],
                        made.raw_lower[c : c + 1],
                        made.raw_upper[c : c + 1],
                    )
                mae, cov = self.scores.mae(made.model, key), self.scores.coverage(made.model, key)
                h = str(made.horizon)
                if mae is not None:
                    self.metrics.online_mae.labels(made.model, "load", q, h).set(mae)
                if cov is not None:
                    self.metrics.online_coverage.labels(made.model, "load", q, h).set(cov)

    def _forecast(self, stream: str, k: int, rec: Record) -> list[Message]:
        history = self.bins.history(stream)
        now = time.time()
        per_model: dict[str, dict[int, _Made]] = {}
        versions: dict[str, int] = {}
        messages: list[Message] = []
        for name, slot in self.slots.items():
            loaded = slot.current()
            if loaded is None:
                continue
            fc = loaded.forecaster
            window, warm = pad_window(history[-fc.seq_len :], fc.seq_len)
            pred = fc.predict(window[None])
            made: dict[int, _Made] = {}
            for h in self.config.horizons:
                if h > fc.horizon:
                    continue
                point, lo, hi = pred.point[0, h - 1], pred.lower[0, h - 1], pred.upper[0, h - 1]
                widen = np.array([self.conformal.widen((name, q, h)) for q in LOAD_QUANTITIES])
                clo, chi = widen_interval(point, lo, hi, widen)
                made[h] = _Made(name, h, point, clo, chi, lo, hi)
            per_model[name], versions[name] = made, loaded.version
            messages.append(
                self._message(
                    stream,
                    name,
                    loaded.version,
                    k,
                    made,
                    warm,
                    rec,
                    now,
                    self._confidence(name, fc),
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
                    self._confidence("best", None),
                )
            )
            per_model["best"] = best
        for name, made in per_model.items():
            for h, m in made.items():
                self._pending.setdefault((stream, k + h), []).append(m)
                for c, q in enumerate(LOAD_QUANTITIES):
                    g = self.metrics.load_value
                    g.labels(stream, name, q, str(h), "point").set(m.point[c])
                    g.labels(stream, name, q, str(h), "lower").set(m.lower[c])
                    g.labels(stream, name, q, str(h), "upper").set(m.upper[c])
        self.published += len(messages)
        for name in per_model:
            self.metrics.forecasts.labels(name, "load").inc()
        return messages

    def _best(self, per_model: dict[str, dict[int, _Made]]) -> dict[int, _Made]:
        """Per horizon and quantity, the entry of the model with the lowest rolling MAE."""
        names = list(per_model)
        out: dict[int, _Made] = {}
        horizons = set.intersection(*(set(m) for m in per_model.values()))
        for h in sorted(horizons):
            point, lo, hi, rlo, rhi = (np.zeros(3) for _ in range(5))
            for c, q in enumerate(LOAD_QUANTITIES):
                choice = self.scores.best(score_key(q, h), names, min_count=5) or names[0]
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

    def _confidence(self, model: str, fc: Forecaster | None) -> float | None:
        online = self.scores.model_coverage(model)
        if online is not None:
            return round(online, 4)
        return getattr(fc, "confidence", None)

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
            entry.update({q: float(m.point[c]) for c, q in enumerate(LOAD_QUANTITIES)})
            entry["interval"] = {
                q: [float(m.lower[c]), float(m.upper[c])] for c, q in enumerate(LOAD_QUANTITIES)
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
            "confidence": confidence,
            "warm": warm,
            "produced_at": now,
        }
        return (self.config.output_topic, stream.encode(), json.dumps(body).encode())
