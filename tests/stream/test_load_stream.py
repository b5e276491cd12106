"""Load forecasts in the serving loop, on the in-process transport."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from predictor.features import Scaler
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module
from predictor.slot import ModelSlot
from stream.load_stream import LoadConfig, LoadForecasting
from stream.metrics import Metrics
from stream.service import ForecastService, ServeConfig
from stream.transport import MemoryBroker

SCHEMA = Path(__file__).resolve().parents[2] / "stream" / "schemas" / "forecast.schema.json"


def tiny(arch: str, horizon: int) -> NeuralForecaster:
    spec = NeuralSpec(
        arch,
        seq_len=8,
        horizon=horizon,
        params={"hidden_size": 4, "num_layers": 1, "kernel_size": 3},
    )
    return NeuralForecaster(
        spec, build_module(spec), Scaler((0.5, 3.0, 3.0), (1.0, 1.0, 1.0)), confidence=0.8
    )


def slots(horizon: int, kinds: tuple[str, ...] = ("lstm", "dlinear")) -> dict[str, ModelSlot]:
    out = {}
    for arch in kinds:
        slot: ModelSlot = ModelSlot(arch)
        slot.offer(tiny(arch, horizon), 1)
        out[arch] = slot
    return out


def run_service(
    events: list[RequestEvent], bin_s: float = 10.0
) -> tuple[MemoryBroker, LoadForecasting, Metrics]:
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    sink = broker.sink()
    for ev in events:
        sink.send("in", b"s", json.dumps(ev.to_dict()).encode())
    metrics = Metrics(CollectorRegistry())
    service = ForecastService(
        ServeConfig("in", "out", stream_key="none", batch_max=50),
        broker.source("in", "g"),
        broker.sink(),
        slots(1),
        metrics,
    )
    load = LoadForecasting(LoadConfig("out", bin_s, (1, 3), "none"), slots(3), metrics)
    service.producers.append(load.process)
    service.exporters.append(load.export_scores)
    service.run(threading.Event(), max_events=len(events))
    return broker, load, metrics


def test_every_closed_bin_gets_a_load_forecast_per_model_and_best() -> None:
    # one event per second for 200 s, then a 35 s silence, then one more event
    events = [RequestEvent(float(t), 100, 10) for t in range(200)] + [RequestEvent(235.0, 100, 10)]
    broker, load, metrics = run_service(events)
    msgs = [json.loads(r.value) for r in broker.records("out")]
    loads = [m for m in msgs if m["kind"] == "load"]
    # bins 0..19 close as the next bin opens; the last event closes bin 19 and the empty 20..22
    closing_events = 20
    assert len(loads) == closing_events * 3
    assert {m["model"] for m in loads} == {"lstm", "dlinear", "best"}
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for m in loads:
        validator.validate(m)
        assert [h["horizon_bins"] for h in m["horizons"]] == [1, 3]
        for h in m["horizons"]:
            lo, hi = h["interval"]["requests_per_s"]
            assert lo <= h["requests_per_s"] <= hi
    # the empty bins closed as zeros: the realised load of the last closed bin is 0
    assert (
        metrics.registry.get_sample_value(
            "reqcast_actual_load", {"stream": "all", "quantity": "requests_per_s"}
        )
        == 0.0
    )
    # matured forecasts were scored and exported
    assert load.scores.count("lstm", "requests_per_s@1") >= 15
    mae = metrics.registry.get_sample_value(
        "reqcast_online_mae",
        {"model": "lstm", "kind": "load", "quantity": "requests_per_s", "horizon_bins": "1"},
    )
    assert mae is not None and mae >= 0


def test_forecasts_use_only_bins_closed_before_them() -> None:
    # a batch holds many bins: each forecast must see the history as of its own bin
    events = [RequestEvent(float(t), 100, 10) for t in range(0, 300, 2)]
    broker, _, _ = run_service(events)
    loads = [json.loads(r.value) for r in broker.records("out") if b'"load"' in r.value]
    lstm = [m for m in loads if m["model"] == "lstm"]
    starts = [m["last_closed_bin_start"] for m in lstm]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(m["horizons"][0]["bin_start"] == m["last_closed_bin_start"] + 10.0 for m in lstm)


def test_bins_count_rates_per_second() -> None:
    from predictor.load import LoadBins

    bins = LoadBins(bin_s=10.0)
    for t in (0.0, 1.0, 2.0):
        assert bins.add("a", t, 30, 5) == []
    closed = bins.add("a", 31.0, 1, 1)
    assert [k for k, _ in closed] == [0, 1, 2]
    np.testing.assert_allclose(closed[0][1], [0.3, 9.0, 1.5])
    np.testing.assert_allclose(closed[1][1], [0.0, 0.0, 0.0])


def test_warm_history_primes_the_calibration_without_publishing() -> None:
    """After warming from history, every model, quantity and horizon already has scored
    outcomes (so the first published interval is calibrated), and nothing was published
    or counted as online error."""
    load = LoadForecasting(
        LoadConfig("out", 1.0, (1, 3), "none"), slots(3), Metrics(CollectorRegistry())
    )
    rng = np.random.default_rng(0)
    history = [
        RequestEvent(float(t), int(rng.integers(1, 500)), int(rng.integers(1, 200)), "m")
        for t in np.sort(rng.uniform(0, 120, 400))
    ]
    load.warm(history)
    assert load.published == 0 and not load.scores.tracked()
    closed = len(load.bins.history("all"))
    assert closed >= 100
    for model in ("lstm", "dlinear"):
        for q in ("requests_per_s", "request_tokens_per_s", "response_tokens_per_s"):
            for h in (1, 3):
                assert load.conformal.count((model, q, h)) >= load.conformal.min_count
    # 10 origins per model; at horizon 3 the last two have no outcome yet
    assert load.prime(bins=10) == 2 * (10 + (10 - 2))
