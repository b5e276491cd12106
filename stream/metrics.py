"""Every Prometheus metric reqcast exports, defined in one place.

Names carry the ``reqcast_`` prefix and base units; labels are low-cardinality
(stream keys are model names, not users). Pass a fresh
``CollectorRegistry`` to :class:`Metrics` in tests.
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.latency = Histogram(
            "reqcast_event_to_forecast_latency_seconds",
            "Time from an event's broker timestamp to the acknowledgement of its forecasts",
            buckets=LATENCY_BUCKETS,
            registry=r,
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
