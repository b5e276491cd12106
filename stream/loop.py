"""The delivery loop: poll -> process -> deliver -> commit, at least once.

:class:`DeliveryLoop` knows nothing about forecasting. It polls a micro-batch from a
:class:`~stream.transport.Source`, hands it to ``process`` (records in; messages to publish
and the offsets to commit once they land out), sends the messages to a
:class:`~stream.transport.Sink` and flushes (waits for the broker's acknowledgement), and
only then commits the offsets. A crash therefore replays, never loses, records.

Broker errors never end the loop: a failed poll is logged and retried after
``retry_backoff_s``; a failed send or flush re-sends the whole batch with exponential
backoff up to ``max_backoff_s`` until it lands or ``stop`` is set (then nothing is
committed); a failed commit is not retried (see :meth:`DeliveryLoop.commit`). Every
operation reports to a :class:`~stream.broker_health.BrokerHealth` (``reqcast_broker_up``)
and failures count in ``reqcast_broker_errors_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from predictor.errors import BrokerError
from stream.broker_health import BrokerHealth
from stream.metrics import Metrics
from stream.transport import Record, Sink, Source

log = logging.getLogger(__name__)

#: ``(topic, key, value)`` of one message to publish
Message = tuple[str, bytes | None, bytes]

#: records in; the messages they give and ``partition -> next offset`` to commit out
Process = Callable[[list[Record]], tuple[list[Message], dict[int, int]]]


@dataclass(frozen=True)
class LoopConfig:
    """Batching and retry settings of a :class:`DeliveryLoop`."""

    batch_max: int = 500
    poll_timeout_s: float = 0.2
    retry_backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    #: seconds between two calls of ``on_tick`` (and reads of the lag) while running
    tick_s: float = 1.0


@dataclass
class LoopStats:
    """What the loop has handled: records processed, batches committed."""

    events: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


def batch_offsets(records: list[Record]) -> dict[int, int]:
    """``partition -> next offset to read`` after ``records``."""
    offsets: dict[int, int] = {}
    for rec in records:
        offsets[rec.partition] = max(offsets.get(rec.partition, 0), rec.offset + 1)
    return offsets


class DeliveryLoop:
    """Poll, process, deliver and commit micro-batches of ``source`` into ``sink``.

    Hooks: ``on_batch(messages)`` after each committed batch, ``on_tick()`` about every
    ``tick_s`` seconds while :meth:`run` runs and once when it ends (gauges), and
    ``deliver``, the delivery the loop calls (by default :meth:`deliver`; a wrapper of it,
    such as the benchmark's timing, goes there). ``sink`` None: ``process`` publishes
    nothing and batches are committed as soon as they are processed. ``observe_latency``:
    observe each record's broker timestamp to acknowledgement and the batch size.
    """

    def __init__(
        self,
        config: LoopConfig,
        source: Source,
        sink: Sink | None,
        process: Process,
        metrics: Metrics,
        *,
        observe_latency: bool = True,
        deliver: Callable[[list[Message], threading.Event], bool] | None = None,
    ) -> None:
        self.config, self.source, self.sink, self.process = config, source, sink, process
        self.metrics = metrics
        self.observe_latency = observe_latency
        self.stats = LoopStats()
        #: reqcast_broker_up; give it the source's connection state and start() its watcher
        #: to follow outages while idle (``reqcast serve`` does)
        self.health = BrokerHealth(metrics.broker_up)
        self.on_batch: Callable[[list[Message]], None] | None = None
        self.on_tick: Callable[[], None] | None = None
        self._deliver = deliver or self.deliver

    # -- delivery with retries ---------------------------------------------------------------
    def retry(self, what: str, action: Callable[[], None], stop: threading.Event) -> bool:
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
        sink = self.sink
        if sink is None:
            return True

        def attempt() -> None:
            for topic, key, value in messages:
                sink.send(topic, key, value)
            sink.flush()

        return self.retry("produce", attempt, stop)

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit once, never in a loop: the Kafka client already retries what is retriable
        inside ``commit``, and what comes out of it (a member the group moved on from after a
        batch that outlasted ``max.poll.interval.ms``, say) only clears in the next poll, which
        rejoins the group. Skipping a commit is safe: the batch's messages are acknowledged,
        and its records come again from the last commit (at least once)."""
        try:
            self.source.commit(offsets)
        except BrokerError as exc:
            self.health.failed("commit")
            self.metrics.broker_errors.labels("commit").inc()
            log.warning("commit failed, this batch may be delivered again: %s", exc)

    # -- the loop ----------------------------------------------------------------------------
    def step(self, stop: threading.Event) -> int:
        """Poll, process, deliver and commit one micro-batch; returns the records handled."""
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
        self.stats.events += len(records)
        if not self._deliver(messages, stop):
            return 0
        if self.observe_latency:
            stamps = np.array([rec.timestamp_ms or np.nan for rec in records], dtype=np.float64)
            stamps = stamps[~np.isnan(stamps)]
            self.metrics.latency.observe_many(np.maximum(time.time() - stamps / 1000.0, 0.0))
        self.commit(offsets)
        self.stats.batches += 1
        if self.observe_latency:
            self.metrics.batch_size.observe(len(records))
        if self.on_batch:
            self.on_batch(messages)
        return len(records)

    def run(
        self,
        stop: threading.Event,
        max_events: int | None = None,
        idle_exit_s: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> LoopStats:
        """Run until ``stop`` is set, ``max_events`` records are handled, nothing arrives for
        ``idle_exit_s`` seconds, or ``until()`` is true (checked after every step)."""
        last_data, last_tick = time.monotonic(), 0.0
        while not stop.is_set():
            n = self.step(stop)
            now = time.monotonic()
            if n:
                last_data = now
            if now - last_tick >= self.config.tick_s:
                last_tick = now
                self.tick()
            if max_events is not None and self.stats.events >= max_events:
                break
            if idle_exit_s is not None and now - last_data >= idle_exit_s:
                break
            if until is not None and until():
                break
        if self.on_tick:
            self.on_tick()
        return self.stats

    def tick(self) -> None:
        """Run ``on_tick`` and export the consumer lag."""
        if self.on_tick:
            self.on_tick()
        lag = self.lag()
        if lag is not None:
            self.metrics.lag.set(lag)

    def lag(self) -> int | None:
        """The source's lag, None when unknown or the broker does not answer."""
        try:
            return self.source.lag()
        except BrokerError:
            return None
