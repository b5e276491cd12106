"""Each forecasting task on its own, without a loop: warm, a batch, scores exported."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from stream.metrics import Metrics
from stream.tasks import ForecastTask
from stream.tasks.load import LoadConfig, LoadForecasting
from stream.tasks.next_request import NextRequestConfig, NextRequestTask
from stream.transport import Record
from stream.validation import Valid
from tests.stream.test_load_stream import slots


def valid(events: list[RequestEvent], first_offset: int = 0) -> list[Valid]:
    return [
        (ev, Record("in", 0, first_offset + i, None, json.dumps(ev.to_dict()).encode()))
        for i, ev in enumerate(events)
    ]


def gauge(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def next_request(metrics: Metrics, capacity: int = 256) -> NextRequestTask:
    """Next-request forecasts, one stream per ``model`` field (``all`` without one)."""
    return NextRequestTask(NextRequestConfig("out", "model", capacity), slots(1), metrics)


def test_the_tasks_are_forecast_tasks() -> None:
    metrics = Metrics(CollectorRegistry())
    tasks: list[ForecastTask] = [
        next_request(metrics),
        LoadForecasting(LoadConfig("out", 10.0, (1,), "none"), slots(1), metrics),
    ]
    members = ("warm", "on_assign", "process", "export_metrics")
    assert all(callable(getattr(t, m, None)) for t in tasks for m in members)


def test_next_request_warms_without_publishing_then_forecasts_every_event() -> None:
    metrics = Metrics(CollectorRegistry())
    task = next_request(metrics)
    task.warm([RequestEvent(float(t), 100, 10) for t in range(20)])
    assert task.published == {} and len(task.windows) == 1
    assert task.last_timestamp("all") == 19.0

    batch = [RequestEvent(20.0 + t, 100, 10) for t in range(5)]
    messages = task.process(valid(batch))
    forecasts = [json.loads(v) for _, _, v in messages]
    assert len(forecasts) == 5 * 3  # lstm, dlinear and best per event
    assert {f["model"] for f in forecasts} == {"lstm", "dlinear", "best"}
    assert all(f["warm"] for f in forecasts)  # 20 warmed events fill the 8-event windows
    assert {f["source"]["offset"] for f in forecasts} == set(range(5))
    assert task.published == {"lstm": 5, "dlinear": 5, "best": 5}
    # each model's forecasts of events 20..23 were scored by the next event of the batch
    assert task.scores.count("lstm", "gap_s") == 4

    task.export_metrics()
    labels = {"model": "lstm", "kind": "next_request", "quantity": "gap_s", "horizon_bins": "1"}
    assert gauge(metrics, "reqcast_online_mae", labels) is not None
    latest = {"stream": "all", "model": "lstm", "quantity": "gap_s", "bound": "point"}
    assert gauge(metrics, "reqcast_forecast_next_request", latest) is not None


def test_next_request_on_assign_rebuilds_the_windows_from_history_only() -> None:
    metrics = Metrics(CollectorRegistry())
    task = next_request(metrics, capacity=16)
    task.process(valid([RequestEvent(float(t), 1, 1, "gone") for t in range(3)]))
    assert "gone" in task._pending
    history = [RequestEvent(float(t), 1, 1) for t in range(40)]
    task.on_assign(history)
    assert list(task._pending) == [] and task.last_timestamp("gone") is None
    assert task.last_timestamp("all") == 39.0
    assert task.recent(history) == history[-16:]  # no more than the windows keep
    assert task.published == {"lstm": 3, "dlinear": 3, "best": 3}  # nothing published


def test_load_warms_without_publishing_then_forecasts_each_closed_bin() -> None:
    metrics = Metrics(CollectorRegistry())
    task = LoadForecasting(LoadConfig("out", 10.0, (1, 3), "none"), slots(3), metrics)
    task.warm([RequestEvent(float(t), 100, 10) for t in range(200)])
    assert task.published == 0 and len(task.bins.history("all")) == 19

    # 35 s later: bin 19 closes, then the empty 20..22; one forecast per model and best
    messages = task.process(valid([RequestEvent(235.0, 100, 10)]))
    loads = [json.loads(v) for _, _, v in messages]
    assert {m["model"] for m in loads} == {"lstm", "dlinear", "best", "ensemble"}
    assert len(loads) == 4
    assert all(m["kind"] == "load" and m["last_closed_bin_start"] == 220.0 for m in loads)
    assert task.published == 4

    # the next closed bin scores the forecasts that targeted it
    task.process(valid([RequestEvent(245.0, 100, 10)], first_offset=1))
    assert task.scores.count("lstm", "requests_per_s@1") == 1
    task.export_metrics()
    labels = {"model": "lstm", "kind": "load", "quantity": "requests_per_s", "horizon_bins": "1"}
    assert gauge(metrics, "reqcast_online_mae", labels) is not None


def test_load_on_assign_rebuilds_from_history_and_keeps_its_bins_without_any() -> None:
    metrics = Metrics(CollectorRegistry())
    task = LoadForecasting(LoadConfig("out", 10.0, (1,), "model"), slots(1), metrics)
    task.warm([RequestEvent(float(t), 1, 1, "gone") for t in range(0, 100, 5)])
    task.on_assign([])
    assert task.bins.streams() == ["gone"]  # nothing to rebuild from: left as it was
    task.on_assign([RequestEvent(float(t), 1, 1, "new") for t in range(0, 100, 5)])
    assert task.bins.streams() == ["new"]
