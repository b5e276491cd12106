"""Next-request forecasts: a rolling window per stream, one batched forward pass per model
and micro-batch, online scoring and calibration, and a ``best`` forecast.

Each valid event extends its stream's window; every model forecasts the stream's next
request (gap, request and response tokens) from the window that ends at the event. The
costliest model (per window, as measured) runs on an inference thread while this thread
runs and encodes the others: torch releases the GIL while it computes. A forecast is scored
when its stream's next event arrives (rolling MAE and coverage, and the interval's online
calibration); ``best`` takes, per quantity, the model with the lower rolling error; and,
with ``ensemble`` in the config, ``ensemble`` aggregates every expert online
(:mod:`stream.tasks.next_ensemble`), its interval calibrated online around its point like
every other model's.

Models are read from their :class:`~predictor.slot.ModelSlot` once per batch, so a hot swap
lands between batches and every forecast names its version.
"""

from __future__ import annotations

import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal
from predictor.events import RequestEvent
from predictor.features import QUANTITIES
from predictor.forecast import NextRequestEncoder, NextRequestForecast
from predictor.models.base import Forecaster
from predictor.scoring import RollingScores
from predictor.window import RollingWindows
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
from stream.tasks.next_ensemble import ENSEMBLE, HORIZON, NextRequestEnsemble
from stream.validation import Valid

#: ``json.dumps`` without the check for circular references (a forecast has none): same bytes
_encode_json = json.JSONEncoder(check_circular=False).encode


@dataclass(frozen=True)
class NextRequestConfig:
    output_topic: str
    stream_key: str = "model"
    #: requests kept per stream
    window_capacity: int = 256
    publish_best: bool = True
    #: publish ``ensemble``: every expert aggregated online (:mod:`stream.tasks.next_ensemble`)
    ensemble: bool = False


@dataclass(frozen=True)
class _Output:
    """One model's forecasts for a batch, rows in the batch's stream order, ``[n, 3]`` each."""

    version: int
    point: np.ndarray
    lower: np.ndarray  # calibrated online
    upper: np.ndarray
    raw_lower: np.ndarray  # the model's own interval, for calibration
    raw_upper: np.ndarray
    warm: np.ndarray  # [n] bool
    forecaster: Forecaster | None

    def slice(self, a: int, b: int) -> _Output:
        return _Output(
            self.version,
            self.point[a:b],
            self.lower[a:b],
            self.upper[a:b],
            self.raw_lower[a:b],
            self.raw_upper[a:b],
            self.warm[a:b],
            self.forecaster,
        )


def _best_of(picked: list[_Output], version: int) -> _Output:
    """Column ``c`` (quantity) of every array from ``picked[c]``: the model chosen for it."""

    def pick(attr: str) -> np.ndarray:
        return np.stack([getattr(o, attr)[:, c] for c, o in enumerate(picked)], axis=-1)

    return _Output(
        version,
        pick("point"),
        pick("lower"),
        pick("upper"),
        pick("raw_lower"),
        pick("raw_upper"),
        np.all([o.warm for o in picked], axis=0),
        None,
    )


@dataclass(frozen=True)
class _Batch:
    """A micro-batch's valid events as the models see them: grouped by stream."""

    valid: list[Valid]
    streams: list[str]
    names: list[str]  # the stream of each event
    order: list[int]  # event indexes, stream by stream (the models' row order)
    bounds: list[int]  # rows bounds[k]:bounds[k+1] are streams[k]'s
    actual: np.ndarray  # [n, 3] each row's own gap and tokens
    now: float

    @functools.cached_property
    def event_parts(self) -> list[str]:
        """Each event's share of its forecast messages (the same for every model)."""
        part = NextRequestEncoder.event_part
        return [part(rec.partition, rec.offset, ev.timestamp_s) for ev, rec in self.valid]


class NextRequestTask:
    """Rolling windows, next-request forecasts per model and ``best``, online scores."""

    def __init__(self, config: NextRequestConfig, slots: Slots, metrics: Metrics) -> None:
        self.config, self.slots, self.metrics = config, slots, metrics
        self.windows = self._new_windows()
        self.scores = RollingScores()
        self.conformal = OnlineConformal()
        #: forecasts published per model (the service's ``stats.forecasts``)
        self.published: dict[str, int] = {}
        #: last forecast per stream and model, waiting for the stream's next event to score it
        self._pending: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
        #: seconds per window of each model's predict, a moving average (see process)
        self._cost: dict[str, float] = {}
        self._inference: ThreadPoolExecutor | None = None
        self.ensemble = NextRequestEnsemble(list(slots)) if config.ensemble else None
        #: the drift check fed with the networks' matured errors (None: none)
        self.drift: DriftWatch | None = None

    # -- state -------------------------------------------------------------------------------
    def _new_windows(self) -> RollingWindows:
        return RollingWindows(self.config.window_capacity, on_evict=self._forget)

    def _forget(self, stream: str) -> None:
        """Drop what is kept for ``stream`` besides its window (evicted: least recently seen)."""
        self._pending.pop(stream, None)
        self.metrics.forecast_streams.remove(stream)
        if self.ensemble is not None:
            self.ensemble.forget(stream)
            self.metrics.next_request_ensemble_weights.remove(stream)

    def last_timestamp(self, stream: str) -> float | None:
        """The newest event time in ``stream``'s window (None: no window)."""
        return self.windows.last_timestamp(stream)

    def on_assign(self, events: list[RequestEvent]) -> None:
        """New windows, rebuilt from the last ``window_capacity`` of ``events`` per stream;
        the ensemble's weights rebuilt from all of ``events`` (:meth:`prime`)."""
        self.windows = self._new_windows()
        self._pending.clear()
        self.metrics.forecast_streams.clear()
        self.metrics.next_request_ensemble_weights.clear()
        self.warm(self.recent(events))
        self.prime(events)

    def prime(self, events: list[RequestEvent], chunk: int = 2048) -> None:
        """Replay ``events`` (in order) through the ensemble, each stream's aggregation
        afresh, so that its weights are what an uninterrupted run over the same events with
        the networks now served would have learnt. Nothing is published or scored."""
        ens = self.ensemble
        if ens is None:
            return
        ens.clear()
        models = ready(self.slots)
        ens.note_versions({name: loaded.version for name, loaded in models})
        seq_len = self._seq_len()
        windows = RollingWindows(self.config.window_capacity, max_streams=len(events) + 1)
        by_stream: dict[str, list[RequestEvent]] = {}
        for ev in events:
            by_stream.setdefault(ev.stream_key(self.config.stream_key), []).append(ev)
        for stream, evs in by_stream.items():
            for a in range(0, len(evs), chunk):
                part = evs[a : a + chunk]
                req = np.array([ev.request_tokens for ev in part], dtype=np.float64)
                resp = np.array([ev.response_tokens for ev in part], dtype=np.float64)
                ts = np.array([ev.timestamp_s for ev in part])
                wins, _, gaps = windows.extend(stream, ts, req, resp, seq_len)
                nets = {
                    name: loaded.forecaster.predict(
                        wins[:, seq_len - loaded.forecaster.seq_len :]
                    ).point[:, 0, :]
                    for name, loaded in models
                }
                rows = np.stack([gaps, req, resp], axis=-1)
                ens.step(stream, rows, nets, ens.expert_points(wins))
            if stream not in self.windows:  # not among the streams kept: keep no weights
                ens.forget(stream)

    def _seq_len(self) -> int:
        """The window every forecaster of a batch can draw on (the ensemble's baselines too)."""
        top = longest_window(self.slots, default=1)
        return top if self.ensemble is None else max(top, self.ensemble.seq_len)

    def recent(self, events: list[RequestEvent]) -> list[RequestEvent]:
        """The last ``window_capacity`` of ``events`` per stream, in order (the windows keep
        no more; building windows for the rest would only cost memory)."""
        left: dict[str, int] = {}
        keep = []
        for ev in reversed(events):
            stream = ev.stream_key(self.config.stream_key)
            n = left.get(stream, self.config.window_capacity)
            if n > 0:
                keep.append(ev)
                left[stream] = n - 1
        return keep[::-1]

    def warm(self, events: list[RequestEvent]) -> None:
        """Feed past events into the windows without forecasting them."""
        if events:
            self._update_windows(events, forecast=False)

    def _update_windows(
        self, events: list[RequestEvent], forecast: bool = True
    ) -> dict[str, tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        """Append events per stream; returns stream -> (event indexes, windows, have, raw rows)."""
        by_stream: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            by_stream.setdefault(ev.stream_key(self.config.stream_key), []).append(i)
        seq_len = self._seq_len()
        out = {}
        for stream, idx in by_stream.items():
            ts = np.array([events[i].timestamp_s for i in idx])
            req = np.array([events[i].request_tokens for i in idx], dtype=np.float64)
            resp = np.array([events[i].response_tokens for i in idx], dtype=np.float64)
            wins, have, gaps = self.windows.extend(stream, ts, req, resp, seq_len)
            if forecast:
                out[stream] = (idx, wins, have, np.stack([gaps, req, resp], axis=-1))
        self.metrics.streams.set(len(self.windows))
        return out

    # -- one micro-batch ---------------------------------------------------------------------
    def process(self, valid: list[Valid]) -> list[Message]:
        """A forecast per model (and ``best``) for every event of ``valid``."""
        if not valid:
            return []
        events = [ev for ev, _ in valid]
        per_stream = self._update_windows(events)
        streams = list(per_stream)
        batch = _Batch(
            valid=valid,
            streams=streams,
            names=[ev.stream_key(self.config.stream_key) for ev in events],
            order=[i for s in streams for i in per_stream[s][0]],
            bounds=np.cumsum([0] + [len(per_stream[s][0]) for s in streams]).tolist(),
            actual=np.concatenate([per_stream[s][3] for s in streams]),  # [n, 3] the events' rows
            now=time.time(),
        )
        all_wins = np.concatenate([per_stream[s][1] for s in streams])  # [n, L_max, 3]
        all_have = np.concatenate([per_stream[s][2] for s in streams])
        models = ready(self.slots)
        names = [n for n, _ in models]  # slot order: `best` follows the first until scored
        # `best` follows the rolling error before this batch's forecasts are scored
        best = [self.scores.best(q, names) or names[0] for q in QUANTITIES] if names else []
        # the costliest model (per window, as measured) runs on the inference thread while
        # this one runs and publishes the others: torch releases the GIL while it computes
        models.sort(key=lambda m: -self._cost.get(m[0], 0.0))
        background = None
        if len(models) > 1:
            if self._inference is None:
                self._inference = ThreadPoolExecutor(1, thread_name_prefix="inference")
            background = self._inference.submit(self._predict, *models[0], all_wins, all_have)
        outputs: dict[str, _Output] = {}
        messages: list[Message] = []
        for name, loaded in models[1:] if background is not None else models:
            outputs[name] = self._predict(name, loaded, all_wins, all_have)
            messages += self._publish(name, outputs[name], batch)
        if background is not None:
            name = models[0][0]
            outputs[name] = background.result()
            messages += self._publish(name, outputs[name], batch)
        if self.config.publish_best and len(outputs) > 1:
            version = max(o.version for o in outputs.values())
            messages += self._publish("best", _best_of([outputs[b] for b in best], version), batch)
        if self.ensemble is not None:
            out = self._ensemble(outputs, batch, all_wins, all_have)
            messages += self._publish(ENSEMBLE, out, batch)
            self._export_weights(batch.streams)
        return messages

    def _ensemble(
        self, outputs: dict[str, _Output], batch: _Batch, wins: np.ndarray, have: np.ndarray
    ) -> _Output:
        """The ensemble's forecasts for a batch (rows in stream order): its points, and an
        interval that is the online calibration's widening around them."""
        ens = self.ensemble
        assert ens is not None
        ens.note_versions({name: o.version for name, o in outputs.items()})
        others = ens.expert_points(wins)  # [n, 3, E]
        point = np.empty((len(wins), len(QUANTITIES)))
        for k, stream in enumerate(batch.streams):
            a, b = batch.bounds[k], batch.bounds[k + 1]
            nets = {name: o.point[a:b] for name, o in outputs.items()}
            point[a:b] = ens.step(stream, batch.actual[a:b], nets, others[a:b])
            if stream not in self.windows:  # evicted by a later stream of the batch
                ens.forget(stream)
        keys = [(ENSEMBLE, q) for q in QUANTITIES]
        lo, hi = calibrated(self.conformal, keys, point, point, point)
        # warm as soon as one of its experts has a full window
        warm = have >= ens.shortest
        for o in outputs.values():
            warm |= o.warm
        version = max((o.version for o in outputs.values()), default=0)
        return _Output(version, point, lo, hi, point, point, warm, None)

    def _export_weights(self, streams: list[str]) -> None:
        """The ensemble's current weights of each of ``streams`` as gauges."""
        ens = self.ensemble
        assert ens is not None
        g = self.metrics.next_request_ensemble_weights
        for stream in streams:
            w = ens.weights(stream)
            if w is None:
                continue
            for c, q in enumerate(QUANTITIES):
                for j, expert in enumerate(ens.names):
                    g.set((stream, expert, q, str(HORIZON)), w[c, j])

    def _predict(self, name: str, loaded: Any, wins: np.ndarray, have: np.ndarray) -> _Output:
        """One model's calibrated forecasts for a batch's windows (rows in stream order)."""
        fc = loaded.forecaster
        t0 = time.perf_counter()
        pred = fc.predict(wins[:, wins.shape[1] - fc.seq_len :, :])
        per_window = (time.perf_counter() - t0) / max(len(wins), 1)
        self._cost[name] = 0.8 * self._cost.get(name, per_window) + 0.2 * per_window
        point, lo, hi = pred.point[:, 0, :], pred.lower[:, 0, :], pred.upper[:, 0, :]  # [n, 3]
        clo, chi = calibrated(self.conformal, [(name, q) for q in QUANTITIES], point, lo, hi)
        return _Output(loaded.version, point, clo, chi, lo, hi, have >= fc.seq_len, fc)

    def _publish(self, name: str, out: _Output, batch: _Batch) -> list[Message]:
        """Score ``name``'s forecasts whose targets are in the batch, and encode them all."""
        streams, bounds, order, names = batch.streams, batch.bounds, batch.order, batch.names
        for k, stream in enumerate(streams):
            a, b = bounds[k], bounds[k + 1]
            self._score(stream, name, batch.actual[a:b], out.slice(a, b))
        conf = confidence(self.scores, name, out.forecaster)
        conf = None if conf is None else round(conf, 4)
        # Python floats and bools once per batch: indexing numpy per value costs more
        point, lower, upper = out.point.tolist(), out.lower.tolist(), out.upper.tolist()
        warm = out.warm.tolist()
        finite = np.isfinite(out.point).all(axis=1) & np.isfinite(out.lower).all(axis=1)
        finite &= np.isfinite(out.upper).all(axis=1)
        encoder = NextRequestEncoder(name, out.version, conf, batch.now)
        parts = batch.event_parts
        topic = self.config.output_topic
        keys = {stream: stream.encode() for stream in streams}
        messages: list[Message] = []
        for j, i in enumerate(order):
            ev, rec = batch.valid[i]
            p, lo, hi = point[j], lower[j], upper[j]
            if finite[j]:
                raw = encoder.encode_part(names[i], parts[i], ev.timestamp_s, p, lo, hi, warm[j])
            else:  # JSON has no NaN: to_dict keeps what json.dumps makes of it
                f = NextRequestForecast(
                    stream=names[i],
                    model=name,
                    model_version=out.version,
                    event_timestamp_s=ev.timestamp_s,
                    gap_s=p[0],
                    gap_interval_s=(lo[0], hi[0]),
                    request_tokens=p[1],
                    request_tokens_interval=(lo[1], hi[1]),
                    response_tokens=p[2],
                    response_tokens_interval=(lo[2], hi[2]),
                    confidence=conf,
                    warm=bool(warm[j]),
                    source_partition=rec.partition,
                    source_offset=rec.offset,
                    produced_at_s=batch.now,
                )
                raw = _encode_json(f.to_dict()).encode()
            messages.append((topic, keys[names[i]], raw))
        self.metrics.forecasts.labels(name, "next_request").inc(len(order))
        self.published[name] = self.published.get(name, 0) + len(order)
        for k, stream in enumerate(streams):
            if stream not in self.windows:  # evicted by a later stream of this batch
                continue
            j = bounds[k + 1] - 1  # the stream's newest forecast
            ev = batch.valid[order[j]][0]
            self._export_latest(
                stream, name, ev.timestamp_s, out.point[j], out.lower[j], out.upper[j]
            )
        return messages

    def _score(self, stream: str, model: str, actual: np.ndarray, out: _Output) -> None:
        """Score the forecasts whose target (the stream's next event) is in this batch."""
        rows = [out.point, out.lower, out.upper, out.raw_lower, out.raw_upper]
        prev = self._pending.get(stream, {}).get(model)
        if prev is not None:
            rows = [np.concatenate([p[None], r]) for p, r in zip(prev, rows, strict=True)]
            targets = actual
        else:
            targets = actual[1:]
        if stream in self.windows:  # else a later stream of the batch evicted it: keep nothing
            self._pending.setdefault(stream, {})[model] = tuple(r[-1] for r in rows)
        n = len(targets)
        if n == 0:
            return
        point, lo, hi, raw_lo, raw_hi = (r[:n] for r in rows)
        keys: list[tuple[str, Any]] = [(q, (model, q)) for q in QUANTITIES]
        score(self.scores, self.conformal, model, keys, targets, (point, lo, hi, raw_lo, raw_hi))
        if self.drift is not None and out.forecaster is not None:  # a network, not `best`
            self.drift.observe(model, out.version, np.abs(point - targets))

    def _export_latest(
        self, stream: str, model: str, ts: float, point: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> None:
        g = self.metrics.forecast_streams
        for c, q in enumerate(QUANTITIES):
            g.set((stream, model, q, "point"), point[c])
            g.set((stream, model, q, "lower"), lo[c])
            g.set((stream, model, q, "upper"), hi[c])
        g.set((stream, model, "timestamp", "point"), ts + point[0])
        g.set((stream, model, "timestamp", "lower"), ts + lo[0])
        g.set((stream, model, "timestamp", "upper"), ts + hi[0])

    def export_metrics(self) -> None:
        """Push rolling online error and coverage to the gauges."""
        export_scores(self.scores, self.metrics, "next_request", lambda q: (q, "1"))
        if self.drift is not None:
            self.drift.check()
