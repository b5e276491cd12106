"""Kafka housekeeping and group-less reads: topics, broker checks, tails of partitions.

:func:`read_before` and :func:`read_recent` warm rolling windows after a rebalance
(with the records just before where the group resumes, or the newest ones);
:func:`read_all` loads a whole (typically compacted) topic such as the model topic. Both use a throwaway
consumer with manual assignment, so they join no group and commit nothing.

End offsets from the broker are treated as a lower bound: tansu 0.6 answers a "latest
offset" request with the first offset of the last batch plus one. Reads therefore run
until the position also reaches the high watermark carried by every fetch response.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (
    CorruptRecordError,
    KafkaError,
    TopicAlreadyExistsError,
    UnsupportedCodecError,
)

from predictor.errors import BrokerError
from stream.kafka_io import KafkaConfig, to_record, undecodable
from stream.transport import Record

log = logging.getLogger(__name__)


#: how long :func:`ensure_topics` waits for a broker to answer
ADMIN_TIMEOUT_S = 30.0


def wait_for_broker(config: KafkaConfig, timeout_s: float) -> None:
    """Return once a broker answers; :class:`BrokerError` after ``timeout_s`` otherwise.

    Says so in one line first; kafka-python's own loggers, which log each refused connection
    and backoff (about 22 lines in 30 s), are quiet meanwhile: the error says what failed."""
    log.info(
        "waiting up to %g s for the Kafka broker at %s (%s) ...",
        timeout_s,
        config.bootstrap_servers,
        config.security_protocol,
    )
    with quiet_kafka_logs():
        _admin(config, timeout_s).close()


@contextmanager
def quiet_kafka_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """kafka-python's loggers at ``level`` inside the block, as they were after it."""
    kafka = logging.getLogger("kafka")
    before = kafka.level
    kafka.setLevel(level)
    try:
        yield
    finally:
        kafka.setLevel(before)


def _admin(config: KafkaConfig, timeout_s: float) -> KafkaAdminClient:
    """An admin client connected to a broker within ``timeout_s``, or :class:`BrokerError`.

    kafka-python bounds the bootstrap's connection attempts, but not a TLS handshake that
    never completes (``--security-protocol SSL`` against a plaintext listener that waits for
    more bytes), so the client is built on a thread of its own and given up on after the
    deadline; if it connects later, that thread closes it.
    """
    lock = threading.Lock()
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            admin = KafkaAdminClient(
                **config.client_kwargs(), bootstrap_timeout_ms=max(1, int(timeout_s * 1000))
            )
        except KafkaError as e:
            with lock:
                outcome["error"] = e
            return
        with lock:
            if outcome.get("abandoned"):
                admin.close()
                return
            outcome["admin"] = admin

    thread = threading.Thread(target=connect, name="kafka-bootstrap", daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)  # kafka-python's own deadline first, where it has one
    with lock:
        if "admin" in outcome:
            return outcome["admin"]
        outcome["abandoned"] = True
        error = outcome.get("error")
    hint = f"check --bootstrap-servers and --security-protocol ({config.security_protocol})"
    stuck = "the connection did not complete"
    if config.security_protocol in ("SSL", "SASL_SSL"):
        hint += " and --ssl-cafile"
        stuck = "the connection or its TLS handshake did not complete (a plaintext listener?)"
    raise BrokerError(
        f"no Kafka broker answered at {config.bootstrap_servers} within {timeout_s:g} s "
        f"({hint}): {error or stuck}"
    ) from error


def ensure_topics(
    config: KafkaConfig,
    topics: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
    replication_factor: int = -1,
) -> None:
    """Create the missing ``topics`` (name -> partitions) with their topic ``configs``.

    Existing topics are left as they are, whatever their partitions or configs;
    ``replication_factor=-1`` takes the broker's default.
    """
    configs = configs or {}
    admin = _admin(config, ADMIN_TIMEOUT_S)
    try:
        missing = set(topics) - set(admin.list_topics())
        for name in sorted(missing):
            spec: dict[str, Any] = {
                "num_partitions": topics[name],
                "replication_factor": replication_factor,
                "configs": configs.get(name, {}),
            }
            with suppress(TopicAlreadyExistsError):  # created meanwhile by another process
                admin.create_topics({name: spec}, wait_for_metadata=True)
    except KafkaError as e:
        raise BrokerError(f"creating topics {sorted(topics)}: {e}") from e
    finally:
        admin.close()


def read_recent(
    config: KafkaConfig,
    topic: str,
    partitions: list[int],
    per_partition: int,
    timeout_s: float = 10.0,
) -> list[Record]:
    """The last ``per_partition`` records of each of ``partitions``, partition by partition."""
    if not partitions or per_partition <= 0:
        return []
    with _reader(config) as consumer:
        tps = [TopicPartition(topic, p) for p in partitions]
        begins, ends = _bounds(consumer, tps)
        starts = {tp: max(begins[tp], ends[tp] - per_partition) for tp in tps}
        got = _read(consumer, starts, ends, timeout_s, bounded=False)
    return [r for tp in tps for r in got.get(tp, [])[-per_partition:]]


def read_before(
    config: KafkaConfig,
    topic: str,
    ends: dict[int, int],
    per_partition: int,
    timeout_s: float = 10.0,
) -> list[Record]:
    """Up to ``per_partition`` records just before offset ``ends[p]`` of each partition ``p``
    (e.g. :meth:`KafkaSource.committed`), partition by partition, oldest first."""
    if not ends or per_partition <= 0:
        return []
    with _reader(config) as consumer:
        stops = {TopicPartition(topic, p): end for p, end in sorted(ends.items())}
        begins, lasts = _bounds(consumer, list(stops))
        starts: dict[TopicPartition, int] = {}
        for tp, stop in stops.items():
            empty = lasts[tp] <= begins[tp]  # then start == stop: nothing to fetch
            starts[tp] = stop if empty else max(begins[tp], min(stop, lasts[tp]) - per_partition)
        got = _read(consumer, starts, stops, timeout_s, bounded=True)
    out: list[Record] = []
    for tp, stop in stops.items():
        out.extend([r for r in got.get(tp, []) if r.offset < stop][-per_partition:])
    return out


def read_all(config: KafkaConfig, topic: str, timeout_s: float) -> list[Record]:
    """Every record of ``topic`` from the beginning, partition by partition.

    Stops at the end of each partition as seen when the read began, or at ``timeout_s``
    (then what was read so far is returned, with a warning). A missing topic reads empty.
    """
    with _reader(config) as consumer:
        try:
            parts = sorted(consumer.partitions_for_topic(topic))
        except KafkaError as e:
            raise BrokerError(f"reading the partitions of {topic!r}: {e}") from e
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        begins, ends = _bounds(consumer, tps)
        got = _read(consumer, begins, ends, timeout_s, bounded=False)
    return [r for tp in tps for r in got.get(tp, [])]


@contextmanager
def _reader(config: KafkaConfig) -> Iterator[KafkaConsumer]:
    """A group-less consumer that never creates topics, closed on exit."""
    try:
        consumer = KafkaConsumer(
            **config.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            fetch_max_wait_ms=100,
        )
    except KafkaError as e:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap_servers}: {e}") from e
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)


def _bounds(
    consumer: KafkaConsumer, tps: list[TopicPartition]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    try:
        return consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    except KafkaError as e:
        parts = sorted(tp.partition for tp in tps)
        raise BrokerError(f"reading the offsets of partitions {parts}: {e}") from e


def _read(
    consumer: KafkaConsumer,
    starts: dict[TopicPartition, int],
    stops: dict[TopicPartition, int],
    timeout_s: float,
    bounded: bool,
) -> dict[TopicPartition, list[Record]]:
    """Read each partition from its start to its stop; empty ranges are not fetched at all.

    ``bounded``: stop exactly at ``stops`` (or the end of the partition, if sooner);
    otherwise ``stops`` are end offsets, and reading goes on to the high watermark.
    """
    todo = [tp for tp, start in starts.items() if start < stops[tp]]
    got: dict[TopicPartition, list[Record]] = {tp: [] for tp in todo}
    if not todo:
        return got
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, starts[tp])
        while todo:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("stopped reading %s at the %.1f s timeout", todo, timeout_s)
                break
            batches = consumer.poll(timeout_ms=int(min(remaining, 0.2) * 1000) + 1)
            for tp, msgs in batches.items():
                got[tp].extend(to_record(m) for m in msgs)
            done = [tp for tp in todo if _done(consumer, tp, stops[tp], bounded)]
            if done:
                consumer.pause(*done)
                todo = [tp for tp in todo if tp not in done]
    except (UnsupportedCodecError, CorruptRecordError) as e:
        topics = sorted({tp.topic for tp in starts})
        raise undecodable(e, f"topic {', '.join(map(repr, topics))}") from e
    except KafkaError as e:
        raise BrokerError(f"reading {sorted(starts)}: {e}") from e
    return got


def _done(consumer: KafkaConsumer, tp: TopicPartition, stop: int, bounded: bool) -> bool:
    position = consumer.position(tp, timeout_ms=0)
    highwater = consumer.highwater(tp)
    if position is None:
        return False
    if bounded:
        return position >= stop or (highwater is not None and position >= highwater)
    return position >= max(stop, highwater or 0)
