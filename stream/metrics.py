"""Every Prometheus metric reqcast exports, defined in one place.

Names carry the ``reqcast_`` prefix and base units; labels are low-cardinality
(stream keys are model names, not users). Pass a fresh
``CollectorRegistry`` to :class:`Metrics` in tests.

The per-stream gauges (latest forecasts and observed load) are bounded: a stream key is
at most 128 characters (:func:`predictor.events.bounded_key`), each gauge exports at most
``max_exported_streams`` streams (first come, first served; the updates of the others
are counted in ``reqcast_stream_series_dropped_total``), and a stream's series are
removed when the service forgets the stream (:class:`StreamGauge`).
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

from predictor.errors import ConfigError

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


#: streams each per-stream gauge exports at most (``--metrics-max-streams``)
MAX_EXPORTED_STREAMS = 100


class StreamGauge:
    """A gauge whose first label is a stream, exporting at most ``limit`` streams.

    Streams are taken first come, first served (a new series per stream would churn the
    scraper's storage); an update for a stream beyond the limit is dropped and counted in
    ``dropped``. :meth:`remove` frees a stream's slot and deletes its series. Used from the
    serving loop's thread only.

    >>> r = CollectorRegistry()
    >>> dropped = Counter("d", "Dropped", registry=r)
    >>> g = StreamGauge(Gauge("g", "G", ["stream", "bound"], registry=r), 1, dropped)
    >>> g.set(("a", "point"), 1.0); g.set(("b", "point"), 2.0); g.streams()
    ['a']
    >>> g.remove("a"); g.set(("b", "point"), 2.0); g.streams()
    ['b']
    """

    def __init__(self, gauge: Gauge, limit: int, dropped: Counter) -> None:
        self.gauge, self.limit, self._dropped = gauge, limit, dropped
        self._series: dict[str, set[tuple[str, ...]]] = {}

    def set(self, labels: tuple[str, ...], value: float) -> None:
        """Set the series ``labels`` (stream first) to ``value``, if the stream is exported."""
        series = self._series.get(labels[0])
        if series is None:
            if len(self._series) >= self.limit:
                self._dropped.inc()
                return
            series = self._series[labels[0]] = set()
        series.add(labels)
        self.gauge.labels(*labels).set(value)

    def remove(self, stream: str) -> None:
        """Delete every series of ``stream``."""
        for labels in self._series.pop(stream, ()):
            self.gauge.remove(*labels)

    def clear(self) -> None:
        for stream in list(self._series):
            self.remove(stream)

    def streams(self) -> list[str]:
        return list(self._series)


class Metrics:
    """The service's metrics, registered in ``registry``; each per-stream gauge exports at
    most ``max_exported_streams`` streams."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        max_exported_streams: int = MAX_EXPORTED_STREAMS,
    ) -> None:
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
            "reqcast_broker_up",
            "1 while the consumer is connected to its group coordinator and no broker operation "
            "is being retried, else 0",
            registry=r,
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
        self.refit_requests = Counter(
            "reqcast_refit_requests_total",
            "Refit rounds started per task, by what made them due: schedule (the interval), "
            "events (the count), cold (a slot without a model) or drift (online error above "
            "the serving model's held-out error)",
            ["task", "reason"],
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
        self.ensemble_weight = Gauge(
            "reqcast_ensemble_weight",
            "Weight of each expert in the ensemble forecast per stream, quantity and horizon "
            "(the weights of a cell sum to 1); load quantities are rates per bin, next-request "
            "quantities (gap_s, request_tokens, response_tokens) have horizon_bins 1: the next event",
            ["stream", "model", "quantity", "horizon_bins"],
            registry=r,
        )
        self.stream_series_dropped = Counter(
            "reqcast_stream_series_dropped",
            "Updates of a per-stream gauge dropped because it already exports "
            "--metrics-max-streams streams, by metric",
            ["metric"],
            registry=r,
        )
        limit, dropped = max_exported_streams, self.stream_series_dropped.labels
        self.forecast_streams = StreamGauge(
            self.forecast_value, limit, dropped("reqcast_forecast_next_request")
        )
        self.load_streams = StreamGauge(self.load_value, limit, dropped("reqcast_forecast_load"))
        self.actual_streams = StreamGauge(self.actual_value, limit, dropped("reqcast_actual_load"))
        self.ensemble_weights = StreamGauge(
            self.ensemble_weight, limit, dropped("reqcast_ensemble_weight")
        )
        #: the next-request ensemble's series of the same gauge, told apart by their quantity
        #: (each task forgets and clears its own streams)
        self.next_request_ensemble_weights = StreamGauge(
            self.ensemble_weight, limit, dropped("reqcast_ensemble_weight")
        )

    def forget_stream(self, stream: str) -> None:
        """Remove every per-stream series of ``stream`` (its state was dropped)."""
        for g in (
            self.forecast_streams,
            self.load_streams,
            self.actual_streams,
            self.ensemble_weights,
            self.next_request_ensemble_weights,
        ):
            g.remove(stream)


#: where ``/metrics`` listens by default (``--metrics-host``): every interface, as a
#: container's scraper reaches it from outside the container
METRICS_HOST = "0.0.0.0"


def serve_metrics(
    port: int, registry: CollectorRegistry | None = None, addr: str = METRICS_HOST
) -> None:
    """Expose ``/metrics`` on ``addr:port`` from a daemon thread (port 0 disables it)."""
    if not port:
        return
    try:
        start_http_server(port, addr=addr, registry=registry if registry is not None else REGISTRY)
    except OSError as e:  # taken port, unknown host
        raise ConfigError(f"cannot serve /metrics on {addr}:{port}: {e}") from e
