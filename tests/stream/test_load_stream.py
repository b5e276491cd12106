"""Load forecasts in the serving loop, on the in-process transport."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from predictor.features import Scaler
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.service import ForecastService, ServeConfig
from stream.tasks.load import LoadConfig, LoadForecasting
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
    service, load = with_load(broker, metrics, bin_s)
    service.run(threading.Event(), max_events=len(events))
    return broker, load, metrics


def next_request_service(
    broker: MemoryBroker, metrics: Metrics, history: Any = None
) -> ForecastService:
    """A service over topic ``in`` with next-request forecasts only."""
    return ForecastService(
        ServeConfig("in", "out", stream_key="none", batch_max=50),
        broker.source("in", "g"),
        broker.sink(),
        slots(1),
        metrics,
        history=history,
    )


def with_load(
    broker: MemoryBroker, metrics: Metrics, bin_s: float, history: Any = None
) -> tuple[ForecastService, LoadForecasting]:
    """A service over topic ``in`` with next-request and load forecasts, wired as serve does."""
    service = next_request_service(broker, metrics, history)
    load = LoadForecasting(LoadConfig("out", bin_s, (1, 3), "none"), slots(3), metrics)
    service.add_task(load)
    return service, load


def test_every_closed_bin_gets_a_load_forecast_per_model_best_and_ensemble() -> None:
    # one event per second for 200 s, then a 35 s silence, then one more event
    events = [RequestEvent(float(t), 100, 10) for t in range(200)] + [RequestEvent(235.0, 100, 10)]
    broker, load, metrics = run_service(events)
    msgs = [json.loads(r.value) for r in broker.records("out")]
    loads = [m for m in msgs if m["kind"] == "load"]
    # bins 0..19 close as the next bin opens; the last event closes bin 19 and the empty 20..22
    closing_events = 20
    assert len(loads) == closing_events * 4
    assert {m["model"] for m in loads} == {"lstm", "dlinear", "best", "ensemble"}
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
    # 10 origins per model and the ensemble; at horizon 3 the last two have no outcome yet
    assert load.prime(bins=10) == 3 * (10 + (10 - 2))


def test_assignment_rebuilds_load_bins_from_the_partitions_history() -> None:
    """On assignment the service reads the partitions' history; the load bins are rebuilt
    from it and the calibration primed, so the first load forecast after a (re)start is
    warm and calibrated. Without history the bins are left as they are."""
    from stream.transport import Record

    rng = np.random.default_rng(1)
    past = [
        RequestEvent(float(t), int(rng.integers(1, 500)), int(rng.integers(1, 200)))
        for t in np.sort(rng.uniform(0, 300, 900))
    ]
    # the stream spans two partitions (as with --stream-key none), read one after the other
    records = [
        Record("in", i % 2, i // 2, b"s", json.dumps(ev.to_dict()).encode())
        for i, ev in enumerate(past)
    ]
    records.sort(key=lambda r: r.partition)
    records.insert(5, Record("in", 0, 999, b"s", b"{not json"))  # skipped, like live input
    asked: list[list[int]] = []

    def history(partitions: list[int]) -> list[Record]:
        asked.append(partitions)
        return records if len(asked) == 1 else []

    broker = MemoryBroker()
    broker.create_topic("in", 1)
    service, load = with_load(broker, Metrics(CollectorRegistry()), 10.0, history)
    stale = RequestEvent(5_000.0, 1, 1, "gone")  # a stream of partitions no longer owned
    load.warm([stale, RequestEvent(5_020.0, 1, 1, "gone")])

    service.on_assign([0])
    assert asked == [[0]]
    assert load.bins.streams() == ["all"]  # rebuilt: the stale stream is gone
    bins = load.bins.history("all")
    assert len(bins) == 29  # bins 0..28 closed, 29 still open
    closed = sum(ev.timestamp_s < 290 for ev in past)
    assert bins[:, 0].sum() * 10.0 == pytest.approx(closed)  # every event in its own bin
    assert bins[:, 0].max() < 3 * bins[:, 0].mean()  # no bin collects another's events
    for model in ("lstm", "dlinear"):
        for h in (1, 3):
            assert load.conformal.count((model, "requests_per_s", h)) >= load.conformal.min_count
    assert len(service.windows) == 1 and load.published == 0

    service.on_assign([0])  # a partition without history: nothing to rebuild from
    assert asked == [[0], [0]]
    assert len(load.bins.history("all")) == 29

    sink = broker.sink()
    for t in (301.0, 312.0):  # closes bin 29 (and 30 opens)
        sink.send("in", b"s", json.dumps(RequestEvent(t, 10, 5).to_dict()).encode())
    service.run(threading.Event(), max_events=2)
    loads = [json.loads(r.value) for r in broker.records("out")]
    loads = [m for m in loads if m["kind"] == "load"]
    assert {m["model"] for m in loads} == {"lstm", "dlinear", "best", "ensemble"}
    assert all(m["warm"] for m in loads)  # 29 bins of history fill the 8-bin windows


def test_a_running_service_swaps_in_newer_load_models_from_the_model_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's load watcher: a newer load artifact for this --bin-s replaces the serving one
    (and the next forecasts name its version); a next-request artifact, one for other bins
    and one whose window the service does not keep are left out, each rejected once."""
    import logging

    from predictor.artifacts import save_artifact
    from stream.app import LoadSettings, attach_load, load_watcher

    def save(fc: NeuralForecaster, version: int, task: str = "load", bin_s: float = 10.0) -> None:
        save_artifact(
            fc, tmp_path, preset="t", task=task, version=version, extra={"load": {"bin_s": bin_s}}
        )

    for arch in ("lstm", "dlinear"):
        save(tiny(arch, 3), 1)
    args = LoadSettings(
        model_dir=str(tmp_path),
        models=("lstm", "dlinear"),
        bin_s=10.0,
        horizons=(1, 3),
        watch_s=60.0,
    )
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    metrics = Metrics(CollectorRegistry())
    service = next_request_service(broker, metrics)
    load = attach_load(args, service, metrics)
    assert load is not None and load.slots["lstm"].version == 1
    watcher = load_watcher(args, load, metrics)
    assert watcher.check() == 0  # nothing newer

    save(tiny("lstm", 3), 2, task="next_request")  # another task: not a load model
    save(tiny("dlinear", 3), 3, bin_s=60.0)  # other bins
    long_spec = NeuralSpec("lstm", load.bins.capacity + 1, horizon=3, params={"hidden_size": 4})
    scaler = Scaler((0.5, 3.0, 3.0), (1.0, 1.0, 1.0))
    long_window = NeuralForecaster(long_spec, build_module(long_spec), scaler)
    save(long_window, 4)
    with caplog.at_level(logging.ERROR, logger="stream.model_sync"):
        assert watcher.check() == 0
        assert watcher.check() == 0  # rejected once, not on every poll
    errors = [r.getMessage() for r in caplog.records if r.name == "stream.model_sync"]
    assert len(errors) == 2
    assert any("not 10.0s" in e for e in errors) and any("the service keeps" in e for e in errors)
    assert load.slots["lstm"].version == 1 and load.slots["dlinear"].version == 1

    save(tiny("lstm", 3), 5)
    assert watcher.check() == 1
    assert load.slots["lstm"].version == 5 and load.slots["dlinear"].version == 1
    sink = broker.sink()
    for i in range(40):
        sink.send(
            "in", b"s", json.dumps(RequestEvent(1000.0 + 2.0 * i, 10, 5, "m").to_dict()).encode()
        )
    service.run(threading.Event(), max_events=40)
    forecasts = [json.loads(r.value) for r in broker.records("out")]
    lstm_load = [f for f in forecasts if f["kind"] == "load" and f["model"] == "lstm"]
    assert lstm_load and {f["model_version"] for f in lstm_load} == {5}
