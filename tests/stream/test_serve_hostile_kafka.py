"""``reqcast serve`` against a real broker, fed a poison pill and a future-dated event.

A message of 1,000 nested ``[`` (2 KB) used to raise ``RecursionError`` out of the loop:
serve exited without committing, and every restart died on the same message. An event
stamped 9e11 s used to become its stream's newest time, and every later event of the
stream went to the dead-letter topic as ``too_old``, across restarts (windows are rebuilt
from history). Both must be dead letters with their reason, the stream forecast after them,
and a restart must neither read them again nor take them back in from history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import (
    PUBLISHED,
    TopicReader,
    create_topics,
    missing_forecasts,
    produce_raw,
    services,
    stream_names,
    synthetic_events,
    train_tiny_models,
)

from stream.kafka_io import KafkaConfig

pytestmark = pytest.mark.kafka

SEQ_LEN = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile_models")
    train_tiny_models(d, seq_len=SEQ_LEN)
    return d


@pytest.fixture
def readers() -> Iterator[list[TopicReader]]:
    opened: list[TopicReader] = []
    yield opened
    for r in opened:
        r.close()


def _encoded(events: list, stream: str) -> list[tuple[bytes | None, bytes]]:
    return [(stream.encode(), json.dumps(ev.to_dict()).encode()) for ev in events]


def test_a_poison_pill_and_a_future_event_are_dead_letters_and_serve_goes_on(
    kafka_config: KafkaConfig,
    topic_name: str,
    model_dir: Path,
    tmp_path: Path,
    readers: list[TopicReader],
) -> None:
    out, dlq, group = f"{topic_name}.forecasts", f"{topic_name}.dlq", f"g-{topic_name}"
    create_topics(kafka_config, topic_name, 1, out, dlq)
    [stream] = stream_names(1, per_partition=1)
    events = synthetic_events(90, [stream], seed=11)
    future = json.dumps({**events[0].to_dict(), "timestamp": 9e11}).encode()
    bad = {b"[" * 1000: "undecodable", future: "future_timestamp"}
    before = produce_raw(kafka_config, topic_name, _encoded(events[:20], stream))
    poison = produce_raw(kafka_config, topic_name, [(stream.encode(), v) for v in bad])
    after = produce_raw(kafka_config, topic_name, _encoded(events[20:70], stream))

    forecasts = TopicReader(kafka_config, out)
    letters = TopicReader(kafka_config, dlq)
    readers.extend([forecasts, letters])
    with services(tmp_path, kafka_config.bootstrap_servers, model_dir) as svc:
        first = svc.start("first", topic_name, out, group)
        forecasts.read_until(
            lambda _: not missing_forecasts(forecasts.values(), before + after), timeout_s=60
        )
        letters.read_until(lambda r: len(r) >= len(bad), timeout_s=10)
        assert first.alive(), first.log()[-3000:]
        assert missing_forecasts(forecasts.values(), before + after) == []
        got = {(d["source"]["partition"], d["source"]["offset"]): d for d in letters.values()}
        assert sorted(got) == sorted(poison)
        for pos, (raw, reason) in zip(poison, bad.items(), strict=True):
            assert got[pos]["error"] == reason, got[pos]
            assert got[pos]["raw"] == raw.decode()
        samples = first.metrics()
        for reason in bad.values():
            assert samples[("reqcast_invalid_events_total", frozenset({("reason", reason)}))] == 1
        assert first.stop() == 0

        # a restart in the same group: resumes after the commits, warms from the history
        # (which holds both), and the stream is forecast on, warm
        second = svc.start("second", topic_name, out, group)
        more = produce_raw(kafka_config, topic_name, _encoded(events[70:], stream))
        forecasts.read_until(lambda _: not missing_forecasts(forecasts.values(), more), 60)
        letters.read_until(lambda r: len(r) > len(bad), timeout_s=3)
        assert second.alive(), second.log()[-3000:]
        assert missing_forecasts(forecasts.values(), more) == []
        assert len(letters.records) == len(bad), "a restart does not read them again"
        assert "warmed 1 streams from 70 records" in second.log()
        new = [
            f
            for f in forecasts.values()
            if (f["source"]["partition"], f["source"]["offset"]) in set(more)
            and f["kind"] == "next_request"  # load `ensemble` forecasts run beside them
        ]
        assert len(new) == len(PUBLISHED) * len(more)
        assert all(f["warm"] for f in new)
