"""Drift-triggered refits in serve's assembly, on the in-process transport: a sudden level
shift in the events pushes the serving models' online error far above their held-out error,
and a refit of each task is requested from the refit worker and started for that reason."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from stream.app import LoadSettings, WorkerSettings, attach_load, start_model_workers
from stream.metrics import Metrics
from stream.model_slots import read_slots
from stream.service import ForecastService, ServeConfig
from stream.transport import MemoryBroker
from trainer.refit import RefitConfig, RefitWorker

MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
TINY_LOAD = {m: {**p, "level_windows": [2, 8, 32]} for m, p in TINY.items()}


def _events(n: int, start: float, seed: int, level: int = 1) -> list[RequestEvent]:
    """About two events per second; tokens ``level`` times those of the first regime."""
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.uniform(0.1, 0.9, n))
    return [
        RequestEvent(
            float(t), level * int(rng.integers(10, 500)), level * int(rng.integers(5, 200)), "m"
        )
        for t in ts
    ]


def _refits(metrics: Metrics, task: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "reqcast_refit_requests_total", {"task": task, "reason": reason}
    )
    return value or 0.0


def test_a_level_shift_requests_a_drift_refit_of_both_tasks(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    slots = read_slots(tmp_path, MODELS, metrics)
    service = ForecastService(
        ServeConfig("in", "out", stream_key="none", batch_max=50),
        broker.source("in", "g"),
        broker.sink(),
        slots,
        metrics,
    )
    settings = LoadSettings(str(tmp_path), MODELS, bin_s=1.0, horizons=(1, 3))
    load = attach_load(settings, service, metrics)
    assert load is not None
    refit = RefitConfig(
        model_dir=tmp_path,
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
        # a first load version waits for 109 bins: 10 held out, enough for a reference
        load_seq_len=72,
        load_window_bins=400,
    )
    workers = WorkerSettings(str(tmp_path), refit=refit, drift_factor=3.0, drift_min_events=100)
    (worker,) = start_model_workers(workers, slots, metrics, service, load=(load, settings))
    assert isinstance(worker, RefitWorker)
    sent = 0

    def serve(events: list[RequestEvent]) -> None:
        nonlocal sent
        sink = broker.sink()
        for ev in events:
            sink.send("in", b"s", json.dumps(ev.to_dict()).encode())
        sent += len(events)
        service.run(threading.Event(), max_events=sent)

    def wait(until: object, what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not until():  # type: ignore[operator]
            time.sleep(0.05)
        assert until(), what  # type: ignore[operator]

    try:
        # first versions (a cold start), their held-out error kept with them
        first = _events(700, 0.0, seed=0)
        serve(first)
        every = [*slots.values(), *load.slots.values()]
        wait(lambda: all(s.current() is not None for s in every), "first versions")
        for s in every:
            cur = s.current()
            assert cur is not None and len(cur.meta["guard"]["challenger_mae"]) == 3
        nr, ld = service.next_request.drift, load.drift
        assert nr is not None and ld is not None
        # the same regime: the online error stays near the held-out error, nothing requested
        same = _events(250, first[-1].timestamp_s, seed=1)
        serve(same)
        assert nr.detected == [] and ld.detected == []
        assert _refits(metrics, "next_request", "drift") == 0
        # a level shift: tokens 50 times what the models know
        shifted = _events(250, same[-1].timestamp_s, seed=2, level=50)
        serve(shifted)
        assert nr.detected and ld.detected
        assert {d.model for d in nr.detected} <= set(MODELS)
        assert nr.detected[0].online_mae > 3.0 * nr.detected[0].reference_mae
        # the requests reached the worker: a round of each task started for drift
        wait(
            lambda: (
                _refits(metrics, "next_request", "drift") >= 1
                and _refits(metrics, "load", "drift") >= 1
            ),
            "drift refits",
        )
        assert _refits(metrics, "next_request", "cold") >= 1  # the first versions'
        # once at most until that refit has run: then re-armed
        wait(lambda: nr.policy._rearm or nr.policy.armed, "re-armed")
    finally:
        worker.stop()


def test_a_zero_drift_factor_attaches_no_check(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    slots = read_slots(tmp_path, MODELS, metrics)
    service = ForecastService(
        ServeConfig("in", "out"), broker.source("in", "g"), broker.sink(), slots, metrics
    )
    refit = replace(RefitConfig(model_dir=tmp_path, models=MODELS), every_s=None)
    workers = WorkerSettings(str(tmp_path), refit=refit, drift_factor=0.0)
    (worker,) = start_model_workers(workers, slots, metrics, service)
    try:
        assert service.next_request.drift is None and worker.after_round == []
    finally:
        worker.stop()


def test_a_negative_drift_factor_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    assert main(["serve", "--drift-factor", "-1", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "--drift-factor must be 0 (off) or more" in capsys.readouterr().err
