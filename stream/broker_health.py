"""``reqcast_broker_up``: whether the service can reach Kafka, even while no traffic flows.

An empty poll is not evidence that the broker answers (a consumer cut off from its broker
polls empty too), and while the loop waits on a flush nothing else is measured. So the
gauge combines two signals:

* the operations the serving loop reports (poll, produce, commit): any of them failing
  and not yet succeeded again sets it to 0;
* the consumer's own connection state (``connected``, e.g.
  :meth:`stream.kafka_io.KafkaSource.connected`), read by a watcher thread every
  ``interval_s`` seconds and on every report, so that a cut shows within seconds whether
  the loop is idle or blocked in a flush.

>>> from prometheus_client import CollectorRegistry, Gauge
>>> up = Gauge("up", "Up", registry=CollectorRegistry())
>>> health = BrokerHealth(up, connected=lambda: True)
>>> health.failed("produce"); up._value.get()
0.0
>>> health.ok("produce"); up._value.get()
1.0
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import Gauge

log = logging.getLogger(__name__)

#: seconds between two reads of the consumer's connection state
CHECK_INTERVAL_S = 1.0


class BrokerHealth:
    """Sets ``gauge`` to 1 while ``connected()`` is not False and no operation is failing."""

    def __init__(
        self,
        gauge: Gauge,
        connected: Callable[[], bool | None] | None = None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.gauge, self.connected, self.interval_s = gauge, connected, interval_s
        self._failing: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ok(self, *operations: str) -> None:
        """``operations`` just succeeded (or need not be retried any more)."""
        with self._lock:
            self._failing.difference_update(operations)
        self.refresh()

    def failed(self, operation: str) -> None:
        """``operation`` just failed (it is being retried)."""
        with self._lock:
            self._failing.add(operation)
        self.refresh()

    def refresh(self) -> bool:
        """Set the gauge from the failing operations and the connection state; returns it."""
        try:
            link = self.connected() if self.connected is not None else None
        except Exception as e:  # a client's internals changed: say so, count it as unknown
            log.debug("broker connection state unknown: %s", e)
            link = None
        with self._lock:
            up = not self._failing and link is not False
        self.gauge.set(1 if up else 0)
        return up

    def start(self) -> None:
        """Refresh every ``interval_s`` seconds from a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="broker-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()
