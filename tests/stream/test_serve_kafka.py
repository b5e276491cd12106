"""``reqcast serve`` as a real subprocess against a real Kafka-protocol broker.

End to end (BurstGPT sample plus malformed events -> forecasts, dead letters and
metrics that agree), a SIGKILL and restart in the same group, two instances sharing
the partitions (one of them stalled past its session timeout, SIGSTOP, must rejoin),
and a broker outage through a proxy that is cut and restored. The
forecast and dead-letter topics are read back with plain kafka-python consumers
(manual assignment, from the beginning); a forecast is identified by its source
``(partition, offset)`` and ``model``, so duplicates after a restart can be told apart.

Group consumers on tansu need short group timings, so every service runs with
``--max-poll-interval-ms 3000 --session-timeout-ms 3000``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kafka_proxy import TcpProxy
from serve_helpers import (
    PUBLISHED,
    ServeProcess,
    TopicReader,
    create_topics,
    forecast_keys,
    metric,
    missing_forecasts,
    produce_raw,
    services,
    stream_names,
    synthetic_events,
    train_tiny_models,
)

from predictor.events import RequestEvent
from stream.cli import main
from stream.kafka_io import KafkaConfig, KafkaSink
from stream.trace_replay import replay

pytestmark = pytest.mark.kafka

BURST1 = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "burstgpt"
    / "BurstGPT_1_first400.csv"
)
SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"
SEQ_LEN = 16
QUANTITIES = ("gap_s", "request_tokens", "response_tokens", "timestamp")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM and DLinear (seq_len 16, 2 epochs), version 1 each."""
    d = tmp_path_factory.mktemp("serve_models")
    train_tiny_models(d, seq_len=SEQ_LEN)
    return d


@pytest.fixture
def readers() -> Iterator[list[TopicReader]]:
    """Readers opened by a test, closed after it."""
    opened: list[TopicReader] = []
    yield opened
    for r in opened:
        r.close()


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _reader(opened: list[TopicReader], config: KafkaConfig, topic: str) -> TopicReader:
    reader = TopicReader(config, topic)
    opened.append(reader)
    return reader


def _wait(what: str, done: Callable[[], bool], timeout_s: float, *procs: ServeProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        for p in procs:
            assert p.alive(), f"serve {p.name} exited with {p.proc and p.proc.poll()}"
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


def _wait_assigned(proc: ServeProcess, partitions: list[int], timeout_s: float = 30) -> None:
    """Until the service's latest assignment is ``partitions`` (it logs each one)."""
    _wait(
        f"serve {proc.name} to own {partitions}",
        lambda: proc.assignments()[-1:] == [partitions],
        timeout_s,
        proc,
    )


def _index_in_stream(records: list[Any], skip: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """(partition, offset) -> position of the event in its stream (key), skipping ``skip``."""
    seen: Counter[bytes] = Counter()
    out = {}
    for m in sorted(records, key=lambda m: (m.partition, m.offset)):
        if (m.partition, m.offset) in skip:
            continue
        out[(m.partition, m.offset)] = seen[m.key]
        seen[m.key] += 1
    return out


def _replay_in_background(
    config: KafkaConfig, topic: str, events: list[RequestEvent], rate: float | None = None
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def work() -> None:
        sink = KafkaSink(config)
        try:
            replay(events, sink, topic, rate=rate, progress=False)
        except BaseException as exc:
            errors.append(exc)
        finally:
            sink.close()

    thread = threading.Thread(target=work, name="replay", daemon=True)
    thread.start()
    return thread, errors


def _slow_forecasts(samples: dict[Any, float], above_s: str = "2.5") -> float:
    """Events whose forecasts were acknowledged more than ``above_s`` seconds after the event's
    broker timestamp (its producer's send time), from the event-to-forecast latency histogram."""
    name = "reqcast_event_to_forecast_latency_seconds"
    total = metric(samples, f"{name}_count")
    fast = metric(samples, f"{name}_bucket", le=above_s)
    assert total is not None and fast is not None
    return total - fast


def _all_forecast(sources: list[tuple[int, int]]) -> Callable[[list[Any]], bool]:
    """Whether forecast records hold every published forecast of every one of ``sources``."""
    need = {(p, o, m) for p, o in sources for m in PUBLISHED}

    def done(records: list[Any]) -> bool:
        have = {
            (f["source"]["partition"], f["source"]["offset"], f["model"])
            for f in (json.loads(r.value) for r in records)
        }
        return need <= have

    return done


# -- end to end -------------------------------------------------------------------------------

#: malformed input: (key, raw value, reason the service must give); the last one is valid JSON
#: of the ChatGPT stream at timestamp 0, produced after the whole BurstGPT sample, whose ChatGPT
#: stream ends at 37,274 s: far beyond the default 3,600 s of --max-lateness.
MALFORMED: list[tuple[bytes | None, bytes, str]] = [
    (b"bad", b'{"timestamp": 5, "request_tokens":', "invalid_json"),
    (b"bad", b"[1, 2, 3]", "not_an_object"),
    (b"bad", b'{"timestamp": 9, "request_tokens": 12, "model": "ChatGPT"}', "missing_field"),
    (
        b"bad",
        b'{"timestamp": 9, "request_tokens": "many", "response_tokens": 3, "model": "ChatGPT"}',
        "wrong_type",
    ),
    (
        b"bad",
        b'{"timestamp": 9, "request_tokens": -5, "response_tokens": 3, "model": "ChatGPT"}',
        "negative_tokens",
    ),
    (
        None,
        b'{"timestamp": 9, "request_tokens": NaN, "response_tokens": 3, "model": "GPT-4"}',
        "not_finite",
    ),
    (
        b"bad",
        b'{"timestamp": 9, "request_tokens": 1e12, "response_tokens": 3, "model": "GPT-4"}',
        "absurd_tokens",
    ),
    (
        b"bad",
        b'{"timestamp": 1e13, "request_tokens": 1, "response_tokens": 3, "model": "GPT-4"}',
        "absurd_timestamp",
    ),
    (
        b"ChatGPT",
        b'{"timestamp": 0, "request_tokens": 10, "response_tokens": 10, "model": "ChatGPT"}',
        "too_old",
    ),
]


def test_end_to_end_forecasts_dead_letters_and_metrics(
    kafka_config: KafkaConfig,
    topic_name: str,
    model_dir: Path,
    tmp_path: Path,
    readers: list[TopicReader],
) -> None:
    out, dlq = f"{topic_name}.forecasts", f"{topic_name}.dlq"
    create_topics(kafka_config, topic_name, 3, out, dlq)
    argv = ["replay", str(BURST1), "--topic", topic_name, "--no-progress"]
    assert main([*argv, "--bootstrap-servers", kafka_config.bootstrap_servers]) == 0
    positions = produce_raw(kafka_config, topic_name, [(k, v) for k, v, _ in MALFORMED])
    bad = dict(zip(positions, MALFORMED, strict=True))

    inputs = _reader(readers, kafka_config, topic_name)
    inputs.read_until(lambda r: len(r) >= 400 + len(MALFORMED), timeout_s=20, idle_s=0.3)
    assert len(inputs.records) == 400 + len(MALFORMED)
    events = {
        (m.partition, m.offset): m for m in inputs.records if (m.partition, m.offset) not in bad
    }
    assert len(events) == 400
    zero = [m for m in events.values() if json.loads(m.value)["response_tokens"] == 0]
    assert len(zero) == 17  # failed requests: valid, and forecast like any other
    index = _index_in_stream(inputs.records, set(bad))

    forecasts_reader = _reader(readers, kafka_config, out)
    dlq_reader = _reader(readers, kafka_config, dlq)
    with services(tmp_path, kafka_config.bootstrap_servers, model_dir) as svc:
        # next-request forecasts only: load forecasts (the ensemble runs even without load
        # models) are one per closed bin and have their own tests
        serve = svc.start("e2e", topic_name, out, f"g-{topic_name}", "--no-load")
        forecasts_reader.read_until(_all_forecast(list(events)), 60, idle_s=0.5)
        dlq_reader.read_until(lambda r: len(r) >= len(MALFORMED), timeout_s=10, idle_s=0.3)
        samples = serve.metrics()
        assert serve.alive()

        # every valid event: exactly one forecast per model, keyed and shaped as documented
        forecast_schema = _validator("forecast")
        forecasts = forecasts_reader.values()
        assert missing_forecasts(forecasts, events) == []
        counts = forecast_keys(forecasts)
        assert set(counts.values()) == {1}, "a clean run publishes no duplicates"
        assert len(counts) == len(PUBLISHED) * len(events)
        first_of_stream: dict[tuple[str, str], dict[str, Any]] = {}
        last_of_stream: dict[tuple[str, str], dict[str, Any]] = {}
        for m, f in zip(forecasts_reader.records, forecasts, strict=True):
            src = (f["source"]["partition"], f["source"]["offset"])
            event = json.loads(events[src].value)
            forecast_schema.validate(f)
            assert f["kind"] == "next_request" and f["model"] in PUBLISHED
            assert f["stream"] == event["model"] == m.key.decode()
            assert f["event_timestamp"] == event["timestamp"]
            assert f["model_version"] == 1
            # each model starts from its validation coverage; `best` has none until scored
            if f["confidence"] is not None or f["model"] != "best":
                assert isinstance(f["confidence"], float) and 0.0 <= f["confidence"] <= 1.0
            assert f["warm"] is (index[src] >= SEQ_LEN - 1), (src, index[src])
            assert f["produced_at"] > 0
            for q in QUANTITIES:
                lo, hi = f["interval"][q]
                assert math.isfinite(f[q]) and lo <= f[q] <= hi, (q, f)
            key = (f["stream"], f["model"])
            if key not in first_of_stream or src[1] < first_of_stream[key]["source"]["offset"]:
                first_of_stream[key] = f
            if key not in last_of_stream or src[1] > last_of_stream[key]["source"]["offset"]:
                last_of_stream[key] = f
        assert sorted(first_of_stream) == sorted(
            (s, m) for s in ("ChatGPT", "GPT-4") for m in PUBLISHED
        )
        assert not any(f["warm"] for f in first_of_stream.values())
        assert all(f["warm"] for f in last_of_stream.values())

        # every malformed event: one dead letter with its reason, raw value, key and source
        letters = {
            (d["source"]["partition"], d["source"]["offset"]): (m.key, d)
            for m, d in zip(dlq_reader.records, dlq_reader.values(), strict=True)
        }
        assert len(dlq_reader.records) == len(MALFORMED)
        assert sorted(letters) == sorted(bad)
        dead_letter_schema = _validator("dead_letter")
        for pos, (sent_key, raw, reason) in bad.items():
            got_key, letter = letters[pos]
            dead_letter_schema.validate(letter)
            assert letter["error"] == reason, (raw, letter)
            assert letter["raw"] == raw.decode()
            assert got_key == sent_key

        # the metrics agree with the topics
        by_model = Counter(f["model"] for f in forecasts)
        assert metric(samples, "reqcast_events_consumed_total", status="valid") == len(events)
        assert metric(samples, "reqcast_events_consumed_total", status="invalid") == len(MALFORMED)
        for reason, n in Counter(r for _, _, r in MALFORMED).items():
            assert metric(samples, "reqcast_invalid_events_total", reason=reason) == n, reason
        for model in PUBLISHED:
            published = metric(
                samples, "reqcast_forecasts_published_total", model=model, kind="next_request"
            )
            assert published == by_model[model] == len(events)
        for stream in ("ChatGPT", "GPT-4"):
            for model in PUBLISHED:
                for q in QUANTITIES:
                    for bound in ("point", "lower", "upper"):
                        labels = {"stream": stream, "model": model, "quantity": q, "bound": bound}
                        value = metric(samples, "reqcast_forecast_next_request", **labels)
                        assert value is not None and math.isfinite(value), labels
                newest = last_of_stream[(stream, model)]
                gauge = metric(
                    samples,
                    "reqcast_forecast_next_request",
                    stream=stream,
                    model=model,
                    quantity="timestamp",
                    bound="point",
                )
                assert gauge == pytest.approx(newest["timestamp"])


# -- crash and restart ------------------------------------------------------------------------


def test_sigkill_and_restart_loses_no_event(
    kafka_config: KafkaConfig,
    topic_name: str,
    model_dir: Path,
    tmp_path: Path,
    readers: list[TopicReader],
) -> None:
    out, group, batch_max = f"{topic_name}.forecasts", f"g-{topic_name}", 100
    create_topics(kafka_config, topic_name, 2, out, f"{topic_name}.dlq")
    events = synthetic_events(2000, stream_names(2), seed=5)
    forecasts = _reader(readers, kafka_config, out)
    with services(tmp_path, kafka_config.bootstrap_servers, model_dir) as svc:
        # next-request only (--no-load): one forecast per event and model is what is counted
        first = svc.start(
            "first", topic_name, out, group, "--batch-max", str(batch_max), "--no-load"
        )
        _wait_assigned(first, [0, 1])
        thread, errors = _replay_in_background(kafka_config, topic_name, events, rate=800)
        forecasts.read_until(lambda r: len(r) >= 400, timeout_s=30)
        first.kill()
        killed_at = len(forecasts.records)
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors
        assert 400 <= killed_at < len(PUBLISHED) * len(events), (
            "SIGKILL must land in the middle of the stream"
        )

        second = svc.start(
            "second", topic_name, out, group, "--batch-max", str(batch_max), "--no-load"
        )
        inputs = _reader(readers, kafka_config, topic_name)
        inputs.read_until(lambda r: len(r) >= len(events), timeout_s=20)
        sources = [(m.partition, m.offset) for m in inputs.records]
        assert len(sources) == len(events)
        forecasts.read_until(_all_forecast(sources), timeout_s=60, idle_s=0.5)
        assert second.alive()

        values = forecasts.values()
        assert missing_forecasts(values, sources) == []
        counts = forecast_keys(values)
        assert set(counts) == {(p, o, m) for p, o in sources for m in PUBLISHED}
        # at least once: what the killed instance published but never committed comes again, at
        # most the one micro-batch in flight (offsets are committed after every batch)
        doubled = Counter(m for (_, _, m), n in counts.items() if n > 1)
        assert all(n <= batch_max for n in doubled.values()), doubled
        # the second instance resumed from the group's commits and warmed its windows from the
        # events before them: only the first SEQ_LEN - 1 events of a stream are ever cold
        assert second.assignments() and second.assignments()[-1] == [0, 1]
        assert "warmed 4 streams" in second.log()
        index = _index_in_stream(inputs.records, set())
        for f in values:
            src = (f["source"]["partition"], f["source"]["offset"])
            assert f["warm"] is (index[src] >= SEQ_LEN - 1), (src, index[src], f)


# -- two instances ----------------------------------------------------------------------------


def _split(procs: dict[str, ServeProcess], partitions: int) -> bool:
    """Whether the latest assignments of ``procs`` are non-empty, disjoint and cover all."""
    latest = [p.assignments()[-1:] for p in procs.values()]
    if not all(latest):
        return False
    owned = [set(a[0]) for a in latest]
    every = set().union(*owned)
    return all(owned) and sum(map(len, owned)) == len(every) == partitions


def _wait_split(procs: dict[str, ServeProcess], partitions: int, timeout_s: float) -> None:
    """Until the group has settled: a split as :func:`_split` says, unchanged for 1.5 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        _wait(
            "the instances to share the partitions",
            lambda: _split(procs, partitions),
            deadline - time.monotonic(),
            *procs.values(),
        )
        before = [p.assignments() for p in procs.values()]
        time.sleep(1.5)
        if [p.assignments() for p in procs.values()] == before:
            return


def test_two_instances_share_the_partitions_and_a_stalled_one_rejoins(
    kafka_config: KafkaConfig,
    topic_name: str,
    model_dir: Path,
    tmp_path: Path,
    readers: list[TopicReader],
) -> None:
    # each instance publishes to its own forecast topic, so forecasts tell who served what
    outs = {"a": f"{topic_name}.forecasts-a", "b": f"{topic_name}.forecasts-b"}
    group = f"g-{topic_name}"
    create_topics(kafka_config, topic_name, 4, *outs.values(), f"{topic_name}.dlq")
    events = synthetic_events(3400, stream_names(4), seed=7)
    first, then = events[:3000], events[3000:]
    with services(tmp_path, kafka_config.bootstrap_servers, model_dir) as svc:
        procs = {name: svc.start(name, topic_name, out, group) for name, out in outs.items()}
        _wait_split(procs, 4, timeout_s=40)
        owned = {name: set(p.assignments()[-1]) for name, p in procs.items()}

        # a stream of events; meanwhile instance a stalls past its session timeout and poll
        # interval (3 s), mid-batch most likely: the group moves on without it, its commit
        # fails, and it must rejoin rather than wait on that commit forever
        thread, errors = _replay_in_background(kafka_config, topic_name, first, rate=1000)
        stalled = procs["a"]
        time.sleep(1.0)
        joins = len(stalled.assignments())
        stalled.pause()
        time.sleep(4.5)
        stalled.resume()
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors
        inputs = _reader(readers, kafka_config, topic_name)
        inputs.read_until(lambda r: len(r) >= len(first), timeout_s=20)
        before = {(m.partition, m.offset) for m in inputs.records}
        assert len(before) == len(first)
        _wait(
            "the stalled instance to rejoin",
            lambda: len(stalled.assignments()) > joins,
            40,
            *procs.values(),
        )
        _wait_split(procs, 4, timeout_s=40)

        # more events once the group has settled again: both instances serve them
        sink = KafkaSink(kafka_config)
        try:
            replay(then, sink, topic_name, progress=False)
        finally:
            sink.close()
        inputs.read_until(lambda r: len(r) >= len(events), timeout_s=20)
        sources = [(m.partition, m.offset) for m in inputs.records]
        assert len(sources) == len(events)
        assert {p for p, _ in sources} == set(range(4))
        got = {name: _reader(readers, kafka_config, out) for name, out in outs.items()}

        def complete() -> bool:
            for r in got.values():
                r.poll(0.1)
            values = [f for r in got.values() for f in r.values()]
            return not missing_forecasts(values, sources)

        _wait("forecasts of every event", complete, 60, *procs.values())
        assert all(p.alive() for p in procs.values())

        def partitions_served(name: str, after: bool) -> set[int]:
            srcs = ((f["source"]["partition"], f["source"]["offset"]) for f in got[name].values())
            return {p for p, o in srcs if ((p, o) not in before) is after}

        early = {name: partitions_served(name, after=False) for name in outs}
        assert early["a"] | early["b"] == set(range(4))
        assert early["a"] & owned["a"] and early["b"] & owned["b"], (early, owned)
        late = {name: partitions_served(name, after=True) for name in outs}
        assert late["a"] | late["b"] == set(range(4))
        assert late["a"] and late["b"], f"an instance served nothing after the stall: {late}"
        settled = {name: set(p.assignments()[-1]) for name, p in procs.items()}
        assert late == settled, "each instance served exactly the partitions it was assigned"


# -- broker outage ----------------------------------------------------------------------------


def test_broker_outage_loses_no_event(
    proxied_kafka: tuple[str, TcpProxy],
    topic_name: str,
    model_dir: Path,
    tmp_path: Path,
    readers: list[TopicReader],
) -> None:
    bootstrap, proxy = proxied_kafka
    config = KafkaConfig(bootstrap)
    out = f"{topic_name}.forecasts"
    create_topics(config, topic_name, 2, out, f"{topic_name}.dlq")
    events = synthetic_events(1500, stream_names(2), seed=11)
    forecasts = _reader(readers, config, out)
    with services(tmp_path, bootstrap, model_dir) as svc:
        serve = svc.start("outage", topic_name, out, f"g-{topic_name}")
        _wait_assigned(serve, [0, 1])
        sink = KafkaSink(config)
        try:
            replay(events[:500], sink, topic_name, progress=False)
            forecasts.read_until(lambda r: len(r) >= 1000, timeout_s=30)
            assert len(forecasts.records) >= 1000
            before = _slow_forecasts(serve.metrics())
            # the cut: the service is busy with a stream of events sent at 500/s around it
            thread, errors = _replay_in_background(config, topic_name, events[500:1000], rate=500)
            time.sleep(0.3)
            proxy.cut()
            cut_until = time.monotonic() + 3
            while time.monotonic() < cut_until:
                assert serve.metrics()  # /metrics is local, not behind the proxy
                time.sleep(0.2)
            proxy.restore()
            thread.join(timeout=60)
            assert not thread.is_alive() and not errors
            replay(events[1000:], sink, topic_name, progress=False)
        finally:
            sink.close()
        inputs = _reader(readers, config, topic_name)
        inputs.read_until(lambda r: len(r) >= len(events), timeout_s=30)
        sources = [(m.partition, m.offset) for m in inputs.records]
        assert len(sources) == len(events), "the replay's producer lost events in the outage"
        forecasts.read_until(_all_forecast(sources), timeout_s=60, idle_s=0.5)
        after = serve.metrics()
        assert serve.alive()
        assert missing_forecasts(forecasts.values(), sources) == []

        # kafka-python rides out a 3 s cut by itself (the producer retries within its delivery
        # timeout, commits retry, polls come back empty), so reqcast_broker_up and
        # reqcast_broker_errors_total need a longer outage to move; what a 3 s cut leaves in
        # /metrics is the events sent during it: acknowledged seconds after their broker timestamp
        assert _slow_forecasts(after) > before, "the outage left no trace in the latency histogram"


# -- no models --------------------------------------------------------------------------------
def test_serve_without_models_publishes_ensemble_load_forecasts(
    kafka_config: KafkaConfig, topic_name: str, tmp_path: Path, readers: list[TopicReader]
) -> None:
    """An empty --model-dir: serve keeps running, says once how networks would join, and
    publishes the load ensemble from the first closed bins (no next-request forecast)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = f"{topic_name}.forecasts"
    create_topics(kafka_config, topic_name, 1, out, f"{topic_name}.dlq")
    events = synthetic_events(120, ["svc-0"], seed=7)
    produce_raw(
        kafka_config, topic_name, [(b"svc-0", json.dumps(e.to_dict()).encode()) for e in events]
    )
    forecasts = _reader(readers, kafka_config, out)
    with services(tmp_path, kafka_config.bootstrap_servers, empty) as svc:
        serve = svc.start("cold", topic_name, out, f"g-{topic_name}", "--bin-s", "1")
        forecasts.read_until(lambda r: len(r) >= 10, timeout_s=60, idle_s=1.0)
        assert serve.alive()
        values = forecasts.values()
        assert len(values) >= 10
        assert {(f["kind"], f["model"]) for f in values} == {("load", "ensemble")}
        notes = [line for line in serve.log().splitlines() if f"no models in {empty}" in line]
        assert len(notes) == 1 and "model topic" in notes[0], serve.log()[-3000:]
