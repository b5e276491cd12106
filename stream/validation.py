"""Admission of a micro-batch: decode each record, check its timestamp, dead-letter the rest.

A record becomes a valid event when it decodes (:func:`predictor.events.decode_event`)
and its timestamp fits its stream (:class:`~stream.admission.TimestampGate`: not too old,
not from the future). Every other record becomes a dead letter, a JSON message naming the
reason, the source partition and offset and (the first 64 KiB of) the raw value, counted in
``reqcast_invalid_events_total``; any exception of one record makes it a dead letter, never
stops the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from predictor.errors import InvalidEvent
from predictor.events import RequestEvent, decode_event
from stream.admission import TimestampGate, admitted
from stream.loop import Message
from stream.metrics import Metrics
from stream.transport import Record

log = logging.getLogger(__name__)

#: bytes of an invalid message's value kept in its dead letter (``raw``); the letter also
#: carries the full size (``raw_bytes``) so that it stays far below a broker's
#: ``message.max.bytes`` (1 MB by default) whatever was sent
MAX_DEAD_LETTER_RAW_BYTES = 64 * 1024
#: characters of an error's detail kept in its dead letter
MAX_DEAD_LETTER_DETAIL_CHARS = 1024

#: a valid event and the record it came in
Valid = tuple[RequestEvent, Record]


@dataclass(frozen=True)
class ValidationConfig:
    dead_letter_topic: str
    stream_key: str = "model"
    max_lateness_s: float = 3600.0
    max_future_s: float = 86400.0


@dataclass
class Admitted:
    """One batch sorted out: valid events in record order, and the dead letters."""

    valid: list[Valid]
    dead_letters: list[Message]


def dead_letter(topic: str, rec: Record, exc: InvalidEvent) -> Message:
    """The dead-letter message of ``rec``, rejected for ``exc``."""
    kept = rec.value[:MAX_DEAD_LETTER_RAW_BYTES]
    body = {
        "error": exc.reason,
        "detail": exc.detail[:MAX_DEAD_LETTER_DETAIL_CHARS],
        "raw": kept.decode("utf-8", errors="replace"),
        "source": {"partition": rec.partition, "offset": rec.offset},
        "raw_bytes": len(rec.value),
        "raw_truncated": len(kept) < len(rec.value),
    }
    return (topic, rec.key, json.dumps(body).encode())


class Validation:
    """Decoding and the timestamp gate of one consumer's streams.

    ``last_timestamp(stream)`` is the newest time the stream has accepted before this batch
    (the rolling windows know it); the gate goes on from it.
    """

    def __init__(
        self,
        config: ValidationConfig,
        metrics: Metrics,
        last_timestamp: Callable[[str], float | None],
    ) -> None:
        self.config, self.metrics, self.last_timestamp = config, metrics, last_timestamp
        self.gate = self._new_gate()

    def _new_gate(self) -> TimestampGate:
        return TimestampGate(self.config.max_lateness_s, self.config.max_future_s)

    def reset(self) -> None:
        """Forget what was accepted (the partitions owned changed)."""
        self.gate = self._new_gate()

    def admit_history(self, records: list[Record]) -> list[RequestEvent]:
        """What the loop would have accepted of ``records`` (recent history, partition by
        partition in offset order), oldest first; the gate goes on from them. A dead letter of
        the past (undecodable, stamped far ahead) must not become the newest event of state
        rebuilt from it."""
        cfg = self.config
        events, self.gate = admitted(records, cfg.stream_key, cfg.max_lateness_s, cfg.max_future_s)
        return events

    def saw(self, events: list[RequestEvent]) -> None:
        """Count ``events`` as accepted without checking them (state warmed from a trace)."""
        self.gate.saw(events)

    def check(self, records: list[Record]) -> Admitted:
        """Sort ``records`` into valid events and dead letters, and count them."""
        valid: list[Valid] = []
        letters: list[Message] = []
        newest: dict[str, float] = {}
        gate = self.gate
        gate.begin()
        stream_key = self.config.stream_key
        for rec in records:
            try:
                event = decode_event(rec.value)
                stream = event.stream_key(stream_key)
                latest = newest.get(stream, self.last_timestamp(stream))
                gate.check(stream, event.timestamp_s, latest, rec.value)  # too old, too new
                newest[stream] = max(
                    event.timestamp_s, latest if latest is not None else event.timestamp_s
                )
                valid.append((event, rec))
            except InvalidEvent as exc:
                letters.append(self.dead_letter(rec, exc))
            except Exception as exc:  # one message must never stop the loop
                log.exception("event at %d:%d", rec.partition, rec.offset)
                bad = InvalidEvent("undecodable", f"{type(exc).__name__}: {str(exc)[:100]}")
                letters.append(self.dead_letter(rec, bad))
        self.metrics.events.labels("valid").inc(len(valid))
        if len(records) > len(valid):
            self.metrics.events.labels("invalid").inc(len(records) - len(valid))
        return Admitted(valid, letters)

    def dead_letter(self, rec: Record, exc: InvalidEvent) -> Message:
        """The dead letter of ``rec`` (counted by reason)."""
        self.metrics.invalid.labels(exc.reason).inc()
        return dead_letter(self.config.dead_letter_topic, rec, exc)
