"""Every Prometheus metric reqcast exports, defined in one place.

Names carry the ``reqcast_`` prefix and base units; labels are low-cardinality
(stream keys are model names, not users). Pass a fresh
``CollectorRegistry`` to :class:`Metrics` in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BatchHistogram:
    """A histogram without labels that takes a micro-batch's observations in one call.

    ``prometheus_client.Histogram.observe`` costs about 1.3 µs a value; the serving loop
    observes every event's latency, so it hands over the batch's array instead. Exposed
    exactly as a ``Histogram`` with the same buckets (``_bucket``, ``_count``, ``_sum``).

    >>> from prometheus_client import generate_latest
    >>> r = CollectorRegistry()
    >>> h = BatchHistogram("x_seconds", "Example", (0.1, 1.0), r)
    >>> h.observe_many(np.array([0.05, 0.1, 0.5, 3.0]))
    >>> [line for line in generate_latest(r).decode().splitlines() if "_bucket" in line]
    ['x_seconds_bucket{le="0.1"} 2.0', 'x_seconds_bucket{le="1.0"} 3.0', 'x_seconds_bucket{le="+Inf"} 4.0']
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name, self._doc = name, documentation
        finite = sorted({float(b) for b in buckets} - {float("inf")})
        self._bounds = np.array([*finite, np.inf])
        self._counts = np.zeros(len(self._bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()  # scrapes read from the HTTP server's thread
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        """Count each value in the first bucket whose bound is at least the value."""
        if not len(values):
            return
        counts = np.bincount(np.searchsorted(self._bounds, values), minlength=len(self._bounds))
        with self._lock:
            self._counts += counts[: len(self._bounds)]  # NaN sorts past +Inf: not counted
            self._sum += float(values[~np.isnan(values)].sum())

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._doc)]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        buckets = [(floatToGoString(b), c) for b, c in zip(self._bounds, cumulative, strict=True)]
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=total)


class Metrics:
    """The service's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else REGISTRY
        self.registry = r
        self.events = Counter(
            "reqcast_events_consumed_total",
            "Input events consumed, by validation status",
            ["status"],
            registry=r,
        )
        self.invalid = Counter(
            "reqcast_invalid_events_total",
            "Invalid input events sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.forecasts = Counter(
            "reqcast_forecasts_published_total",
            "Forecasts published, by model and kind",
            ["model", "kind"],
            registry=r,
        )
        self.latency = BatchHistogram(
            "reqcast_event_to_forecast_latency_seconds",
            "Time from an event's broker timestamp to the acknowledgement of its forecasts",
            LATENCY_BUCKETS,
            r,
        )
        self.batch_size = Histogram(
            "reqcast_batch_events",
            "Events per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self.lag = Gauge(
            "reqcast_consumer_lag_records",
            "Records behind the end of the owned input partitions",
            registry=r,
        )
        self.broker_up = Gauge(
            "reqcast_broker_up", "1 while the broker answers, 0 while retrying", registry=r
        )
        self.broker_errors = Counter(
            "reqcast_broker_errors_total",
            "Failed broker operations (retried)",
            ["operation"],
            registry=r,
        )
        self.streams = Gauge("reqcast_streams_active", "Streams with a rolling window", registry=r)
        self.model_version = Gauge(
            "reqcast_model_version", "Version of the serving model", ["model", "task"], registry=r
        )
        self.model_info = Info("reqcast_model", "Serving artifact per model", ["model"], registry=r)
        self.swaps = Counter(
            "reqcast_model_swaps_total",
            "Model swap decisions, by result and reason",
            ["model", "result", "reason"],
            registry=r,
        )
        self.last_swap = Gauge(
            "reqcast_model_last_swap_timestamp_seconds",
            "Unix time of the last accepted swap",
            ["model"],
            registry=r,
        )
        self.training_duration = Histogram(
            "reqcast_training_duration_seconds",
            "Duration of a training run",
            ["model", "device"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.training_device = Info(
            "reqcast_training_device", "Device of the last training run", ["model"], registry=r
        )
        self.forecast_value = Gauge(
            "reqcast_forecast_next_request",
            "Latest next-request forecast per stream, model and quantity; bound is point, lower or upper",
            ["stream", "model", "quantity", "bound"],
            registry=r,
        )
        self.load_value = Gauge(
            "reqcast_forecast_load",
            "Latest load forecast per stream, model, quantity and horizon (per-second rate); bound is point, lower or upper",
            ["stream", "model", "quantity", "horizon_bins", "bound"],
            registry=r,
        )
        self.online_mae = Gauge(
            "reqcast_online_mae",
            "Rolling mean absolute error of matured forecasts",
            ["model", "kind", "quantity", "horizon_bins"],
            registry=r,
        )
        self.online_coverage = Gauge(
            "reqcast_online_interval_coverage",
            "Rolling fraction of outcomes inside the nominal 80 % interval",
            ["model", "kind", "quantity", "horizon_bins"],
            registry=r,
        )
        self.actual_value = Gauge(
            "reqcast_actual_load",
            "Observed load of the last closed bin per stream and quantity (per-second rate)",
            ["stream", "quantity"],
            registry=r,
        )


def serve_metrics(
    port: int, registry: CollectorRegistry | None = None, addr: str = "0.0.0.0"
) -> None:
    """Expose ``/metrics`` on ``port`` from a daemon thread (0 disables it)."""
    if port:
        start_http_server(port, addr=addr, registry=registry if registry is not None else REGISTRY)
