"""Replaying events onto the in-process broker: order, keys, payloads and pacing."""

from __future__ import annotations

import json
import threading
import time

import pytest

from predictor.errors import ConfigError
from predictor.events import RequestEvent, decode_event
from stream.trace_replay import replay
from stream.transport import MemoryBroker, MemorySink


def _events(n: int, gap_s: float = 1.0) -> list[RequestEvent]:
    models = ["ChatGPT", "GPT-4", None]
    return [RequestEvent(100.0 + i * gap_s, 10 + i, i, models[i % 3], "API log") for i in range(n)]


def test_publishes_every_event_in_order_with_keys() -> None:
    broker = MemoryBroker()
    events = _events(30)
    sent = replay(events, broker.sink(), "in", progress=False)
    assert sent == 30
    records = broker.records("in")
    assert [decode_event(r.value) for r in records] == events  # event time in the payload
    assert [r.key for r in records] == [b"ChatGPT", b"GPT-4", b"all"] * 10
    assert json.loads(records[0].value) == events[0].to_dict()


def test_stream_key_none_and_partitions_keep_per_key_order() -> None:
    broker = MemoryBroker()
    broker.create_topic("in", partitions=3)
    events = _events(12)
    replay(events, broker.sink(), "in", stream_key="none", progress=False)
    records = broker.records("in")
    assert {r.key for r in records} == {b"all"} and len({r.partition for r in records}) == 1
    assert [decode_event(r.value).timestamp_s for r in records] == [e.timestamp_s for e in events]


def test_rate_pacing_is_roughly_bounded() -> None:
    broker = MemoryBroker()
    start = time.monotonic()
    replay(_events(11), broker.sink(), "in", rate=50.0, progress=False)
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 1.5  # 10 gaps of 20 ms


def test_speed_pacing_follows_event_time() -> None:
    broker = MemoryBroker()
    start = time.monotonic()
    replay(_events(5, gap_s=2.0), broker.sink(), "in", speed=40.0, progress=False)
    elapsed = time.monotonic() - start
    assert 0.18 <= elapsed < 1.5  # 8 s of event time at 40x


def test_stop_ends_a_paced_replay() -> None:
    broker = MemoryBroker()
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    start = time.monotonic()
    sent = replay(_events(1000), broker.sink(), "in", rate=20.0, progress=False, stop=stop)
    timer.join()
    assert time.monotonic() - start < 1.5
    assert 1 <= sent < 20 and len(broker.records("in")) == sent


def test_flushes_at_the_end() -> None:
    class CountingSink(MemorySink):
        flushes = 0

        def flush(self, timeout_s: float = 30.0) -> None:
            self.flushes += 1

    sink = CountingSink(MemoryBroker())
    assert replay([], sink, "in", progress=False) == 0
    assert sink.flushes == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"speed": 2.0, "rate": 10.0}, "at most one"),
        ({"rate": 0.0}, "positive"),
        ({"speed": -1.0}, "positive"),
        ({"stream_key": "session"}, "stream key"),
    ],
)
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        replay(_events(1), MemoryBroker().sink(), "in", progress=False, **kwargs)  # type: ignore[arg-type]
