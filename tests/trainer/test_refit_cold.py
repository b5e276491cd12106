"""First versions: while a slot has no model, its task's refit is due as soon as there is
enough data (not at the interval), never sooner than the minimum gap; an empty load slot
gets a first load model of the configured window and horizon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from predictor.artifacts import list_artifacts
from predictor.events import RequestEvent
from predictor.models.base import Forecaster
from predictor.slot import ModelSlot
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.metrics import Metrics
from trainer.guard import Decision
from trainer.refit import RefitConfig, RefitWorker, load_bins_needed
from trainer.schedule import Schedule
from trainer.train import params_for_load

MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
TINY_LOAD = {m: {**p, "level_windows": [2, 4, 8]} for m, p in TINY.items()}


def _events(n: int, seed: int = 0) -> list[RequestEvent]:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.uniform(0.1, 0.9, n))
    return [
        RequestEvent(float(t), int(rng.integers(10, 500)), int(rng.integers(5, 200)), "m")
        for t in ts
    ]


def _config(model_dir: Path, **kw: Any) -> RefitConfig:
    base: dict[str, Any] = {
        "model_dir": model_dir,
        "models": MODELS,
        "every_s": 600.0,
        "load_every_s": 600.0,
        "window_events": 1000,
        "min_events": 300,
        "seq_len": 16,
        "epochs": 1,
        "device": "cpu",
        "stream_key": "none",
        "params": TINY,
        "load_params": TINY_LOAD,
        "load_bin_s": 1.0,
        "load_seq_len": 8,
        "load_horizon": 3,
        "load_window_bins": 400,
    }
    return RefitConfig(**{**base, **kw})


def _slots() -> dict[str, ModelSlot[Forecaster]]:
    return {m: ModelSlot(m) for m in MODELS}


def test_a_cold_schedule_fires_once_there_is_data_never_within_the_minimum_gap() -> None:
    s = Schedule(every_s=600.0, now=0.0)
    assert not s.cold_ready()  # warm: enough data changes nothing
    assert s.next_due(5.0) == 600.0
    s.cold = True
    assert s.next_due(5.0) == 600.0  # cold, but no data yet: the interval
    assert s.cold_ready() and not s.cold_ready()  # due once, however often data says so
    assert s.next_due(5.0) == 5.0
    s.started(5.0)
    s.finished(35.0)  # a first refit that took 30 s and left the slot empty (rejected)
    assert s.next_due(36.0) == 605.0
    assert s.cold_ready()
    assert s.next_due(36.0) == 65.0  # due at once, but not within 30 s of the last end
    assert s.next_due(70.0) == 70.0
    off = Schedule(now=0.0)  # nothing asks for refits: cold does not either
    off.cold = True
    assert not off.active


def test_a_cold_request_made_while_the_first_round_ran_is_dropped_once_warm() -> None:
    s = Schedule(every_s=600.0, now=0.0)
    s.cold = True
    assert s.cold_ready()
    s.started(5.0)
    assert s.cold_ready()  # data arrives while the first round runs: due again
    s.finished(6.0)
    s.set_cold(False)  # that round filled every slot: no second round at once
    assert not s.requested and s.next_due(7.0) == 600.0 + 5.0
    s.cold = True
    assert s.cold_ready()
    s.set_cold(True)  # a slot is still empty: the request stands
    assert s.requested and s.reason() == "cold"
    s.request("drift")  # a drift request over it labels the round
    s.set_cold(False)
    assert s.requested and s.reason() == "drift"


def test_worker_with_empty_slots_refits_as_soon_as_it_has_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both tasks every 600 s; with empty slots each refits as soon as its data suffices
    (the next-request one at ``min_events``, the load one at the bins a first load model
    needs), and no sooner."""
    started: dict[str, list[float]] = {NEXT_REQUEST: [], LOAD: []}

    def fake(task: str) -> Any:
        def refit(self: RefitWorker) -> list[Decision]:
            schedule = self.schedules[task]
            schedule.started()
            started[task].append(time.monotonic())
            schedule.finished()
            return []

        return refit

    monkeypatch.setattr(RefitWorker, "refit_once", fake(NEXT_REQUEST))
    monkeypatch.setattr(RefitWorker, "refit_load_once", fake(LOAD))
    worker = RefitWorker(
        _config(tmp_path), _slots(), Metrics(CollectorRegistry()), load_slots=_slots()
    )
    assert worker.schedules[NEXT_REQUEST].cold and worker.schedules[LOAD].cold
    need = load_bins_needed(8, 3, worker.config.holdout_fraction)
    evs = _events(400)
    worker.start()
    try:
        worker.observe(evs[:30])  # under min_events and the bins needed
        time.sleep(0.3)
        assert started == {NEXT_REQUEST: [], LOAD: []}
        worker.observe(evs[30:300])  # 300 events, about 150 one-second bins
        assert worker.bins is not None and worker.bins.bins() >= need
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(started.values()):
            time.sleep(0.02)
        assert len(started[NEXT_REQUEST]) == 1 and len(started[LOAD]) == 1
    finally:
        worker.stop()


def test_warm_slots_wait_for_the_interval(tmp_path: Path) -> None:
    """A worker whose slots all serve is not cold: data alone makes no refit due."""

    def served() -> dict[str, ModelSlot[Forecaster]]:
        slots = _slots()
        for slot in slots.values():
            slot.offer(cast(Forecaster, object()), 1)
        return slots

    worker = RefitWorker(
        _config(tmp_path), served(), Metrics(CollectorRegistry()), load_slots=served()
    )
    assert not worker.schedules[NEXT_REQUEST].cold and not worker.schedules[LOAD].cold
    worker.observe(_events(400))
    now = time.monotonic()
    for task in (NEXT_REQUEST, LOAD):
        due = worker.schedules[task].next_due(now)
        assert due is not None and due > now + 500


def test_refit_load_once_trains_first_load_models(tmp_path: Path) -> None:
    metrics = Metrics(CollectorRegistry())
    load_slots = _slots()
    worker = RefitWorker(_config(tmp_path), _slots(), metrics, load_slots=load_slots)
    evs = _events(400)
    worker.observe(evs[:30])  # too few bins: waits, the schedule stays cold
    assert worker.refit_load_once() == []
    assert worker.schedules[LOAD].cold and worker.load_refits == 0
    worker.observe(evs[30:])
    decisions = worker.refit_load_once()
    assert [(d.model, d.accepted, d.reason, d.task) for d in decisions] == [
        (m, True, "no_champion", LOAD) for m in MODELS
    ]
    assert not worker.schedules[LOAD].cold
    for m in MODELS:
        cur = load_slots[m].current()
        assert cur is not None and load_slots[m].version == 1
        fc = cur.forecaster
        assert (fc.seq_len, fc.horizon) == (8, 3)
        assert cur.meta["load"]["bin_s"] == 1.0 and cur.meta["task"] == LOAD
        spec = getattr(fc, "spec", None)
        assert spec is not None
        assert {k: spec.params[k] for k in params_for_load(m)} == {
            **params_for_load(m),
            "level_windows": [2, 4, 8],
        }
    assert sorted((a.model, a.task, a.version) for a in list_artifacts(tmp_path)) == [
        ("dlinear", LOAD, 1),
        ("lstm", LOAD, 1),
    ]
    gauge = metrics.registry.get_sample_value(
        "reqcast_model_version", {"model": "lstm", "task": LOAD}
    )
    assert gauge == 1.0
