"""The delivery loop on a scripted transport: retries, backoff, commit order, stop, lag."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from predictor.errors import BrokerError
from stream.loop import DeliveryLoop, LoopConfig, Message, batch_offsets
from stream.metrics import Metrics
from stream.transport import Record


class FakeSource:
    """Hands out scripted batches (a BrokerError in the script is raised by that poll)."""

    def __init__(self, log: list[str], batches: list[list[Record] | BrokerError]) -> None:
        self.log, self.batches = log, batches
        self.commits: list[dict[int, int]] = []
        self.commit_errors = 0
        self.lag_value: int | BrokerError | None = 7

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        self.log.append("poll")
        if not self.batches:
            return []
        batch = self.batches.pop(0)
        if isinstance(batch, BrokerError):
            raise batch
        return batch

    def commit(self, offsets: dict[int, int]) -> None:
        self.log.append("commit")
        if self.commit_errors:
            self.commit_errors -= 1
            raise BrokerError("commit refused")
        self.commits.append(dict(offsets))

    def assignment(self) -> list[int]:
        return [0, 1]

    def lag(self) -> int | None:
        if isinstance(self.lag_value, BrokerError):
            raise self.lag_value
        return self.lag_value

    def close(self) -> None:
        return None


class FakeSink:
    """Acknowledges a flush once ``failures`` flushes have failed; keeps what landed."""

    def __init__(self, log: list[str], failures: int = 0) -> None:
        self.log, self.failures = log, failures
        self.pending: list[Message] = []
        self.acked: list[Message] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.log.append("send")
        self.pending.append((topic, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.log.append("flush")
        if self.failures:
            self.failures -= 1
            self.pending.clear()  # lost: the loop must send them again
            raise BrokerError("broker down")
        self.acked += self.pending
        self.pending.clear()

    def close(self) -> None:
        return None


def records(partition: int, first: int, n: int) -> list[Record]:
    return [Record("in", partition, first + i, None, b"x", None) for i in range(n)]


def echo(recs: list[Record]) -> tuple[list[Message], dict[int, int]]:
    """One message per record, offsets to commit after them."""
    return [("out", None, f"{r.partition}:{r.offset}".encode()) for r in recs], batch_offsets(recs)


def make(
    batches: list[list[Record] | BrokerError], failures: int = 0, backoff_s: float = 0.01
) -> tuple[DeliveryLoop, FakeSource, FakeSink, list[str], Metrics]:
    log: list[str] = []
    source, sink = FakeSource(log, batches), FakeSink(log, failures)
    metrics = Metrics(CollectorRegistry())
    config = LoopConfig(batch_max=10, poll_timeout_s=0.0, retry_backoff_s=backoff_s)
    return DeliveryLoop(config, source, sink, echo, metrics), source, sink, log, metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_a_failed_delivery_is_retried_with_backoff_until_it_lands() -> None:
    loop, source, sink, log, metrics = make([records(0, 0, 3)], failures=2)
    delays: list[float] = []
    stop = threading.Event()
    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        delays.append(float(timeout or 0.0))
        return real_wait(0)

    stop.wait = wait  # type: ignore[method-assign]
    assert loop.step(stop) == 3
    assert [v for _, _, v in sink.acked] == [b"0:0", b"0:1", b"0:2"]  # the whole set re-sent
    assert log.count("flush") == 3
    assert delays == [0.01, 0.02]  # exponential backoff
    assert sample(metrics, "reqcast_broker_errors_total", {"operation": "produce"}) == 2
    assert sample(metrics, "reqcast_broker_up") == 1.0  # healthy again after success
    assert source.commits == [{0: 3}]
    assert loop.stats.batches == 1


def test_offsets_are_committed_only_after_the_batch_is_acknowledged() -> None:
    loop, source, _, log, _ = make([records(0, 0, 2) + records(1, 5, 2)], failures=1)
    assert loop.step(threading.Event()) == 4
    # commit comes after the flush that succeeded, never before or in between
    assert log[-1] == "commit" and log.index("commit") > max(
        i for i, op in enumerate(log) if op == "flush"
    )
    assert source.commits == [{0: 2, 1: 7}]


def test_stop_during_backoff_ends_the_step_without_a_commit() -> None:
    loop, source, sink, _, metrics = make([records(0, 0, 2)], failures=10**6, backoff_s=30.0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    assert loop.step(stop) == 0
    assert time.monotonic() - t0 < 5.0  # woke from the 30 s backoff when stop was set
    assert source.commits == [] and sink.acked == []  # at least once: nothing committed
    assert loop.stats.batches == 0
    assert sample(metrics, "reqcast_broker_up") == 0.0


def test_a_failed_poll_backs_off_and_the_loop_goes_on() -> None:
    loop, source, _, _, metrics = make([BrokerError("no coordinator"), records(0, 0, 1)])
    stop = threading.Event()
    assert loop.step(stop) == 0
    assert sample(metrics, "reqcast_broker_up") == 0.0
    assert loop.step(stop) == 1
    assert sample(metrics, "reqcast_broker_errors_total", {"operation": "poll"}) == 1
    assert sample(metrics, "reqcast_broker_up") == 1.0
    assert source.commits == [{0: 1}]


def test_a_failed_commit_is_not_retried_and_the_next_batch_commits() -> None:
    loop, source, sink, log, metrics = make([records(0, 0, 2), records(0, 2, 2)])
    source.commit_errors = 1
    stop = threading.Event()
    assert loop.step(stop) == 2
    assert log.count("commit") == 1 and source.commits == []
    assert sample(metrics, "reqcast_broker_errors_total", {"operation": "commit"}) == 1
    assert loop.step(stop) == 2
    assert source.commits == [{0: 4}] and len(sink.acked) == 4


def test_run_exports_the_lag_and_calls_the_hooks() -> None:
    loop, _, _, _, metrics = make([records(0, 0, 3), records(0, 3, 3)])
    batches: list[int] = []
    ticks: list[float] = []
    loop.on_batch = lambda messages: batches.append(len(messages))
    loop.on_tick = lambda: ticks.append(time.monotonic())
    stats = loop.run(threading.Event(), max_events=6)
    assert stats.events == 6 and stats.batches == 2 and batches == [3, 3]
    assert sample(metrics, "reqcast_consumer_lag_records") == 7
    assert len(ticks) == 2  # the first step's tick, and once at the end
    assert sample(metrics, "reqcast_batch_events_count") == 2


def test_an_unknown_lag_leaves_the_gauge_and_the_loop_alone() -> None:
    loop, source, _, _, metrics = make([records(0, 0, 1)])
    source.lag_value = BrokerError("no answer")
    assert loop.lag() is None
    loop.run(threading.Event(), max_events=1)
    assert sample(metrics, "reqcast_consumer_lag_records") == 0.0


def test_run_stops_when_idle_or_when_asked() -> None:
    loop, _, _, _, _ = make([records(0, 0, 1)])
    t0 = time.monotonic()
    assert loop.run(threading.Event(), idle_exit_s=0.2).events == 1
    assert time.monotonic() - t0 < 5.0
    loop, _, _, _, _ = make([records(0, 0, 1), records(0, 1, 1), records(0, 2, 1)])
    assert loop.run(threading.Event(), until=lambda: loop.stats.events >= 2).events == 2


def test_without_a_sink_batches_are_committed_once_processed() -> None:
    log: list[str] = []
    source = FakeSource(log, [records(0, 0, 2)])
    seen: list[int] = []

    def observe(recs: list[Record]) -> tuple[list[Message], dict[int, int]]:
        seen.append(len(recs))
        return [], batch_offsets(recs)

    metrics = Metrics(CollectorRegistry())
    loop = DeliveryLoop(LoopConfig(), source, None, observe, metrics, observe_latency=False)
    assert loop.step(threading.Event()) == 2
    assert seen == [2] and source.commits == [{0: 2}]
    assert sample(metrics, "reqcast_batch_events_count") == 0  # not a serving loop's batch


@pytest.mark.parametrize("n", [0, 1])
def test_batch_offsets_name_the_next_record_of_each_partition(n: int) -> None:
    recs = records(0, 4, 2 + n) + records(3, 0, 1)
    assert batch_offsets(recs) == {0: 6 + n, 3: 1}
