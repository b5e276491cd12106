"""Which events a stream can take, by timestamp: not too old, not from the future.

A stream's windows, load bins and lateness check all follow its newest accepted time, so
one event stamped far ahead would make every later event of the stream ``too_old``. Such
an event is the one rejected, as ``future_timestamp``:

* **Ahead of the clock.** An event stamped more than ``min(max_future_s, max_lateness_s)``
  after this machine's clock. Timestamps are either epoch seconds, which cannot come from
  the future, or seconds from the start of a trace (synthetic, BurstGPT replays), which
  stay far below the clock. Within that tolerance an accepted event cannot make the
  stream's current events too old.
* **Ahead of the consumer.** For trace time (timestamps below :data:`EPOCH_S`, the clock
  says nothing about them): an event more than ``max_future_s`` after the newest trace-time
  event this consumer has accepted in any stream (streams that are idle while others run
  are not held against themselves). A trace can really jump (a gap, another trace): the
  jump is taken once the stream's next event agrees with it (is within ``max_future_s`` of
  the rejected one and is not the same message again), so a real jump costs one event,
  which is in the dead-letter topic. Streams on epoch time have only the clock check: a
  stream idle over a weekend takes its Monday events.

The first trace-time event a consumer sees (no history, no other stream) has nothing to be
compared with but the clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from predictor.errors import InvalidEvent
from predictor.events import RequestEvent, decode_event
from stream.transport import Record

#: Timestamps at or above this (2001-09-09 in epoch seconds) are read as epoch seconds,
#: below it as seconds from the start of a trace.
EPOCH_S = 1e9

#: Streams remembered with a rejected jump at once (each is forgotten once it takes an event).
MAX_JUMPS = 1024


class TimestampGate:
    """The timestamp checks of :mod:`stream.admission`, for one consumer's streams.

    Call :meth:`begin` once per batch (it reads the clock) and :meth:`check` per event with
    its stream's newest accepted time; an event :meth:`check` lets through is accepted.
    """

    def __init__(self, max_lateness_s: float, max_future_s: float) -> None:
        self.max_lateness_s = max_lateness_s
        self.max_future_s = max_future_s
        #: newest accepted trace-time timestamp (below :data:`EPOCH_S`) of any stream
        self.newest_trace: float | None = None
        #: stream -> (timestamp, message hash) of its last event rejected as a jump
        self._jumps: dict[str, tuple[float, int]] = {}
        self._clock_limit = 0.0
        self.begin()

    def begin(self) -> None:
        """Read the clock for the next events."""
        self._clock_limit = time.time() + min(self.max_future_s, self.max_lateness_s)

    def check(self, stream: str, ts: float, latest: float | None, raw: bytes) -> None:
        """Raise :class:`InvalidEvent` unless an event at ``ts`` fits ``stream``, whose newest
        accepted time is ``latest`` (None: none yet); if it does, count it as accepted."""
        if latest is not None and ts < latest - self.max_lateness_s:
            raise InvalidEvent("too_old", f"{latest - ts:.0f}s older than the stream")
        if ts > self._clock_limit:
            raise InvalidEvent("future_timestamp", f"{ts - time.time():.0f}s ahead of the clock")
        if latest is None or latest < EPOCH_S:  # trace time (or a new stream)
            ref = self.newest_trace
            if ref is not None and ts > ref + self.max_future_s:
                self._jump(stream, ts, ref, raw)
            if ts < EPOCH_S and (ref is None or ts > ref):
                self.newest_trace = ts
        if self._jumps:
            self._jumps.pop(stream, None)

    def saw(self, events: Iterable[RequestEvent]) -> None:
        """Count ``events`` as accepted without checking them (windows warmed from a trace)."""
        trace = [ev.timestamp_s for ev in events if ev.timestamp_s < EPOCH_S]
        if trace and (self.newest_trace is None or max(trace) > self.newest_trace):
            self.newest_trace = max(trace)

    def _jump(self, stream: str, ts: float, ref: float, raw: bytes) -> None:
        """Let a jump through if the stream's previous event made the same one, else raise."""
        seen = self._jumps.get(stream)
        digest = hash(raw)
        if seen is not None and abs(ts - seen[0]) <= self.max_future_s and digest != seen[1]:
            return  # two events of the stream agree: the trace moved on
        if len(self._jumps) >= MAX_JUMPS:
            self._jumps.clear()
        self._jumps[stream] = (ts, digest)
        raise InvalidEvent(
            "future_timestamp", f"{ts - ref:.0f}s ahead of the newest event accepted"
        )


def admitted(
    records: list[Record], stream_key: str, max_lateness_s: float, max_future_s: float
) -> tuple[list[RequestEvent], TimestampGate]:
    """The events of ``records`` (recent history of partitions, each in offset order) that the
    serving loop accepts, oldest first, and a gate that goes on from them.

    Each partition is checked on its own, in offset order, as the loop met it (a stream may
    span partitions with ``--stream-key none``, whose interleaving is not known afterwards).
    """
    by_partition: dict[int, list[Record]] = {}
    for rec in records:
        by_partition.setdefault(rec.partition, []).append(rec)
    events: list[RequestEvent] = []
    newest: list[float] = []
    for recs in by_partition.values():
        gate = TimestampGate(max_lateness_s, max_future_s)
        latest: dict[str, float] = {}
        for rec in recs:
            try:
                ev = decode_event(rec.value)
                stream = ev.stream_key(stream_key)
                last = latest.get(stream)
                gate.check(stream, ev.timestamp_s, last, rec.value)
            except Exception:  # InvalidEvent, or a bug: the loop dead-lettered it
                continue
            latest[stream] = ev.timestamp_s if last is None else max(last, ev.timestamp_s)
            events.append(ev)
        if gate.newest_trace is not None:
            newest.append(gate.newest_trace)
    events.sort(key=lambda ev: ev.timestamp_s)
    out = TimestampGate(max_lateness_s, max_future_s)
    out.newest_trace = max(newest, default=None)
    return events, out
