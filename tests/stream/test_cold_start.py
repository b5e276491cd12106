"""No cold start: the serving assembly with an empty model dir, on the in-process transport.

Load forecasts come from the ensemble's untrained experts from the first closed bins; the
refit worker, due as soon as it has enough data while a slot is empty (not after its 600 s
interval), trains first next-request and load versions, and the load networks join the
ensemble.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.artifacts import list_artifacts
from predictor.events import RequestEvent
from stream.app import (
    LoadSettings,
    ServiceSettings,
    WorkerSettings,
    attach_load,
    cold_start_note,
    start_model_workers,
)
from stream.metrics import Metrics
from stream.model_slots import read_slots
from stream.service import ForecastService, ServeConfig
from stream.tasks.load import LoadForecasting
from stream.transport import MemoryBroker
from trainer.refit import RefitConfig, RefitWorker

MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
#: tiny load networks: levels within their 8-bin window
TINY_LOAD = {m: {**p, "level_windows": [2, 4, 8]} for m, p in TINY.items()}
BIN_S = 1.0
HORIZONS = (1, 3)


def _events(n: int, start: float = 0.0, seed: int = 0) -> list[RequestEvent]:
    """About two events per second, tokens at random."""
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.uniform(0.1, 0.9, n))
    return [
        RequestEvent(float(t), int(rng.integers(10, 500)), int(rng.integers(5, 200)), "m")
        for t in ts
    ]


def _send(broker: MemoryBroker, events: list[RequestEvent]) -> None:
    sink = broker.sink()
    for ev in events:
        sink.send("in", b"s", json.dumps(ev.to_dict()).encode())


def _refit(model_dir: Path) -> RefitConfig:
    return RefitConfig(
        model_dir=model_dir,
        models=MODELS,
        every_s=600.0,  # the interval: far beyond this test
        load_every_s=600.0,
        window_events=1000,
        min_events=300,
        seq_len=16,
        epochs=1,
        device="cpu",
        stream_key="none",
        params=TINY,
        load_params=TINY_LOAD,
        load_seq_len=8,
        load_window_bins=400,
    )


def _assemble(
    model_dir: Path, metrics: Metrics
) -> tuple[MemoryBroker, ForecastService, LoadForecasting, LoadSettings]:
    """serve's assembly over an empty model dir (no model topic, no watcher)."""
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    slots = read_slots(model_dir, MODELS, metrics)
    assert all(s.current() is None for s in slots.values())
    service = ForecastService(
        ServeConfig("in", "out", stream_key="none", batch_max=50),
        broker.source("in", "g"),
        broker.sink(),
        slots,
        metrics,
    )
    settings = LoadSettings(str(model_dir), MODELS, bin_s=BIN_S, horizons=HORIZONS)
    load = attach_load(settings, service, metrics)
    assert load is not None
    return broker, service, load, settings


def _column(load: LoadForecasting, name: str) -> np.ndarray:
    """``name``'s ensemble weights ``[3]`` per horizon, stacked ``[H, 3]``."""
    j = load.ensemble.names.index(name)
    weights = load.ensemble.weights("all")
    return np.stack([weights[h][:, j] for h in HORIZONS])


def test_serve_without_models_forecasts_load_and_networks_join_after_the_first_refits(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    metrics = Metrics(CollectorRegistry())
    broker, service, load, settings = _assemble(model_dir, metrics)

    # without a refit worker: next-request slots are all empty, events are still consumed
    first = _events(400)
    _send(broker, first)
    stats = service.run(threading.Event(), max_events=len(first))
    assert stats.events == len(first) and stats.invalid == 0
    out = [json.loads(r.value) for r in broker.records("out")]
    assert not [m for m in out if m["kind"] != "load"]  # no next-request forecast: no model
    loads = [m for m in out if m["kind"] == "load"]
    assert loads and {m["model"] for m in loads} == {"ensemble"}
    assert len(loads) >= int(first[-1].timestamp_s) - 5  # one per closed bin
    prior = 1.0 / len(load.ensemble.names)
    np.testing.assert_allclose(_column(load, "lstm"), prior)  # no network: never weighed

    worker_settings = WorkerSettings(model_dir=str(model_dir), refit=_refit(model_dir))
    workers = start_model_workers(
        worker_settings, service.slots, metrics, service, load=(load, settings)
    )
    try:
        (worker,) = workers
        assert isinstance(worker, RefitWorker)
        assert worker.schedules["next_request"].cold and worker.schedules["load"].cold
        assert worker.config.load_horizon == max(HORIZONS)
        more = _events(400, start=first[-1].timestamp_s, seed=1)
        _send(broker, more)
        service.run(threading.Event(), max_events=len(first) + len(more))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (worker.refits and worker.load_refits):
            time.sleep(0.1)
        # due as soon as there was data, not 600 s later
        assert worker.refits >= 1 and worker.load_refits >= 1
    finally:
        for w in workers:
            w.stop()
    assert {(d.model, d.task, d.reason) for d in worker.decisions} >= {
        (m, t, "no_champion") for m in MODELS for t in ("next_request", "load")
    }
    assert {m: s.version for m, s in service.slots.items()} == {"lstm": 1, "dlinear": 1}
    assert {m: s.version for m, s in load.slots.items()} == {"lstm": 1, "dlinear": 1}
    written = {(a.model, a.task, a.version) for a in list_artifacts(model_dir)}
    assert written == {(m, t, 1) for m in MODELS for t in ("next_request", "load")}
    lstm_load = load.slots["lstm"].current()
    assert lstm_load is not None and lstm_load.meta["load"]["bin_s"] == BIN_S
    assert lstm_load.forecaster.seq_len == 8 and lstm_load.forecaster.horizon == max(HORIZONS)
    assert not worker.schedules["next_request"].cold and not worker.schedules["load"].cold

    # the networks forecast now, and the ensemble weighs them
    n_before = len(broker.records("out"))
    last = _events(100, start=more[-1].timestamp_s + 1.0, seed=2)
    _send(broker, last)
    service.run(threading.Event(), max_events=len(first) + len(more) + len(last))
    new = [json.loads(r.value) for r in broker.records("out")[n_before:]]
    assert {m["model"] for m in new if m["kind"] == "load"} >= {"lstm", "dlinear", "ensemble"}
    assert {m["model"] for m in new if m["kind"] != "load"} >= {"lstm", "dlinear", "best"}
    weights = _column(load, "lstm")
    assert np.isfinite(weights).all() and (weights > 0).all()
    assert not np.allclose(weights, prior)  # weighed by its forecasts since it joined


def _settings(refit: bool, topic: str, load: bool = True) -> ServiceSettings:
    return ServiceSettings(
        ServeConfig("in", "out"),
        LoadSettings("models", MODELS, enabled=load),
        WorkerSettings("models", model_topic=topic, refit=_refit(Path("m")) if refit else None),
    )


@pytest.mark.parametrize(
    ("refit", "topic", "level", "says"),
    [
        (True, "", logging.INFO, "after the first refit, once 300 events"),
        (False, "reqcast-models", logging.INFO, "model topic reqcast-models"),
        (False, "", logging.WARNING, "no network will ever join"),
    ],
)
def test_cold_start_note_is_one_line(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    refit: bool,
    topic: str,
    level: int,
    says: str,
) -> None:
    metrics = Metrics(CollectorRegistry())
    _, _, load, _ = _assemble(tmp_path, metrics)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="stream.app"):
        cold_start_note(_settings(refit, topic), str(tmp_path), load)
    (record,) = caplog.records
    assert record.levelno == level and says in record.getMessage()
    assert "ensemble's untrained experts" in record.getMessage()
