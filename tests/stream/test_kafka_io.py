"""Kafka adapters: config without a network, the rest against a real Kafka-protocol broker.

The broker comes from the ``kafka_bootstrap`` fixture in ``tests/conftest.py``; tests
that need one are marked ``kafka``.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections import defaultdict
from typing import Any

import pytest
from kafka.errors import CommitFailedError
from kafka_proxy import TcpProxy, proxied_config

from predictor.errors import BrokerError, ConfigError
from stream import cliutil
from stream.kafka_admin import ensure_topics, read_all, read_before, read_recent, wait_for_broker
from stream.kafka_io import CLOSE_COMMIT_TIMEOUT_MS, KafkaConfig, KafkaSink, KafkaSource
from stream.transport import Record

kafka = pytest.mark.kafka

#: group timings short enough for tansu, where a group join waits for them
FAST_GROUP: dict[str, Any] = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 1000,
}
KEYS = [f"model-{i}".encode() for i in range(10)]


def _produce(config: KafkaConfig, topic: str, ids: range, **overrides: object) -> None:
    sink = KafkaSink(config, **overrides)
    try:
        for i in ids:
            key = KEYS[i % len(KEYS)]
            sink.send(topic, key, json.dumps({"id": i, "key": key.decode()}).encode())
        sink.flush(timeout_s=10)
    finally:
        sink.close()


def _ids(records: list[Record]) -> list[int]:
    return [json.loads(r.value)["id"] for r in records]


def _poll_until(source: KafkaSource, count: int, timeout_s: float = 20.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out.extend(source.poll(max_records=count - len(out), timeout_s=0.2))
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BOOTSTRAP_SERVERS", "SECURITY_PROTOCOL", "SASL_MECHANISM", "SSL_CAFILE"):
        monkeypatch.delenv(f"REQCAST_{var}", raising=False)
    parser = argparse.ArgumentParser()
    cliutil.add_kafka_flags(parser)
    assert "REQCAST_SASL_PASSWORD" in parser.format_help()
    flags = "--bootstrap-servers a:9093,b:9093 --security-protocol SASL_SSL"
    args = parser.parse_args(f"{flags} --sasl-mechanism SCRAM-SHA-512 --ssl-cafile /ca.pem".split())
    env = {"REQCAST_SASL_USERNAME": "svc", "REQCAST_SASL_PASSWORD": "s3cret"}
    config = cliutil.kafka_config(args, environ=env)
    assert config.client_kwargs() == {
        "bootstrap_servers": ["a:9093", "b:9093"],
        "client_id": "reqcast",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/ca.pem",
    }
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigError, match="REQCAST_SASL_USERNAME"):
        cliutil.kafka_config(args, environ={})
    with pytest.raises(ConfigError, match="--bootstrap-servers"):
        cliutil.kafka_config(parser.parse_args([]), environ=env)
    with pytest.raises(ConfigError):
        KafkaConfig("a:9092", security_protocol="TLS")


@kafka
def test_round_trip_keeps_keys_on_one_partition_in_order(
    kafka_config: KafkaConfig, topic_name: str
) -> None:
    ensure_topics(kafka_config, {topic_name: 3})
    ensure_topics(kafka_config, {topic_name: 3})  # idempotent
    _produce(kafka_config, topic_name, range(300))
    assigned: list[list[int]] = []
    source = KafkaSource(kafka_config, topic_name, "g-rt", on_assign=assigned.append, **FAST_GROUP)
    try:
        got = _poll_until(source, 300)
        assert source.assignment() == [0, 1, 2]
    finally:
        source.close()
    assert assigned and assigned[-1] == [0, 1, 2]
    assert sorted(_ids(got)) == list(range(300))
    partitions_of_key: dict[bytes | None, set[int]] = defaultdict(set)
    ids_of_key: dict[bytes | None, list[int]] = defaultdict(list)
    offsets_of_partition: dict[int, list[int]] = defaultdict(list)
    for rec in got:
        partitions_of_key[rec.key].add(rec.partition)
        ids_of_key[rec.key].append(json.loads(rec.value)["id"])
        offsets_of_partition[rec.partition].append(rec.offset)
        assert rec.topic == topic_name and rec.timestamp_ms is not None
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert all(ids == sorted(ids) for ids in ids_of_key.values())
    assert all(offs == list(range(len(offs))) for offs in offsets_of_partition.values())
    assert len(offsets_of_partition) > 1


@kafka
def test_an_on_assign_error_comes_out_of_poll(kafka_config: KafkaConfig, topic_name: str) -> None:
    ensure_topics(kafka_config, {topic_name: 2})

    def refuse(partitions: list[int]) -> None:
        raise ValueError(f"cannot warm {partitions}")

    source = KafkaSource(kafka_config, topic_name, "g-err", on_assign=refuse, **FAST_GROUP)
    try:
        with pytest.raises(ValueError, match=r"cannot warm \[0, 1\]"):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                source.poll(10, 0.2)
    finally:
        source.close()


@kafka
@pytest.mark.parametrize("async_commits", [False, True], ids=["sync", "async"])
def test_new_member_resumes_after_committed_offsets(
    kafka_config: KafkaConfig, topic_name: str, async_commits: bool
) -> None:
    ensure_topics(kafka_config, {topic_name: 3})
    _produce(kafka_config, topic_name, range(90))
    first = KafkaSource(
        kafka_config, topic_name, "g-resume", async_commits=async_commits, **FAST_GROUP
    )
    try:
        got = _poll_until(first, 90)
        ends = {r.partition: r.offset + 1 for r in got}
        for p, end in ends.items():  # one commit per partition step, the last must win
            first.commit({p: end // 4})
        committed = {p: end // 2 for p, end in ends.items()}
        first.commit(committed)
        first.commit({})
    finally:
        first.close()
    history: list[Record] = []

    def warm(partitions: list[int]) -> None:  # blocking client calls are fine here
        resume_at = second.committed(partitions)
        assert resume_at == {p: committed.get(p, 0) for p in partitions}
        history.extend(read_before(kafka_config, topic_name, resume_at, per_partition=4))

    second = KafkaSource(kafka_config, topic_name, "g-resume", on_assign=warm, **FAST_GROUP)
    try:
        expected = sum(ends[p] - committed[p] for p in ends)
        again = _poll_until(second, expected)
        assert second.poll(100, 0.3) == []
    finally:
        second.close()
    assert sorted((r.partition, r.offset) for r in again) == sorted(
        (p, o) for p in ends for o in range(committed[p], ends[p])
    )
    assert [(r.partition, r.offset) for r in history] == [
        (p, o) for p in sorted(ends) for o in range(max(0, committed[p] - 4), committed[p])
    ]


@kafka
def test_lag_reports_the_backlog(kafka_config: KafkaConfig, topic_name: str) -> None:
    ensure_topics(kafka_config, {topic_name: 3})
    # one record per batch: tansu 0.6 reports a partition's end as the last batch's first
    # offset + 1, so until a partition has been fetched its lag would be too low there
    sink = KafkaSink(kafka_config, linger_ms=0)
    try:
        for i in range(60):
            sink.send(topic_name, KEYS[i % len(KEYS)], json.dumps({"id": i}).encode())
            sink.flush(timeout_s=5)
    finally:
        sink.close()
    source = KafkaSource(kafka_config, topic_name, "g-lag", **FAST_GROUP)
    try:
        assert source.lag() is None  # nothing assigned before the group join
        assert len(_poll_until(source, 10)) == 10
        assert source.lag() == 50
        assert len(_poll_until(source, 50)) == 50
        assert source.lag() == 0
    finally:
        source.close()


@kafka
def test_read_recent_returns_the_tail_of_each_partition(
    kafka_config: KafkaConfig, topic_name: str
) -> None:
    ensure_topics(kafka_config, {topic_name: 3})
    _produce(kafka_config, topic_name, range(0, 40))  # several batches per partition
    _produce(kafka_config, topic_name, range(40, 80))
    everything = read_all(kafka_config, topic_name, timeout_s=10)
    assert sorted(_ids(everything)) == list(range(80))
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for rec in everything:
        by_partition[rec.partition].append(rec)
    parts = sorted(by_partition)
    recent = read_recent(kafka_config, topic_name, parts, per_partition=5)
    assert recent == [r for p in parts for r in by_partition[p][-5:]]
    many = read_recent(kafka_config, topic_name, parts, per_partition=1000)
    assert many == [r for p in parts for r in by_partition[p]]
    assert read_recent(kafka_config, topic_name, [], per_partition=5) == []
    middle = {p: len(by_partition[p]) // 2 for p in parts}
    before = read_before(kafka_config, topic_name, middle, per_partition=3)
    assert before == [r for p in parts for r in by_partition[p][max(0, middle[p] - 3) : middle[p]]]
    started = time.monotonic()
    past_the_end = read_before(kafka_config, topic_name, dict.fromkeys(parts, 10**6), 2)
    assert past_the_end == [r for p in parts for r in by_partition[p][-2:]]
    assert read_before(kafka_config, topic_name, dict.fromkeys(parts, 0), 2) == []
    assert time.monotonic() - started < 3


@kafka
def test_read_recent_and_read_all_return_at_once_when_empty(
    kafka_config: KafkaConfig, topic_name: str
) -> None:
    ensure_topics(kafka_config, {topic_name: 3})
    started = time.monotonic()
    assert read_recent(kafka_config, topic_name, [0, 1, 2], per_partition=5) == []
    assert read_all(kafka_config, topic_name, timeout_s=10) == []
    assert read_all(kafka_config, topic_name + "-missing", timeout_s=10) == []
    assert time.monotonic() - started < 3


@kafka
def test_read_all_loads_a_compacted_topic(kafka_config: KafkaConfig, topic_name: str) -> None:
    compact = {topic_name: {"cleanup.policy": "compact"}}
    ensure_topics(kafka_config, {topic_name: 1}, configs=compact)
    _produce(kafka_config, topic_name, range(25))
    records = read_all(kafka_config, topic_name, timeout_s=10)
    assert _ids(records) == list(range(25))
    assert [r.offset for r in records] == list(range(25))


@kafka
def test_unreachable_broker_raises_broker_error() -> None:
    config = KafkaConfig(f"127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"within 0\.5 s"):
        wait_for_broker(config, timeout_s=0.5)
    with pytest.raises(BrokerError) as info:
        KafkaSink(config, bootstrap_timeout_ms=500)
    assert info.value.__cause__ is not None
    assert time.monotonic() - started < 5


@kafka
def test_flush_raises_when_the_broker_is_cut_off(
    proxied_kafka: tuple[str, TcpProxy], topic_name: str
) -> None:
    bootstrap, proxy = proxied_kafka
    config = proxied_config(bootstrap, {topic_name: 1})
    sink = KafkaSink(config, request_timeout_ms=1000, delivery_timeout_ms=1500)
    try:
        sink.send(topic_name, b"k", b"before")
        sink.flush(timeout_s=5)
        proxy.cut()
        sink.send(topic_name, b"k", b"during")
        with pytest.raises(BrokerError) as info:
            sink.flush(timeout_s=3)
        assert info.value.__cause__ is not None
    finally:
        sink.close(timeout_s=0)


@kafka
def test_producer_rides_out_an_outage_without_loss_or_duplicates(
    proxied_kafka: tuple[str, TcpProxy], topic_name: str
) -> None:
    bootstrap, proxy = proxied_kafka
    config = KafkaConfig(bootstrap)
    ensure_topics(config, {topic_name: 3})
    sink = KafkaSink(config)
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for i in range(sent, sent + n):
            sink.send(topic_name, KEYS[i % len(KEYS)], json.dumps({"id": i}).encode())
        sent += n

    try:
        send(200)
        proxy.cut()
        cut_until = time.monotonic() + 3
        while time.monotonic() < cut_until:
            send(10)
            time.sleep(0.01)
        proxy.restore()
        send(200)
        sink.flush(timeout_s=30)
    finally:
        sink.close()
    ids = _ids(read_all(config, topic_name, timeout_s=10))
    assert len(ids) == sent and sorted(ids) == list(range(sent))


@kafka
def test_a_failed_asynchronous_commit_comes_out_of_the_next_commit(
    kafka_config: KafkaConfig, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_topics(kafka_config, {topic_name: 1})
    source = KafkaSource(kafka_config, topic_name, "g-async-fail", async_commits=True, **FAST_GROUP)
    sent: list[tuple[Any, Any]] = []
    try:
        monkeypatch.setattr(
            source._consumer,
            "commit_async",
            lambda offsets, callback: sent.append((offsets, callback)),
        )
        source.commit({0: 1})  # sent; its answer comes later (in a poll)
        offsets, answer = sent[0]
        answer(offsets, CommitFailedError("the group rebalanced"))
        with pytest.raises(BrokerError, match=r"earlier commit.*rebalanced"):
            source.commit({0: 2})
        assert [next(iter(p.values())).offset for p, _ in sent] == [1, 2]  # 2 was still sent
        monkeypatch.undo()
        source.commit({0: 0})  # reported once, then commits go on
    finally:
        source.close()


@kafka
def test_closing_with_the_broker_gone_does_not_hang(
    proxied_kafka: tuple[str, TcpProxy], topic_name: str
) -> None:
    """With the broker cut off after an asynchronous commit, close returns promptly: a
    stopping serve does not hang on its last commit. (Here the cut connection fails that
    commit at once; CLOSE_COMMIT_TIMEOUT_MS bounds a broker that stops answering.)"""
    bootstrap, proxy = proxied_kafka
    config = proxied_config(bootstrap, {topic_name: 1})
    _produce(config, topic_name, range(5))
    source = KafkaSource(config, topic_name, "g-gone", async_commits=True, **FAST_GROUP)
    got = _poll_until(source, 5)
    assert len(got) == 5
    proxy.cut()
    source.commit({0: 5})  # sent into the void
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < CLOSE_COMMIT_TIMEOUT_MS / 1000 + 10


@kafka
def test_revoked_partitions_leave_the_last_commit(
    kafka_config: KafkaConfig, topic_name: str
) -> None:
    """close() commits the last offsets again, but not those of partitions given away in
    a rebalance since: their new owner commits them (rewinding it would redeliver)."""
    from kafka import TopicPartition

    from stream.kafka_io import _Rebalance

    ensure_topics(kafka_config, {topic_name: 2})
    source = KafkaSource(kafka_config, topic_name, "g-revoke", async_commits=True, **FAST_GROUP)
    try:
        source.commit({0: 3, 1: 4})
        _Rebalance(source).on_partitions_revoked([TopicPartition(topic_name, 1)])
        assert source._last_commit is not None
        assert {tp.partition: o.offset for tp, o in source._last_commit.items()} == {0: 3}
        _Rebalance(source).on_partitions_revoked([TopicPartition(topic_name, 0)])
        assert source._last_commit is None
    finally:
        source.close()
