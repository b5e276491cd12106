"""``reqcast_broker_up`` follows the broker, also while no event flows: from the loop's
failing operations and the consumer's connection state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from kafka_proxy import TcpProxy, proxied_config
from prometheus_client import CollectorRegistry, Gauge

from stream.app import kafka_service
from stream.broker_health import BrokerHealth
from stream.kafka_io import KafkaSink
from stream.metrics import Metrics
from stream.service import ServeConfig
from tests.stream.test_limits import _slots

#: how soon after a cut an idle service must report it (the acceptance bound)
DOWN_WITHIN_S = 10.0


def _gauge() -> Gauge:
    return Gauge("up", "Up", registry=CollectorRegistry())


def test_a_failing_operation_or_a_lost_connection_reads_zero() -> None:
    link = {"up": True}
    up = _gauge()
    health = BrokerHealth(up, connected=lambda: link["up"])
    health.ok("poll")
    assert up._value.get() == 1
    health.failed("produce")
    health.ok("poll")  # another operation's success does not hide a failing one
    assert up._value.get() == 0
    health.ok("produce")
    assert up._value.get() == 1
    link["up"] = False
    assert health.refresh() is False and up._value.get() == 0


def test_the_watcher_reads_the_connection_without_any_operation() -> None:
    link = {"up": True}
    up = _gauge()
    health = BrokerHealth(up, connected=lambda: link["up"], interval_s=0.05)
    health.start()
    try:
        assert _within(2.0, lambda: up._value.get() == 1)
        link["up"] = False
        assert _within(2.0, lambda: up._value.get() == 0)
    finally:
        health.stop()


def test_an_unreadable_connection_state_is_not_an_outage() -> None:
    def broken() -> bool:
        raise AttributeError("client internals changed")

    up = _gauge()
    assert BrokerHealth(up, connected=broken).refresh() is True


def _within(timeout_s: float, cond: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.kafka
def test_broker_up_drops_within_seconds_of_a_cut_while_idle_and_comes_back(
    proxied_kafka: tuple[str, TcpProxy], topic_name: str
) -> None:
    bootstrap, proxy = proxied_kafka
    config = proxied_config(bootstrap, {topic_name: 1, f"{topic_name}.out": 1})
    metrics = Metrics(CollectorRegistry())
    sink = KafkaSink(config)
    service, source = kafka_service(
        config,
        ServeConfig(topic_name, f"{topic_name}.out"),
        f"g-{topic_name}",
        sink,
        _slots(1),
        metrics,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=3000,
    )
    stop = threading.Event()
    loop = threading.Thread(target=service.run, args=(stop,), daemon=True)
    service.health.start()
    loop.start()
    up = metrics.broker_up._value.get
    try:
        assert _within(30.0, lambda: bool(source.assignment()) and up() == 1)
        time.sleep(2.0)  # idle: no event is sent at all
        assert up() == 1
        proxy.cut()
        cut_at = time.monotonic()
        assert _within(DOWN_WITHIN_S, lambda: up() == 0), "broker_up stayed 1 during the cut"
        down_after = time.monotonic() - cut_at
        # and it stays down while the cut lasts
        for _ in range(20):
            time.sleep(0.1)
            assert up() == 0
        proxy.restore()
        assert _within(30.0, lambda: up() == 1), "broker_up did not come back"
        print(f"broker_up read 0 {down_after:.1f} s after the cut")
    finally:
        stop.set()
        loop.join(timeout=20)
        service.health.stop()
        source.close()
        sink.close(timeout_s=2)
