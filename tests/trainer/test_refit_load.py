"""Load models in the periodic refit: the bins the worker keeps, load refits on them
(accepted, rejected, counted, written and published as ``task="load"`` versions), their
route through the model topic, and the refit schedule in time."""

from __future__ import annotations

import copy
import itertools
import math
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from predictor.artifacts import ArtifactInfo, list_artifacts, save_artifact
from predictor.events import RequestEvent
from predictor.load import bin_load
from predictor.models.base import Forecaster
from predictor.models.neural import NeuralForecaster
from predictor.slot import ModelSlot
from predictor.synth import synthesize
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.metrics import Metrics
from stream.model_slots import read_slots
from stream.model_sync import encode_artifact, install_message
from trainer import refit as refit_mod
from trainer.guard import Decision
from trainer.recent import RecentBins
from trainer.refit import RefitConfig, RefitWorker, load_bins_needed
from trainer.schedule import Schedule
from trainer.train import TrainConfig, train_forecaster

MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
BIN_S = 1.0
SEQ_LEN, HORIZON = 8, 3


def _events(rows: int, seed: int) -> list[RequestEvent]:
    df = synthesize(rows, seed=seed)
    cols = (df["Timestamp"], df["Request tokens"], df["Response tokens"], df["Model"])
    return [
        RequestEvent(float(t), int(rq), int(rs), str(m)) for t, rq, rs, m in zip(*cols, strict=True)
    ]


@cache
def _load_champions(root: str) -> Path:
    """Tiny load models (1 s bins, 3 bins ahead), version 1 each, trained once."""
    model_dir = Path(root) / "load-champions"
    evs = _events(400, seed=31)
    _, series = bin_load(
        np.array([e.timestamp_s for e in evs]),
        np.array([e.request_tokens for e in evs]),
        np.array([e.response_tokens for e in evs]),
        BIN_S,
    )
    for model in MODELS:
        cfg = TrainConfig.for_model(
            model,
            task=LOAD,
            seq_len=SEQ_LEN,
            horizon=HORIZON,
            epochs=1,
            device="cpu",
            params={**TINY[model], "level_windows": [2, 4, 8]},  # within seq_len 8
        )
        result = train_forecaster([series[:300]], cfg, progress=False)
        save_artifact(
            result.forecaster,
            model_dir,
            preset="test",
            task=LOAD,
            version=1,
            extra={"load": {"bin_s": BIN_S, "horizon_bins": HORIZON}},
        )
    return model_dir


@pytest.fixture
def model_dir(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    root = tmp_path_factory.getbasetemp() / "refit-load-shared"
    root.mkdir(exist_ok=True)
    dest = tmp_path / "models"
    shutil.copytree(_load_champions(str(root)), dest)
    return dest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(model_dir: Path, **kw: Any) -> RefitConfig:
    base: dict[str, Any] = {
        "model_dir": model_dir,
        "models": MODELS,
        "every_events": None,
        "every_s": None,
        "load_every_s": None,
        "load_bin_s": BIN_S,
        "load_window_bins": 400,
        "min_events": 300,
        "epochs": 1,
        "device": "cpu",
        "tolerance": 1e9,  # the guard's comparison is tested in test_refit.py
    }
    return RefitConfig(**{**base, **kw})


def _swaps(metrics: Metrics, model: str, result: str, reason: str) -> float:
    labels = {"model": model, "result": result, "reason": reason}
    return metrics.registry.get_sample_value("reqcast_model_swaps_total", labels) or 0.0


def _version(metrics: Metrics, model: str, task: str) -> float | None:
    labels = {"model": model, "task": task}
    return metrics.registry.get_sample_value("reqcast_model_version", labels)


# -- the bins ---------------------------------------------------------------------------------
def test_recent_bins_match_offline_binning_and_stay_bounded() -> None:
    evs = sorted(_events(600, seed=32), key=lambda e: e.timestamp_s)  # late ones: below
    bins = RecentBins(bin_s=5.0, capacity=10_000)
    bins.add(evs[:250])
    bins.add(evs[250:])
    snap = bins.snapshot()
    for stream in {e.model for e in evs}:
        mine = [e for e in evs if e.model == stream]
        _, offline = bin_load(
            np.array([e.timestamp_s for e in mine]),
            np.array([e.request_tokens for e in mine]),
            np.array([e.response_tokens for e in mine]),
            5.0,
        )
        # every bin but the open last one has closed, empty ones as zeros
        np.testing.assert_allclose(snap[stream], offline[:-1])
    small = RecentBins(bin_s=5.0, capacity=7)
    small.add(evs)
    assert all(len(s) == 7 for s in small.snapshot().values())
    np.testing.assert_allclose(small.snapshot()["ChatGPT"], snap["ChatGPT"][-7:])


def test_recent_bins_count_late_events_in_the_open_bin() -> None:
    bins = RecentBins(bin_s=10.0, capacity=100, stream_key="none")
    bins.add([RequestEvent(t, 10, 20, "m") for t in (1.0, 12.0, 5.0, 35.0)])  # 5.0 is late
    np.testing.assert_allclose(
        bins.snapshot()["all"], [[0.1, 1.0, 2.0], [0.2, 2.0, 4.0], [0.0, 0.0, 0.0]]
    )


# -- load refits --------------------------------------------------------------------------------
def test_load_refit_is_accepted_written_swapped_and_published(
    model_dir: Path, metrics: Metrics
) -> None:
    load_slots = read_slots(model_dir, MODELS, metrics, task=LOAD)
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    assert {m: s.version for m, s in load_slots.items()} == {"lstm": 1, "dlinear": 1}
    published: list[ArtifactInfo] = []
    worker = RefitWorker(
        _config(model_dir), slots, metrics, publish=published.append, load_slots=load_slots
    )
    worker.observe([RequestEvent(float(t), 10, 10, "ChatGPT") for t in range(10)])  # 9 bins
    assert worker.refit_load_once() == []  # too few bins yet: no round, nothing counted
    assert worker.load_refits == 0
    worker.observe(_events(800, seed=33))
    before = {m: load_slots[m].current() for m in MODELS}
    decisions = worker.refit_load_once()
    assert [(d.model, d.task, d.accepted) for d in decisions] == [
        ("lstm", LOAD, True),
        ("dlinear", LOAD, True),
    ], decisions
    assert worker.load_refits == 1 and worker.refits == 0
    for m in MODELS:
        cur = load_slots[m].current()
        assert cur is not None and cur is not before[m] and cur.version == 2
        assert cur.meta["task"] == LOAD and cur.meta["preset"] == "refit"
        assert cur.meta["load"] == {"bin_s": BIN_S, "horizon_bins": HORIZON}
        assert cur.forecaster.seq_len == SEQ_LEN and cur.forecaster.horizon == HORIZON
        assert [a.version for a in list_artifacts(model_dir, m, task=LOAD)] == [1, 2]
        assert list_artifacts(model_dir, m, task=NEXT_REQUEST) == []  # the other task's alone
        assert slots[m].current() is None
        assert _version(metrics, m, LOAD) == 2
        assert _swaps(metrics, m, "accepted", "no_worse") == 1
    assert [(i.model, i.version, i.meta["task"]) for i in published] == [
        ("lstm", 2, LOAD),
        ("dlinear", 2, LOAD),
    ]
    assert "load lstm: accepted (no_worse)" in decisions[0].describe()


def test_load_refit_nan_challenger_is_rejected_and_counted(
    model_dir: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = refit_mod.train_forecaster

    def nan_weights(series: Any, cfg: TrainConfig, progress: bool = True) -> Any:
        result = real(series, cfg, progress=progress)
        with torch.no_grad():
            next(iter(result.forecaster.module.parameters())).fill_(math.nan)
        return result

    monkeypatch.setattr(refit_mod, "train_forecaster", nan_weights)
    load_slots = read_slots(model_dir, MODELS, metrics, task=LOAD)
    champion = load_slots["dlinear"].current()
    published: list[ArtifactInfo] = []
    worker = RefitWorker(
        _config(model_dir, tolerance=0.0),
        {},
        metrics,
        publish=published.append,
        load_slots=load_slots,
    )
    worker.observe(_events(800, seed=34))
    decisions = worker.refit_load_once()
    assert decisions == [
        Decision("lstm", False, "non_finite_weights", task=LOAD),
        Decision("dlinear", False, "non_finite_weights", task=LOAD),
    ]
    assert load_slots["dlinear"].current() is champion
    assert [a.version for a in list_artifacts(model_dir, "dlinear", task=LOAD)] == [1]
    assert published == []
    assert _swaps(metrics, "dlinear", "rejected", "non_finite_weights") == 1
    assert _version(metrics, "dlinear", LOAD) == 1
    # a shape the serving model does not have is rejected through the same guard
    assert champion is not None
    odd = copy.deepcopy(champion.forecaster)
    assert isinstance(odd, NeuralForecaster)
    odd.horizon = HORIZON + 1  # type: ignore[misc]
    series = list(worker.bins.snapshot().values()) if worker.bins else []
    d = worker.consider("dlinear", odd, series, [5] * len(series), task=LOAD)
    assert (d.accepted, d.reason, d.task) == (False, "shape_mismatch", LOAD)
    assert _swaps(metrics, "dlinear", "rejected", "shape_mismatch") == 1


def test_load_bins_needed_trains() -> None:
    """A stream of exactly ``load_bins_needed`` bins is enough to train on."""
    need = load_bins_needed(SEQ_LEN, HORIZON, 0.1)
    series = np.random.default_rng(0).gamma(2.0, 1.0, size=(need, 3))
    train = series[: -max(1, int(need * 0.1))]
    cfg = TrainConfig.for_model(
        "dlinear", task=LOAD, seq_len=SEQ_LEN, horizon=HORIZON, epochs=1, device="cpu"
    )
    assert train_forecaster([train], cfg, progress=False).n_val >= 2


# -- the model topic routes by task ----------------------------------------------------------------
def test_model_topic_messages_route_load_models_to_load_slots(
    model_dir: Path, metrics: Metrics
) -> None:
    load_slots = read_slots(model_dir, MODELS, metrics, task=LOAD)
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    info = list_artifacts(model_dir, "lstm", task=LOAD)[-1]
    fc = load_slots["lstm"].current()
    assert fc is not None
    v2 = save_artifact(
        fc.forecaster,  # type: ignore[arg-type]
        model_dir / "out",
        preset="refit",
        task=LOAD,
        version=2,
        extra={"load": {"bin_s": BIN_S, "horizon_bins": HORIZON}},
    )
    # an instance without load forecasts ignores it, and it never lands in a next-request slot
    assert not install_message(encode_artifact(v2), slots, metrics)
    assert all(s.current() is None for s in slots.values())

    def compatible(meta: dict[str, Any], fc: Forecaster) -> str | None:
        return None if meta["load"]["bin_s"] == BIN_S else "other bins"

    assert install_message(encode_artifact(v2), slots, metrics, "cpu", load_slots, compatible)
    assert load_slots["lstm"].version == 2 and slots["lstm"].current() is None
    assert _version(metrics, "lstm", LOAD) == 2
    assert _swaps(metrics, "lstm", "accepted", "model_topic") == 1
    # replayed or older: ignored; for other bins: rejected as incompatible, counted
    assert not install_message(encode_artifact(info), slots, metrics, "cpu", load_slots)
    v3 = save_artifact(
        fc.forecaster,  # type: ignore[arg-type]
        model_dir / "out",
        preset="refit",
        task=LOAD,
        version=3,
        extra={"load": {"bin_s": 60.0, "horizon_bins": HORIZON}},
    )
    assert not install_message(encode_artifact(v3), slots, metrics, "cpu", load_slots, compatible)
    assert load_slots["lstm"].version == 2
    assert _swaps(metrics, "lstm", "rejected", "incompatible") == 1


# -- the schedule -----------------------------------------------------------------------------------
def test_schedule_in_time_never_sooner_than_the_last_refit_took() -> None:
    s = Schedule(every_s=60.0, now=0.0)
    assert s.next_due(0.0) == 60.0
    s.started(60.0)
    s.finished(160.0)  # took 100 s: the next waits 100 s after its end
    assert s.next_due(160.0) == 260.0
    s.started(260.0)
    s.finished(261.0)  # took 1 s: every 60 s again
    assert s.next_due(261.0) == 320.0
    counted = Schedule(every_events=100, now=0.0)
    assert counted.next_due(5.0) is None
    assert counted.count(150)
    assert counted.next_due(5.0) == 5.0
    counted.started(5.0)
    counted.finished(25.0)
    assert counted.count(500)
    assert counted.next_due(26.0) == 45.0  # due by count, but not within 20 s of the last
    assert Schedule(now=0.0).next_due(1e9) is None


def test_worker_refits_on_time_with_a_gap_of_at_least_the_last_duration(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 0.2 s by time (and by count, every event batch) while each refit takes
    0.4 s: each refit starts at least 0.4 s after the last ended."""
    spans: list[tuple[float, float]] = []

    def slow_refit(self: RefitWorker) -> list[Decision]:
        schedule = self.schedules[NEXT_REQUEST]
        schedule.started()
        start = time.monotonic()
        time.sleep(0.4)
        spans.append((start, time.monotonic()))
        schedule.finished()
        return []

    monkeypatch.setattr(RefitWorker, "refit_once", slow_refit)
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    worker = RefitWorker(
        _config(tmp_path, every_s=0.2, every_events=10, min_events=10, load_bin_s=None),
        slots,
        metrics,
    )
    evs = _events(2000, seed=35)
    stop = threading.Event()

    def feed() -> None:  # a fast stream: the count alone would ask for a refit all the time
        i = 0
        while not stop.is_set():
            worker.observe(evs[i % 1900 : i % 1900 + 50])
            i += 50
            time.sleep(0.005)

    feeder = threading.Thread(target=feed, daemon=True)
    worker.start()
    feeder.start()
    time.sleep(2.6)
    stop.set()
    feeder.join(5)
    worker.stop()
    assert len(spans) >= 2, spans
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    assert all(g >= 0.4 - 0.02 for g in gaps), gaps
    assert len(spans) <= 4  # 2.6 s / (0.4 + 0.4) s, not one every 0.2 s
