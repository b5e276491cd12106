"""Ports of the streaming runtime and the in-process transport behind them.

A :class:`Source` hands out records from partitions of an input topic and takes
commits; a :class:`Sink` writes records and, on ``flush``, returns only once the
transport has acknowledged every record written so far. Kafka
(:mod:`stream.kafka_io`) and :class:`MemoryBroker` are the adapters.

>>> broker = MemoryBroker()
>>> broker.create_topic("in", partitions=2)
>>> sink = broker.sink()
>>> sink.send("in", b"ChatGPT", b"{}")
>>> sink.flush()
>>> src = broker.source("in", group_id="g")
>>> [(r.partition, r.offset, r.value) for r in src.poll(10, 0.0)]
[(1, 0, b'{}')]
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: called with the partitions a source was just given (for window warm-up)
AssignCallback = Callable[[list[int]], None]


@dataclass(frozen=True, slots=True)
class Record:
    """One message read from a topic partition."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None


class Source(Protocol):
    """Reads one input topic as a member of a consumer group."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""
        ...

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit ``partition -> next offset to read``."""
        ...

    def assignment(self) -> list[int]:
        """Partitions currently owned."""
        ...

    def lag(self) -> int | None:
        """Records behind the end of the owned partitions, if known."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Writes records to topics; ``flush`` raises if any written record was not acknowledged."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...

    def close(self) -> None: ...


def partition_for(key: bytes | None, partitions: int) -> int:
    """Stable key -> partition mapping of the in-process transport."""
    if key is None or partitions <= 1:
        return 0
    return zlib.crc32(key) % partitions


class MemoryBroker:
    """Thread-safe in-process topics for ``reqcast run`` and tests; no persistence."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._topics: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str], dict[int, int]] = {}

    def create_topic(self, name: str, partitions: int = 1) -> None:
        with self._lock:
            self._topics.setdefault(name, [[] for _ in range(partitions)])

    def topic(self, name: str) -> list[list[Record]]:
        with self._lock:
            return self._topics.setdefault(name, [[]])

    def append(self, topic: str, key: bytes | None, value: bytes) -> Record:
        with self._lock:
            parts = self._topics.setdefault(topic, [[]])
            p = partition_for(key, len(parts))
            rec = Record(topic, p, len(parts[p]), key, value, int(time.time() * 1000))
            parts[p].append(rec)
            self._lock.notify_all()
            return rec

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition."""
        with self._lock:
            return [r for part in self._topics.get(topic, []) for r in part]

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._lock:
            return {p: len(part) for p, part in enumerate(self._topics.get(topic, []))}

    def sink(self) -> MemorySink:
        return MemorySink(self)

    def source(self, topic: str, group_id: str) -> MemorySource:
        return MemorySource(self, topic, group_id)

    # used by MemorySource
    def _read(self, topic: str, positions: dict[int, int], max_records: int) -> list[Record]:
        out: list[Record] = []
        parts = self._topics.get(topic, [])
        for p, part in enumerate(parts):
            pos = positions.get(p, 0)
            take = part[pos : pos + max_records - len(out)]
            out.extend(take)
            positions[p] = pos + len(take)
            if len(out) >= max_records:
                break
        return out


class MemorySink:
    """Appends straight to a :class:`MemoryBroker`; every send is acknowledged at once."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.broker.append(topic, key, value)

    def flush(self, timeout_s: float = 30.0) -> None:
        return None

    def close(self) -> None:
        return None


class MemorySource:
    """The single member of its group: owns every partition, resumes from commits."""

    def __init__(self, broker: MemoryBroker, topic: str, group_id: str) -> None:
        self.broker, self.topic, self.group_id = broker, topic, group_id
        committed = broker._committed.setdefault((group_id, topic), {})
        self._positions = dict(committed)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self.broker._lock:
            while True:
                out = self.broker._read(self.topic, self._positions, max_records)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self.broker._lock.wait(remaining)

    def commit(self, offsets: dict[int, int]) -> None:
        with self.broker._lock:
            self.broker._committed[(self.group_id, self.topic)].update(offsets)

    def assignment(self) -> list[int]:
        return list(range(len(self.broker.topic(self.topic))))

    def lag(self) -> int | None:
        ends = self.broker.end_offsets(self.topic)
        return sum(end - self._positions.get(p, 0) for p, end in ends.items())

    def close(self) -> None:
        return None
