"""The serving loop: events in, forecasts out, at least once.

:class:`ForecastService` composes three parts: a :class:`~stream.loop.DeliveryLoop` (poll
-> process -> deliver -> commit, with retries and backoff: offsets are committed only after
every forecast and dead letter of the batch is acknowledged, so a crash replays, never
loses, events), :class:`~stream.validation.Validation` (bad events to the dead-letter topic)
and forecasting tasks (:mod:`stream.tasks`): next-request forecasts always, more with
:meth:`ForecastService.add_task` (load forecasts). Each batch's valid events go to every task
in turn; their messages are delivered with the batch's dead letters.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictor.calibration import OnlineConformal
from predictor.errors import BrokerError
from predictor.events import RequestEvent
from predictor.features import QUANTITIES
from predictor.models.base import Forecaster
from predictor.scoring import RollingScores
from predictor.slot import ModelSlot
from predictor.window import RollingWindows
from stream.admission import TimestampGate
from stream.broker_health import BrokerHealth
from stream.loop import DeliveryLoop, LoopConfig, Message, batch_offsets
from stream.metrics import Metrics
from stream.tasks import ForecastTask
from stream.tasks.next_request import NextRequestConfig, NextRequestTask
from stream.transport import Record, Sink, Source
from stream.validation import (
    MAX_DEAD_LETTER_DETAIL_CHARS,
    MAX_DEAD_LETTER_RAW_BYTES,
    Validation,
    ValidationConfig,
)

__all__ = [
    "MAX_DEAD_LETTER_DETAIL_CHARS",
    "MAX_DEAD_LETTER_RAW_BYTES",
    "ForecastService",
    "Message",
    "ServeConfig",
    "ServeStats",
    "tune_gc",
]

log = logging.getLogger(__name__)

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
    #: publish the next-request ``ensemble`` (every expert aggregated online)
    next_request_ensemble: bool = False
    retry_backoff_s: float = 0.2
    max_backoff_s: float = 10.0

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"

    def loop(self) -> LoopConfig:
        return LoopConfig(
            self.batch_max, self.poll_timeout_s, self.retry_backoff_s, self.max_backoff_s
        )

    def validation(self) -> ValidationConfig:
        return ValidationConfig(
            self.dead_letter_topic, self.stream_key, self.max_lateness_s, self.max_future_s
        )

    def next_request(self) -> NextRequestConfig:
        return NextRequestConfig(
            self.output_topic,
            self.stream_key,
            self.window_capacity,
            self.publish_best,
            self.next_request_ensemble,
        )


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
        #: the partitions' recent records on assignment (None: nothing to rebuild from)
        self.history = history
        self.next_request = NextRequestTask(config.next_request(), slots, metrics)
        self.validation = Validation(
            config.validation(), metrics, lambda stream: self.next_request.last_timestamp(stream)
        )
        #: the forecasting tasks, in the order their messages are published
        self.tasks: list[ForecastTask] = [self.next_request]
        self.stats = ServeStats(forecasts=self.next_request.published)
        # the loop calls this service's process and deliver, so that a wrapper set on either
        # (the streaming benchmark times deliver) is what runs
        self.loop = DeliveryLoop(
            config.loop(),
            source,
            sink,
            lambda records: self.process(records),
            metrics,
            deliver=lambda messages, stop: self.deliver(messages, stop),
        )
        self.loop.on_batch = self._delivered
        self.loop.on_tick = self.export_scores
        self.on_batch: Callable[[ForecastService, list[Message]], None] | None = None
        #: called with each batch's valid events (the refit worker's buffer); must not block
        self.observers: list[Callable[[list[RequestEvent]], None]] = []

    def add_task(self, task: ForecastTask) -> None:
        """Run ``task`` on every batch after those added before (its messages follow theirs),
        rebuild it on every assignment and export its metrics with the others'."""
        self.tasks.append(task)

    # -- what tests and status lines read of the next-request task ---------------------------
    @property
    def health(self) -> BrokerHealth:
        """reqcast_broker_up; give it the source's connection state and start() its watcher
        to follow outages while idle (``reqcast serve`` does)"""
        return self.loop.health

    @property
    def gate(self) -> TimestampGate:
        return self.validation.gate

    @property
    def windows(self) -> RollingWindows:
        return self.next_request.windows

    @property
    def scores(self) -> RollingScores:
        return self.next_request.scores

    @property
    def conformal(self) -> OnlineConformal:
        return self.next_request.conformal

    @property
    def _pending(self) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
        return self.next_request._pending

    @property
    def _cost(self) -> dict[str, float]:
        return self.next_request._cost

    @property
    def _inference(self) -> ThreadPoolExecutor | None:
        return self.next_request._inference

    # -- rebalance ---------------------------------------------------------------------------
    def on_assign(self, partitions: list[int]) -> None:
        """Reset the state of every task and rebuild it from the recent history of the
        partitions now owned (only what the loop would have accepted of it)."""
        self.validation.reset()
        events: list[RequestEvent] = []
        if self.history and partitions:
            try:
                events = self.validation.admit_history(self.history(partitions))
            except BrokerError as exc:
                log.warning("window warm-up skipped: %s", exc)
        for task in self.tasks:
            task.on_assign(events)
        self.validation.saw(self.next_request.recent(events))
        if self.history and partitions:
            log.info(
                "warmed %d streams from %d records of partitions %s",
                len(self.windows),
                len(events),
                partitions,
            )

    def warm(self, events: list[RequestEvent]) -> None:
        """Feed past events into the windows without forecasting them."""
        if events:
            self.next_request.warm(events)
            self.validation.saw(events)

    # -- one micro-batch ---------------------------------------------------------------------
    def process(self, records: list[Record]) -> tuple[list[Message], dict[int, int]]:
        """Forecasts and dead letters for ``records``, and the offsets to commit once they land."""
        offsets = batch_offsets(records)
        admitted = self.validation.check(records)
        valid = admitted.valid
        messages = admitted.dead_letters
        self.stats.events += len(records)
        self.stats.valid += len(valid)
        self.stats.invalid += len(records) - len(valid)
        if valid:
            for task in self.tasks:
                messages.extend(task.process(valid))
            for observe in self.observers:
                observe([ev for ev, _ in valid])
        return messages, offsets

    def export_scores(self) -> None:
        """Push every task's rolling online error and coverage to the gauges."""
        for task in self.tasks:
            task.export_metrics()

    # -- the loop ----------------------------------------------------------------------------
    def deliver(self, messages: list[Message], stop: threading.Event) -> bool:
        """Send and flush ``messages`` until they are acknowledged (True) or ``stop`` is set."""
        return self.loop.deliver(messages, stop)

    def step(self, stop: threading.Event) -> int:
        """Poll, process, deliver and commit one micro-batch; returns the events handled."""
        return self.loop.step(stop)

    def _delivered(self, messages: list[Message]) -> None:
        self.stats.batches += 1
        if self.on_batch:
            self.on_batch(self, messages)

    def run(
        self, stop: threading.Event, max_events: int | None = None, idle_exit_s: float | None = None
    ) -> ServeStats:
        """Serve until ``stop`` is set, ``max_events`` are handled, or nothing arrives for
        ``idle_exit_s``."""
        self.loop.run(stop, max_events=max_events, idle_exit_s=idle_exit_s)
        return self.stats

    def state(self) -> dict[str, Any]:
        """A snapshot for status lines."""
        elapsed = max(time.monotonic() - self.stats.started, 1e-9)
        scores = self.scores
        return {
            "events": self.stats.events,
            "invalid": self.stats.invalid,
            "events_per_s": self.stats.events / elapsed,
            "forecasts": dict(self.stats.forecasts),
            "versions": {n: s.version for n, s in self.slots.items()},
            "mae": {m: {q: scores.mae(m, q) for q in QUANTITIES} for m in [*self.slots, "best"]},
            "coverage": {m: scores.model_coverage(m) for m in [*self.slots, "best"]},
        }
