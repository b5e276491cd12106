"""Hostile input stays bounded: a flood of distinct stream keys (``model`` values) or a
huge one leaves the service's per-stream state and ``/metrics`` small, a huge invalid
message a small dead letter; ``/metrics`` listens where ``--metrics-host`` says."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from predictor.errors import ConfigError
from predictor.events import MAX_STREAM_KEY_CHARS, RequestEvent
from predictor.models.base import Prediction
from predictor.slot import ModelSlot
from stream.cli import build_parser
from stream.metrics import MAX_EXPORTED_STREAMS, Metrics, serve_metrics
from stream.service import MAX_DEAD_LETTER_RAW_BYTES, ForecastService, ServeConfig
from stream.tasks.load import LoadConfig, LoadForecasting
from stream.transport import MemoryBroker, Record
from tests.stream.test_schemas import schema

KEYS = 50_000
PER_STREAM = (
    "reqcast_forecast_next_request",
    "reqcast_forecast_load",
    "reqcast_actual_load",
    "reqcast_ensemble_weight",
)


class _Const:
    """Forecasts 1.0 for every quantity and horizon, fast."""

    kind = "model"
    confidence = 0.8

    def __init__(self, horizon: int = 1) -> None:
        self.seq_len, self.horizon = 4, horizon

    def predict(self, windows: np.ndarray) -> Prediction:
        p = np.ones((len(windows), self.horizon, 3))  # [n, H, 3]
        return Prediction(p, p * 0.5, p * 2.0)


def _slots(horizon: int) -> dict[str, ModelSlot]:
    out: dict[str, ModelSlot] = {}
    for name in ("a", "b"):
        out[name] = ModelSlot(name)
        out[name].offer(_Const(horizon), 1)
    return out


def _service(broker: MemoryBroker, metrics: Metrics) -> tuple[ForecastService, LoadForecasting]:
    service = ForecastService(
        ServeConfig("in", "out", batch_max=2000),
        broker.source("in", "g"),
        broker.sink(),
        _slots(1),
        metrics,
    )
    load = LoadForecasting(LoadConfig("out", 10.0, (1, 3)), _slots(3), metrics)
    service.add_task(load)
    return service, load


def test_a_flood_of_stream_keys_keeps_state_and_metrics_bounded() -> None:
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    sink = broker.sink()
    # every key twice, in two bins, so each closes a load bin (a thousand keys at a time:
    # least recently seen streams are evicted); long keys, distinct prefixes
    names = [f"{i:06d}-" + "x" * 300 for i in range(KEYS)]
    chunks = [names[i : i + 1000] for i in range(0, KEYS, 1000)]
    events = [RequestEvent(float(t), 10, 5, n) for c in chunks for t in (0, 10) for n in c]
    for ev in events:
        sink.send("in", b"", json.dumps(ev.to_dict()).encode())
    metrics = Metrics(CollectorRegistry())
    service, load = _service(broker, metrics)
    service.run(threading.Event(), max_events=len(events))
    assert service.stats.valid == len(events)

    cap = service.windows.max_streams
    assert len(service.windows) <= cap and len(service._pending) <= cap
    assert len(load.bins.streams()) <= load.bins.max_streams and len(load._pending) <= cap
    assert set(service._pending) <= {n for n in service._pending if n in service.windows}

    text = generate_latest(metrics.registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    streams: dict[str, set[str]] = {}
    for s in samples:
        if s.name in PER_STREAM:
            streams.setdefault(s.name, set()).add(s.labels["stream"])
    assert set(streams) == set(PER_STREAM)
    for name, exported in streams.items():
        assert 0 < len(exported) <= MAX_EXPORTED_STREAMS, name
        assert max(map(len, exported)) <= MAX_STREAM_KEY_CHARS
    # documented bound (docs/operations.md): 36 next-request, 99 load (three models, best and
    # the ensemble), 3 actual and 60 ensemble-weight series per exported stream
    assert len(samples) <= 198 * MAX_EXPORTED_STREAMS + 1_000
    assert len(text) < 4_000_000, f"/metrics is {len(text):,} bytes"
    dropped = {
        s.labels["metric"]: s.value for s in samples if s.name.startswith("reqcast_stream_series")
    }
    assert dropped.keys() == set(PER_STREAM) and min(dropped.values()) > 0


def test_evicted_streams_lose_their_series_and_pending_forecasts() -> None:
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    sink = broker.sink()
    for name in ("old", "new"):
        for t in (0.0, 10.0):  # closes a 10 s load bin
            sink.send("in", b"", json.dumps(RequestEvent(t, 10, 5, name).to_dict()).encode())
    metrics = Metrics(CollectorRegistry())
    service, load = _service(broker, metrics)
    service.windows.max_streams = load.bins.max_streams = 1  # "new" evicts "old"
    service.run(threading.Event(), max_events=4)
    assert "old" not in service._pending and "new" in service._pending
    assert list(load._pending) == ["new"] and load.bins.streams() == ["new"]
    assert metrics.forecast_streams.streams() == ["new"]
    assert metrics.load_streams.streams() == metrics.actual_streams.streams() == ["new"]
    text = generate_latest(metrics.registry).decode()
    assert 'stream="new"' in text and 'stream="old"' not in text


def test_a_huge_model_name_gives_a_short_label() -> None:
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    sink = broker.sink()
    for i in range(10):
        ev = RequestEvent(float(i), 10, 5, f"{i}" + "m" * 100_000)
        sink.send("in", b"", json.dumps(ev.to_dict()).encode())
    metrics = Metrics(CollectorRegistry())
    service, _ = _service(broker, metrics)
    service.run(threading.Event(), max_events=10)
    size = len(generate_latest(metrics.registry))
    assert len(service.windows) == 10  # still ten distinct streams
    assert size < 1_000_000, f"/metrics is {size:,} bytes"
    assert max(len(r.key or b"") for r in broker.records("out")) <= MAX_STREAM_KEY_CHARS


def test_a_huge_invalid_message_gives_a_small_dead_letter() -> None:
    broker = MemoryBroker()
    metrics = Metrics(CollectorRegistry())
    service, _ = _service(broker, metrics)
    # 5 MB of bytes that are not UTF-8: each would become a 6-byte escape in JSON
    value = b'{"timestamp": ' + bytes(range(128, 256)) * (5_000_000 // 128)
    messages, _ = service.process([Record("in", 0, 7, b"k", value)])
    [(topic, key, letter)] = messages
    assert topic == "in.dlq" and key == b"k"
    assert len(letter) <= 6 * MAX_DEAD_LETTER_RAW_BYTES + 2_000
    body = json.loads(letter)
    assert body["raw_bytes"] == len(value) and body["raw_truncated"] is True
    assert body["raw"].startswith('{"timestamp": ') and body["error"] == "invalid_json"
    import jsonschema

    jsonschema.Draft202012Validator(schema("dead_letter")).validate(body)
    # a small one is kept whole
    [(_, _, small)] = service.process([Record("in", 0, 8, None, b"nope")])[0]
    assert json.loads(small)["raw"] == "nope" and json.loads(small)["raw_truncated"] is False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_host_flag_and_its_environment_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    for command in ("serve", "run", "trainer"):
        args = build_parser([command]).parse_args([command])
        assert args.metrics_host == "0.0.0.0", command
        args = build_parser([command]).parse_args([command, "--metrics-host", "127.0.0.1"])
        assert args.metrics_host == "127.0.0.1", command
    monkeypatch.setenv("REQCAST_METRICS_HOST", "::1")
    assert build_parser(["serve"]).parse_args(["serve"]).metrics_host == "::1"


def _answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
            return b"reqcast_broker_up" in r.read()
    except OSError:
        return False


def test_metrics_listen_on_the_given_host_only() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    # 127.0.0.2 is loopback too on Linux: a server on every interface answers there
    everywhere, local = _free_port(), _free_port()
    serve_metrics(everywhere, registry)
    serve_metrics(local, registry, "127.0.0.1")
    assert _answers("127.0.0.1", everywhere) and _answers("127.0.0.2", everywhere)
    assert _answers("127.0.0.1", local) and not _answers("127.0.0.2", local)
    with pytest.raises(ConfigError, match="cannot serve /metrics on no"):
        serve_metrics(_free_port(), registry, "no.such.host.invalid")
