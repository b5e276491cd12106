"""Replay request events onto a topic: as fast as possible, at a rate, or at a speed-up.

Each event becomes its wire form (:meth:`~predictor.events.RequestEvent.to_dict` as
compact JSON) keyed by its stream, so event time travels in the payload whatever the
pacing. Pacing follows an absolute schedule from the first event, so sleeps do not
drift: with ``speed`` an event is due ``(t - t0) / speed`` seconds after the start,
with ``rate`` the i-th event is due ``i / rate`` seconds after it.

>>> from stream.transport import MemoryBroker
>>> from predictor.events import RequestEvent
>>> broker = MemoryBroker()
>>> events = [RequestEvent(5.0, 472, 18, "ChatGPT"), RequestEvent(45.0, 1087, 230, "GPT-4")]
>>> replay(events, broker.sink(), "requests", progress=False)
2
>>> [(r.key, r.value[:16]) for r in broker.records("requests")]
[(b'ChatGPT', b'{"timestamp":5.0'), (b'GPT-4', b'{"timestamp":45.')]
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Iterable

from tqdm import tqdm

from predictor.errors import ConfigError
from predictor.events import RequestEvent
from predictor.streams import STREAM_KEYS
from stream.transport import Sink


def check_pacing(speed: float | None, rate: float | None) -> None:
    """Raise :class:`ConfigError` unless at most one of ``speed``/``rate`` is given, > 0."""
    if speed is not None and rate is not None:
        raise ConfigError("give at most one of --speed and --rate")
    for name, value in (("speed", speed), ("rate", rate)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name} must be a positive number, got {value}")


def encode(event: RequestEvent, stream_key: str = "model") -> tuple[bytes, bytes]:
    """``(key, value)`` of one event on the wire."""
    value = json.dumps(event.to_dict(), separators=(",", ":")).encode()
    return event.stream_key(stream_key).encode(), value


def replay(
    events: Iterable[RequestEvent],
    sink: Sink,
    topic: str,
    stream_key: str = "model",
    speed: float | None = None,
    rate: float | None = None,
    progress: bool = True,
    total: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Publish ``events`` to ``topic`` in order, paced as asked; flush; return how many were sent.

    ``stop``, when set, ends the replay before the next event (also during a pacing wait).
    """
    check_pacing(speed, rate)
    if stream_key not in STREAM_KEYS:
        raise ConfigError(f"unknown stream key {stream_key!r}; use one of {', '.join(STREAM_KEYS)}")
    stop = stop or threading.Event()
    sent = 0
    start = time.monotonic()
    first_ts: float | None = None
    with tqdm(
        total=total,
        disable=not progress,
        file=sys.stderr,
        unit="ev",
        desc=f"replay -> {topic}",
        mininterval=0.5,
    ) as bar:
        for event in events:
            if first_ts is None:
                first_ts = event.timestamp_s
            due: float | None = None
            if speed is not None:
                due = start + (event.timestamp_s - first_ts) / speed
            elif rate is not None:
                due = start + sent / rate
            if due is not None:
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            if stop.is_set():
                break
            key, value = encode(event, stream_key)
            sink.send(topic, key, value)
            sent += 1
            bar.update(1)
    sink.flush()
    return sent
