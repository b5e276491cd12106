"""The serving loop: events in, a next-request forecast per model out, at least once.

Each micro-batch is: poll -> validate (bad events to the dead-letter topic) ->
update the rolling window of each stream -> one batched forward pass per model
-> publish forecasts -> flush (wait for the broker's acknowledgement) -> commit
the input offsets. Offsets are committed only after every forecast and dead
letter of the batch is acknowledged, so a crash replays, never loses, events.
Broker errors are retried with exponential backoff (a failed commit is left to the next
batch's commit); the loop never dies on them.

Models are read from their :class:`~predictor.slot.ModelSlot` once per batch,
so a hot swap lands between batches and every forecast names its version.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal, widen_interval
from predictor.errors import BrokerError, InvalidEvent
from predictor.events import RequestEvent, decode_event
from predictor.features import QUANTITIES
from predictor.forecast import NextRequestEncoder, NextRequestForecast
from predictor.models.base import Forecaster
from predictor.scoring import RollingScores
from predictor.slot import ModelSlot
from predictor.window import RollingWindows
from stream.admission import TimestampGate, admitted
from stream.broker_health import BrokerHealth
from stream.metrics import Metrics
from stream.transport import Record, Sink, Source

log = logging.getLogger(__name__)

#: ``(topic, key, value)`` of one message to publish
Message = tuple[str, bytes | None, bytes]

#: ``json.dumps`` without the check for circular references (a forecast has none): same bytes
_encode_json = json.JSONEncoder(check_circular=False).encode


#: bytes of an invalid message's value kept in its dead letter (``raw``); the letter also
#: carries the full size (``raw_bytes``) so that it stays far below a broker's
#: ``message.max.bytes`` (1 MB by default) whatever was sent
MAX_DEAD_LETTER_RAW_BYTES = 64 * 1024
#: characters of an error's detail kept in its dead letter
MAX_DEAD_LETTER_DETAIL_CHARS = 1024

#: young-generation threshold of the garbage collector while serving (Python's is 700)
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Garbage-collector settings for a long serving loop; call once start-up is done.

    Every batch allocates thousands of short-lived objects (records, events, forecast
    bytes) without reference cycles; with Python's defaults they trigger collections that
    walk the models and libraries loaded at start-up, about a tenth of the loop's time
    (``reqcast bench stream``). Start-up objects are frozen out of collections and the
    young generation is collected every 50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


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

    valid: list[tuple[RequestEvent, Record]]
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


@dataclass(frozen=True)
class ServeConfig:
    """What the serving loop needs besides its ports."""

    input_topic: str
    output_topic: str
    dlq_topic: str | None = None
    stream_key: str = "model"
    batch_max: int = 500
    poll_timeout_s: float = 0.2
    window_capacity: int = 256
    #: records per partition read on assignment to rebuild the windows (and the warmers'
    #: state: load bins); at least ``window_capacity`` are read
    history_records: int = 0
    max_lateness_s: float = 3600.0
    #: how far ahead an event may be stamped (see :mod:`stream.admission`): of the newest
    #: trace-time event accepted, and (with ``max_lateness_s``, the smaller) of the clock
    max_future_s: float = 86400.0
    publish_best: bool = True
    retry_backoff_s: float = 0.2
    max_backoff_s: float = 10.0

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"


@dataclass
class ServeStats:
    """Running totals, for status lines and summaries."""

    events: int = 0
    valid: int = 0
    invalid: int = 0
    forecasts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class ForecastService:
    """One consumer's serving loop over a :class:`Source` and a :class:`Sink`."""

    def __init__(
        self,
        config: ServeConfig,
        source: Source,
        sink: Sink,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: Metrics,
        history: Callable[[list[int]], list[Record]] | None = None,
    ) -> None:
        self.config, self.source, self.sink, self.slots, self.metrics = (
            config,
            source,
            sink,
            slots,
            metrics,
        )
        self.history = history
        self.windows = self._new_windows()
        self.gate = TimestampGate(config.max_lateness_s, config.max_future_s)
        self.scores = RollingScores()
        self.conformal = OnlineConformal()
        self.stats = ServeStats()
        #: reqcast_broker_up; give it the source's connection state and start() its watcher
        #: to follow outages while idle (``reqcast serve`` does)
        self.health = BrokerHealth(metrics.broker_up)
        #: last forecast per stream and model, waiting for the stream's next event to score it
        self._pending: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
        self._assigned: list[int] | None = None
        #: seconds per window of each model's predict, a moving average (see _forecast)
        self._cost: dict[str, float] = {}
        self._inference: ThreadPoolExecutor | None = None
        self.on_batch: Callable[[ForecastService, list[Message]], None] | None = None
        #: called with each batch's valid events (the refit worker's buffer); must not block
        self.observers: list[Callable[[list[RequestEvent]], None]] = []
        #: more forecasts from each batch's valid events (load forecasts), delivered with it
        self.exporters: list[Callable[[], None]] = []
        self.producers: list[Callable[[list[tuple[RequestEvent, Record]]], list[Message]]] = []
        #: called on every assignment with the valid events of the partitions' recent history
        #: (oldest first, possibly none), to rebuild more state from it (the load bins)
        self.warmers: list[Callable[[list[RequestEvent]], None]] = []

    # -- rebalance ---------------------------------------------------------------------------
    def on_assign(self, partitions: list[int]) -> None:
        """Reset windows and rebuild them from the recent history of the partitions now owned."""
        self.windows = self._new_windows()
        self.gate = TimestampGate(self.config.max_lateness_s, self.config.max_future_s)
        self._pending.clear()
        self.metrics.forecast_streams.clear()
        self._assigned = list(partitions)
        if not self.history or not partitions:
            return
        try:
            records = self.history(partitions)
        except BrokerError as exc:
            log.warning("window warm-up skipped: %s", exc)
            return
        # only what the loop would have accepted: a dead letter of the past (undecodable,
        # stamped far ahead) must not become the rebuilt windows' or load bins' newest event
        cfg = self.config
        events, self.gate = admitted(records, cfg.stream_key, cfg.max_lateness_s, cfg.max_future_s)
        self.warm(self._recent(events))
        for warm in self.warmers:
            warm(events)
        log.info(
            "warmed %d streams from %d records of partitions %s",
            len(self.windows),
            len(events),
            partitions,
        )

    def _new_windows(self) -> RollingWindows:
        return RollingWindows(self.config.window_capacity, on_evict=self._forget)

    def _forget(self, stream: str) -> None:
        """Drop what is kept for ``stream`` besides its window (evicted: least recently seen)."""
        self._pending.pop(stream, None)
        self.metrics.forecast_streams.remove(stream)

    def _recent(self, events: list[RequestEvent]) -> list[RequestEvent]:
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
            self.gate.saw(events)

    # -- one micro-batch ---------------------------------------------------------------------
    def process(self, records: list[Record]) -> tuple[list[Message], dict[int, int]]:
        """Forecasts and dead letters for ``records``, and the offsets to commit once they land."""
        messages: list[Message] = []
        offsets: dict[int, int] = {}
        valid: list[tuple[RequestEvent, Record]] = []
        newest: dict[str, float] = {}
        gate = self.gate
        gate.begin()
        for rec in records:
            offsets[rec.partition] = max(offsets.get(rec.partition, 0), rec.offset + 1)
            try:
                event = decode_event(rec.value)
                stream = event.stream_key(self.config.stream_key)
                latest = newest.get(stream, self.windows.last_timestamp(stream))
                gate.check(stream, event.timestamp_s, latest, rec.value)  # too old, too new
                newest[stream] = max(
                    event.timestamp_s, latest if latest is not None else event.timestamp_s
                )
                valid.append((event, rec))
            except InvalidEvent as exc:
                messages.append(self._dead_letter(rec, exc))
            except Exception as exc:  # one message must never stop the loop
                log.exception("event at %d:%d", rec.partition, rec.offset)
                bad = InvalidEvent("undecodable", f"{type(exc).__name__}: {str(exc)[:100]}")
                messages.append(self._dead_letter(rec, bad))
        self.stats.events += len(records)
        self.stats.valid += len(valid)
        self.stats.invalid += len(records) - len(valid)
        self.metrics.events.labels("valid").inc(len(valid))
        if len(records) > len(valid):
            self.metrics.events.labels("invalid").inc(len(records) - len(valid))
        if valid:
            messages.extend(self._forecast(valid))
            for extra in self.producers:
                messages.extend(extra(valid))
            for observe in self.observers:
                observe([ev for ev, _ in valid])
        return messages, offsets

    def _dead_letter(self, rec: Record, exc: InvalidEvent) -> Message:
        self.metrics.invalid.labels(exc.reason).inc()
        kept = rec.value[:MAX_DEAD_LETTER_RAW_BYTES]
        body = {
            "error": exc.reason,
            "detail": exc.detail[:MAX_DEAD_LETTER_DETAIL_CHARS],
            "raw": kept.decode("utf-8", errors="replace"),
            "source": {"partition": rec.partition, "offset": rec.offset},
            "raw_bytes": len(rec.value),
            "raw_truncated": len(kept) < len(rec.value),
        }
        return (self.config.dead_letter_topic, rec.key, json.dumps(body).encode())

    def _update_windows(
        self, events: list[RequestEvent], forecast: bool = True
    ) -> dict[str, tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]:
        """Append events per stream; returns stream -> (event indexes, windows, have, raw rows)."""
        by_stream: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            by_stream.setdefault(ev.stream_key(self.config.stream_key), []).append(i)
        seq_len = self._max_seq_len()
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

    def _max_seq_len(self) -> int:
        lens = [cur.forecaster.seq_len for s in self.slots.values() if (cur := s.current())]
        return max(lens, default=1)

    def _forecast(self, valid: list[tuple[RequestEvent, Record]]) -> list[Message]:
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
        models = [(n, cur) for n, slot in self.slots.items() if (cur := slot.current()) is not None]
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
        return messages

    def _predict(self, name: str, loaded: Any, wins: np.ndarray, have: np.ndarray) -> _Output:
        """One model's calibrated forecasts for a batch's windows (rows in stream order)."""
        fc = loaded.forecaster
        t0 = time.perf_counter()
        pred = fc.predict(wins[:, wins.shape[1] - fc.seq_len :, :])
        per_window = (time.perf_counter() - t0) / max(len(wins), 1)
        self._cost[name] = 0.8 * self._cost.get(name, per_window) + 0.2 * per_window
        point, lo, hi = pred.point[:, 0, :], pred.lower[:, 0, :], pred.upper[:, 0, :]  # [n, 3]
        widen = np.array([self.conformal.widen((name, q)) for q in QUANTITIES])
        clo, chi = widen_interval(point, lo, hi, widen)
        return _Output(loaded.version, point, clo, chi, lo, hi, have >= fc.seq_len, fc)

    def _publish(self, name: str, out: _Output, batch: _Batch) -> list[Message]:
        """Score ``name``'s forecasts whose targets are in the batch, and encode them all."""
        streams, bounds, order, names = batch.streams, batch.bounds, batch.order, batch.names
        for k, stream in enumerate(streams):
            a, b = bounds[k], bounds[k + 1]
            self._score(stream, name, batch.actual[a:b], out.slice(a, b))
        confidence = self.scores.model_coverage(name)
        if confidence is None:
            confidence = getattr(out.forecaster, "confidence", None)
        conf = None if confidence is None else round(confidence, 4)
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
        self.stats.forecasts[name] = self.stats.forecasts.get(name, 0) + len(order)
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
        err = np.abs(point - targets)
        hit = (targets >= lo) & (targets <= hi)
        for c, q in enumerate(QUANTITIES):
            self.scores.add(model, q, err[:, c], hit[:, c])
            if model != "best":
                self.conformal.update((model, q), targets[:, c], raw_lo[:, c], raw_hi[:, c])

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

    def export_scores(self) -> None:
        """Push rolling online error and coverage to the gauges (and run the other exporters)."""
        for export in self.exporters:
            export()
        for model, q in self.scores.tracked():
            mae, cov = self.scores.mae(model, q), self.scores.coverage(model, q)
            if mae is not None:
                self.metrics.online_mae.labels(model, "next_request", q, "1").set(mae)
            if cov is not None:
                self.metrics.online_coverage.labels(model, "next_request", q, "1").set(cov)

    # -- delivery with retries ---------------------------------------------------------------
    def _retry(self, what: str, action: Callable[[], None], stop: threading.Event) -> bool:
        """Run ``action`` until it succeeds (True) or ``stop`` is set (False), backing off."""
        delay = self.config.retry_backoff_s
        while True:
            try:
                action()
                self.health.ok(what)
                return True
            except BrokerError as exc:
                self.health.failed(what)
                self.metrics.broker_errors.labels(what).inc()
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, self.config.max_backoff_s)

    def deliver(self, messages: list[Message], stop: threading.Event) -> bool:
        """Send and flush ``messages``; re-sends the whole set after a failure (duplicates are
        identifiable by ``source`` + ``model``). True once all are acknowledged."""

        def attempt() -> None:
            for topic, key, value in messages:
                self.sink.send(topic, key, value)
            self.sink.flush()

        return self._retry("produce", attempt, stop)

    # -- the loop ----------------------------------------------------------------------------
    def step(self, stop: threading.Event) -> int:
        """Poll, process, deliver and commit one micro-batch; returns the events handled."""
        try:
            records = self.source.poll(self.config.batch_max, self.config.poll_timeout_s)
            # a failed commit is not retried: this poll rejoins the group if need be
            self.health.ok("poll", "commit")
        except BrokerError as exc:
            self.health.failed("poll")
            self.metrics.broker_errors.labels("poll").inc()
            log.warning("poll failed: %s", exc)
            stop.wait(self.config.retry_backoff_s)
            return 0
        if not records:
            return 0
        messages, offsets = self.process(records)
        if not self.deliver(messages, stop):
            return 0
        stamps = np.array([rec.timestamp_ms or np.nan for rec in records], dtype=np.float64)
        stamps = stamps[~np.isnan(stamps)]
        self.metrics.latency.observe_many(np.maximum(time.time() - stamps / 1000.0, 0.0))
        self._commit(offsets)
        self.stats.batches += 1
        self.metrics.batch_size.observe(len(records))
        if self.on_batch:
            self.on_batch(self, messages)
        return len(records)

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit once, never in a loop: the Kafka client already retries what is retriable
        inside ``commit``, and what comes out of it (a member the group moved on from after a
        batch that outlasted ``max.poll.interval.ms``, say) only clears in the next poll, which
        rejoins the group. Skipping a commit is safe: the batch's forecasts are acknowledged,
        and its events come again from the last commit (at least once)."""
        try:
            self.source.commit(offsets)
        except BrokerError as exc:
            self.health.failed("commit")
            self.metrics.broker_errors.labels("commit").inc()
            log.warning("commit failed, this batch may be delivered again: %s", exc)

    def run(
        self, stop: threading.Event, max_events: int | None = None, idle_exit_s: float | None = None
    ) -> ServeStats:
        """Serve until ``stop`` is set, ``max_events`` are handled, or nothing arrives for ``idle_exit_s``."""
        last_data, last_export = time.monotonic(), 0.0
        while not stop.is_set():
            n = self.step(stop)
            now = time.monotonic()
            if n:
                last_data = now
            if now - last_export >= 1.0:
                last_export = now
                self.export_scores()
                lag = self._lag()
                if lag is not None:
                    self.metrics.lag.set(lag)
            if max_events is not None and self.stats.events >= max_events:
                break
            if idle_exit_s is not None and now - last_data >= idle_exit_s:
                break
        self.export_scores()
        return self.stats

    def _lag(self) -> int | None:
        try:
            return self.source.lag()
        except BrokerError:
            return None

    def state(self) -> dict[str, Any]:
        """A snapshot for status lines."""
        elapsed = max(time.monotonic() - self.stats.started, 1e-9)
        return {
            "events": self.stats.events,
            "invalid": self.stats.invalid,
            "events_per_s": self.stats.events / elapsed,
            "forecasts": dict(self.stats.forecasts),
            "versions": {n: s.version for n, s in self.slots.items()},
            "mae": {
                m: {q: self.scores.mae(m, q) for q in QUANTITIES} for m in [*self.slots, "best"]
            },
            "coverage": {m: self.scores.model_coverage(m) for m in [*self.slots, "best"]},
        }
