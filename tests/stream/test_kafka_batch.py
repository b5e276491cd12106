"""The record-batch sink: its encoding checked by kafka-python's reader, its writes read
back by a plain consumer from the real broker (``kafka_bootstrap`` fixture)."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer
from kafka.record.default_records import DefaultRecordBatch
from kafka_proxy import TcpProxy, proxied_config

from predictor.errors import BrokerError, ConfigError
from stream.kafka_admin import ensure_topics, read_all
from stream.kafka_batch import BatchKafkaSink, encode_batch
from stream.kafka_io import KafkaConfig

kafka = pytest.mark.kafka
KEYS = [f"model-{i}".encode() for i in range(10)] + [b"", "gpt-\u00e9".encode()]


@pytest.mark.parametrize(("compression", "codec"), [("none", 0), ("gzip", 1)])
def test_encoded_batches_read_back_with_kafka_pythons_reader(compression: str, codec: int) -> None:
    records = [(KEYS[i % len(KEYS)], json.dumps({"id": i}).encode() * (i % 7)) for i in range(300)]
    records.append((None, b"x" * 20_000))  # a value longer than the precomputed varints
    batch = DefaultRecordBatch(encode_batch(records, 1_730_000_000_123, compression))
    assert batch.validate_crc() and batch.magic == 2 and batch.compression_type == codec
    got = list(batch)
    assert [(r.key, r.value) for r in got] == records
    assert [r.offset for r in got] == list(range(len(records)))
    assert {r.timestamp for r in got} == {1_730_000_000_123}
    assert all(not r.headers for r in got)


def test_unknown_compression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown compression 'lz5'"):
        BatchKafkaSink(KafkaConfig("127.0.0.1:1"), compression="lz5")


@kafka
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_writes_land_where_kafka_producer_puts_them(
    kafka_config: KafkaConfig, topic_name: str, compression: str
) -> None:
    ensure_topics(kafka_config, {topic_name: 5, topic_name + ".other": 2})
    # a small limit forces several requests
    sink = BatchKafkaSink(kafka_config, max_batch_bytes=4_000, compression=compression)
    try:
        for i in range(3_000):
            key = KEYS[i % len(KEYS)] if i % 10 else None
            topic = topic_name if i % 3 else topic_name + ".other"
            sink.send(topic, key, json.dumps({"id": i}).encode())
        sink.flush(timeout_s=20)
        sink.flush()  # nothing pending: a no-op
    finally:
        sink.close()
    got = read_all(kafka_config, topic_name, timeout_s=10) + read_all(
        kafka_config, topic_name + ".other", timeout_s=10
    )
    assert sorted(json.loads(r.value)["id"] for r in got) == list(range(3_000))
    # the partition of each key is the one KafkaProducer's default partitioner picks
    producer = KafkaProducer(**kafka_config.client_kwargs())
    try:
        expected = {
            (t, k): producer.send(t, key=k, value=b"probe").get(timeout=10).partition
            for t in (topic_name, topic_name + ".other")
            for k in KEYS
        }
    finally:
        producer.close()
    keyed = [r for r in got if r.key is not None]
    topic_of = {
        r: topic_name if json.loads(r.value)["id"] % 3 else topic_name + ".other" for r in keyed
    }
    assert all(r.partition == expected[(topic_of[r], r.key)] for r in keyed)
    # per partition, the records keep the order they were sent in
    by_partition: dict[tuple[str, int], list[int]] = {}
    for r in keyed:
        by_partition.setdefault((topic_of[r], r.partition), []).append(json.loads(r.value)["id"])
    assert all(ids == sorted(ids) for ids in by_partition.values())
    # keyless records spread over the partitions
    keyless = {r.partition for r in got if r.key is None and r.partition is not None}
    assert len(keyless) > 1


@kafka
def test_flush_fails_with_broker_error_and_the_sink_recovers(
    proxied_kafka: tuple[str, TcpProxy], topic_name: str
) -> None:
    bootstrap, proxy = proxied_kafka
    config = proxied_config(bootstrap, {topic_name: 2})
    sink = BatchKafkaSink(config, request_timeout_ms=1_000)
    try:
        sink.send(topic_name, b"k", b"before")
        sink.flush(timeout_s=5)
        proxy.cut()
        sink.send(topic_name, b"k", b"during")
        started = time.monotonic()
        with pytest.raises(BrokerError, match="1 record"):
            sink.flush(timeout_s=2)
        assert time.monotonic() - started < 10
        proxy.restore()
        # the failed record was dropped from the sink: the caller sends it again
        sink.send(topic_name, b"k", b"during")
        sink.send(topic_name, b"k", b"after")
        sink.flush(timeout_s=20)
    finally:
        sink.close(timeout_s=0)
    values = [r.value for r in read_all(config, topic_name, timeout_s=10)]
    assert values == [b"before", b"during", b"after"]
