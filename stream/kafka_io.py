"""Kafka adapters of the streaming ports, built on kafka-python.

:class:`KafkaSink` implements :class:`stream.transport.Sink` and :class:`KafkaSource`
implements :class:`stream.transport.Source`; :class:`KafkaConfig` holds the connection
and security settings they share (the command line builds it from ``--bootstrap-servers``
and friends; this module knows nothing of flags).
Group-less readers and topic administration live in :mod:`stream.kafka_admin`. Every
kafka-python error leaves these adapters as :class:`predictor.errors.BrokerError`,
with the original chained, except a record batch that cannot be decoded: that is an
:class:`UndecodableBatch`, which no retry gets past.

>>> cfg = KafkaConfig("127.0.0.1:9092")
>>> sorted(cfg.client_kwargs())
['bootstrap_servers', 'client_id', 'security_protocol']
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from predictor.errors import BrokerError, ConfigError, InputError
from stream.transport import AssignCallback, Record

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
log = logging.getLogger(__name__)

#: how long closing a source waits for its last commit (the broker may be gone)
CLOSE_COMMIT_TIMEOUT_MS = 10_000

#: the environment variables the SASL credentials come from (never flags); the command
#: line reads them, as it is the one reader of the environment
USERNAME_ENV = "REQCAST_SASL_USERNAME"
PASSWORD_ENV = "REQCAST_SASL_PASSWORD"

#: producer settings for at-least-once delivery with good throughput; overridable
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "retries": 2_147_483_647,  # bounded in time by delivery_timeout_ms instead
    "retry_backoff_ms": 200,
    "delivery_timeout_ms": 120_000,
    "linger_ms": 5,
    "batch_size": 128 * 1024,
    "max_block_ms": 30_000,
    "reconnect_backoff_max_ms": 2_000,  # kafka-python's 30 s would stall after an outage
}

#: consumer settings of every group member (the bench's echo uses them too): a fetch
#: returns after at most 100 ms (Kafka's 500 ms default holds a quiet stream's first
#: events that long), and takes up to 8 MiB a partition, so a backlog is read in few
#: round trips (``reqcast bench stream``: 1 MiB fetches left serve waiting on them)
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "reconnect_backoff_max_ms": 2_000,  # kafka-python's 30 s would stall after an outage
}

#: how long end offsets fetched for ``KafkaSource.lag`` are reused
END_OFFSETS_TTL_S = 1.0

#: the Python package that decodes each compression codec (gzip needs none); reqcast's
#: dependencies include them all (kafka-python's ``lz4``, ``snappy`` and ``zstd`` extras)
CODEC_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


class UndecodableBatch(InputError):
    """A record batch read from Kafka cannot be decoded here: compressed with a codec whose
    library is missing, or corrupt. Reading on cannot get past it (kafka-python 3.0 then
    loops on the batch forever), so it stops the reader."""


def undecodable(error: KafkaError, where: str) -> UndecodableBatch:
    """The :class:`UndecodableBatch` for kafka-python's ``error`` met reading ``where``.

    >>> print(undecodable(UnsupportedCodecError("Libraries for lz4 compression codec not found"), "topic 'requests'"))
    topic 'requests' holds lz4-compressed record batches and the lz4 codec library is not installed: `pip install lz4` (a dependency of reqcast: reinstall it)
    """
    text = str(error)
    found = re.search(r"Libraries for (\w+) compression codec not found", text)
    if found:
        codec = found.group(1)
        package = CODEC_PACKAGES.get(codec, codec)
        return UndecodableBatch(
            f"{where} holds {codec}-compressed record batches and the {codec} codec library is "
            f"not installed: `pip install {package}` (a dependency of reqcast: reinstall it)"
        )
    return UndecodableBatch(f"{where} holds a record batch that cannot be decoded: {text}")


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are and how to authenticate; shared by every Kafka client."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "reqcast"

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("no Kafka bootstrap servers given")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"unknown security protocol {self.security_protocol!r}")
        if self.sasl_mechanism is not None and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"unknown SASL mechanism {self.sasl_mechanism!r}")
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ConfigError(
                f"{self.security_protocol} needs --sasl-mechanism and the credentials "
                f"in {USERNAME_ENV} / {PASSWORD_ENV}"
            )

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security keyword arguments for any kafka-python client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs


class KafkaSink:
    """Asynchronous producer; ``flush`` raises :class:`BrokerError` if any record since the
    previous flush was not acknowledged (``acks=all``, retried until ``delivery_timeout_ms``)."""

    def __init__(self, config: KafkaConfig, **producer_overrides: Any) -> None:
        self._servers = config.bootstrap_servers
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []
        settings = {**PRODUCER_DEFAULTS, **config.client_kwargs(), **producer_overrides}
        try:
            self._producer = KafkaProducer(**settings)
        except KafkaError as e:
            raise BrokerError(f"cannot start a Kafka producer for {self._servers}: {e}") from e

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaError as e:
            raise BrokerError(f"cannot send to Kafka topic {topic!r}: {e}") from e
        future.add_errback(self._on_failure, topic)

    def _on_failure(self, topic: str, error: BaseException) -> None:
        # runs on the producer's I/O thread
        with self._lock:
            self._failures.append((topic, error))

    def flush(self, timeout_s: float = 30.0) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as e:
            raise BrokerError(
                f"Kafka at {self._servers} did not acknowledge every record within "
                f"{timeout_s:g} s: {e}"
            ) from e
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            topic, first = failures[0]
            raise BrokerError(
                f"{len(failures)} record(s) were not written to Kafka at {self._servers}; "
                f"first on {topic!r}: {first}"
            ) from first

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered (waiting at most ``timeout_s``) and release the producer."""
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaError as e:
            raise BrokerError(f"error closing the Kafka producer: {e}") from e


class _Rebalance(ConsumerRebalanceListener):
    """Notes kafka-python's rebalance callbacks for the owning :class:`KafkaSource`.

    They run on kafka-python's I/O thread, where blocking client calls are refused and
    slow work stalls heartbeats, so nothing else happens here.
    """

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._source._lock:
            self._source._owned -= {tp.partition for tp in revoked}
            self._source._ends_at = 0.0
            last = self._source._last_commit
            if last is not None:  # their new owner commits them from now on
                gone = set(revoked)
                kept = {tp: off for tp, off in last.items() if tp not in gone}
                self._source._last_commit = kept or None

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._source._lock:
            self._source._owned |= {tp.partition for tp in assigned}
            self._source._fresh |= {tp.partition for tp in assigned}
            self._source._ends_at = 0.0


class KafkaSource:
    """One member of ``group_id`` reading ``topic``; commits only what it is told to.

    ``on_assign`` is called from :meth:`poll`, on the caller's thread and before the
    records of that poll are returned, with the partitions assigned since the previous
    poll (the whole new assignment under kafka-python's default eager rebalancing). It
    may block (to warm windows, say); an exception it raises comes out of :meth:`poll`.
    On small test brokers such as tansu a group join waits for the rebalance timeout, so
    pass a short ``max_poll_interval_ms`` there.
    """

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        group_id: str,
        on_assign: AssignCallback | None = None,
        auto_offset_reset: str = "earliest",
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        async_commits: bool = False,
        **consumer_overrides: Any,
    ) -> None:
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ConfigError("heartbeat_interval_ms must be below session_timeout_ms")
        self.topic, self.group_id = topic, group_id
        self._async_commits = async_commits
        self._commit_error: BaseException | None = None
        self._last_commit: dict[TopicPartition, OffsetAndMetadata] | None = None
        self._on_assign = on_assign
        self._reset = auto_offset_reset
        self._servers = config.bootstrap_servers
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._fresh: set[int] = set()  # assigned, on_assign not called yet
        self._ends: dict[int, int] = {}
        self._ends_at = 0.0
        self._undecodable: UndecodableBatch | None = None
        settings = {
            **CONSUMER_DEFAULTS,
            **config.client_kwargs(),
            "group_id": group_id,
            "auto_offset_reset": auto_offset_reset,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            **consumer_overrides,
        }
        try:
            self._consumer = KafkaConsumer(**settings)
            self._consumer.subscribe([topic], listener=_Rebalance(self))
        except KafkaError as e:
            raise BrokerError(f"cannot join group {group_id!r} on {self._servers}: {e}") from e

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Raises :class:`UndecodableBatch` for a batch that cannot be decoded, and again on
        every later call: kafka-python would spin on that batch inside its next poll."""
        if self._undecodable is not None:
            raise self._undecodable
        try:
            batches = self._consumer.poll(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
        except (UnsupportedCodecError, CorruptRecordError) as e:
            self._undecodable = undecodable(e, f"input topic {self.topic!r}")
            raise self._undecodable from e
        except KafkaError as e:
            raise BrokerError(f"polling {self.topic!r} for group {self.group_id!r}: {e}") from e
        with self._lock:
            fresh, self._fresh = sorted(self._fresh & self._owned), set()
        if fresh and self._on_assign is not None:
            self._on_assign(fresh)
        return [to_record(m) for msgs in batches.values() for m in msgs]

    def committed(self, partitions: list[int]) -> dict[int, int]:
        """Where the group resumes each of ``partitions``: the committed offset, or else
        the beginning or end of the partition as ``auto_offset_reset`` says."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        try:
            found = {tp: self._consumer.committed(tp) for tp in tps}
            missing = [tp for tp, off in found.items() if off is None]
            if missing and self._reset == "latest":
                found.update(self._consumer.end_offsets(missing))
            elif missing:
                found.update(self._consumer.beginning_offsets(missing))
        except KafkaError as e:
            raise BrokerError(f"reading the committed offsets of {self.group_id!r}: {e}") from e
        return {tp.partition: int(off) for tp, off in found.items()}

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit exactly ``offsets`` (partition -> next offset to read).

        Synchronously by default. With ``async_commits`` the request is sent and the call
        returns at once (the broker applies a member's commits in order; polls complete
        them); a commit that failed is raised as :class:`BrokerError` by the next call (a
        later commit covers its offsets), and :meth:`close` commits the last offsets
        synchronously before leaving the group."""
        if offsets:
            payload = {
                TopicPartition(self.topic, p): OffsetAndMetadata(off, "", -1)
                for p, off in offsets.items()
            }
            try:
                if self._async_commits:
                    with self._lock:
                        self._last_commit = payload
                    self._consumer.commit_async(offsets=payload, callback=self._on_commit)
                else:
                    self._consumer.commit(offsets=payload)
            except KafkaError as e:
                raise BrokerError(
                    f"committing {sorted(offsets.items())} of {self.topic!r} for group "
                    f"{self.group_id!r}: {e}"
                ) from e
        with self._lock:
            failed, self._commit_error = self._commit_error, None
        if failed is not None:  # this commit, just sent, covers its offsets
            raise BrokerError(f"an earlier commit for group {self.group_id!r} failed: {failed}")

    def _on_commit(self, offsets: Any, response: Any) -> None:
        if isinstance(response, BaseException):
            with self._lock:
                self._commit_error = response

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic)

    def connected(self) -> bool:
        """Whether the consumer knows its group coordinator and holds a live connection to
        it. kafka-python forgets the coordinator as soon as that connection drops (or its
        heartbeats go unanswered for a session timeout) and finds it again once a broker
        answers, so this follows an outage within seconds, also while no record flows.
        Safe to call from any thread; no request is sent."""
        return not self._consumer._coordinator.coordinator_unknown()

    def lag(self) -> int | None:
        """Records between the positions and the ends of the owned partitions, or ``None``.

        End offsets are asked for at most once per second; the high watermark from the
        latest fetch is used when it is further on (tansu 0.6 reports the end of a
        partition as the last batch's first offset plus one).
        """
        tps = [TopicPartition(self.topic, p) for p in self.assignment()]
        if not tps:
            return None
        try:
            now = time.monotonic()
            if now - self._ends_at > END_OFFSETS_TTL_S:
                ends = self._consumer.end_offsets(tps, timeout_ms=2_000)
                self._ends = {tp.partition: off for tp, off in ends.items()}
                self._ends_at = now
            total = 0
            for tp in tps:
                position = self._consumer.position(tp, timeout_ms=0)
                end = max(self._ends.get(tp.partition, -1), self._consumer.highwater(tp) or -1)
                if position is None or end < 0:
                    return None
                total += max(0, end - position)
            return total
        except KafkaError:
            return None

    def close(self) -> None:
        with self._lock:
            last, self._last_commit = self._last_commit, None
        if last is not None:
            try:  # waits for the asynchronous commits sent before it, not forever
                self._consumer.commit(offsets=last, timeout_ms=CLOSE_COMMIT_TIMEOUT_MS)
            except KafkaError as e:  # partitions moved on: their new owner resumes earlier
                log.warning("last commit for group %r on close failed: %s", self.group_id, e)
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as e:
            raise BrokerError(f"error leaving group {self.group_id!r}: {e}") from e


def to_record(message: Any) -> Record:
    """kafka-python ``ConsumerRecord`` -> :class:`Record` (a tombstone's value becomes ``b""``)."""
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if message.value is not None else b"",
        timestamp_ms=None
        if message.timestamp is None or message.timestamp < 0
        else message.timestamp,
    )
