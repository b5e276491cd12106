"""The periodic refit: the event buffer, the champion/challenger guard, the worker, the
model-directory watcher, and refits hot-swapped into a running service (no network)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from predictor.artifacts import list_artifacts, load_artifact, save_artifact
from predictor.events import RequestEvent
from predictor.features import request_matrix
from predictor.models.base import Forecaster, Prediction
from predictor.models.neural import NeuralForecaster
from predictor.slot import ModelSlot
from predictor.synth import synthesize
from stream.metrics import Metrics
from stream.model_slots import read_slots
from stream.model_sync import ModelDirWatcher, encode_artifact, install_message
from stream.service import ForecastService, ServeConfig
from stream.trace_replay import encode
from stream.transport import MemoryBroker
from trainer import refit as refit_mod
from trainer.guard import Decision, judge
from trainer.refit import RecentEvents, RefitConfig, RefitWorker
from trainer.train import TrainConfig, train_forecaster

MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
SEQ_LEN = 16


# -- helpers --------------------------------------------------------------------------------
def _events(rows: int, seed: int = 1, models: tuple[str, ...] | None = None) -> list[RequestEvent]:
    """A synthetic BurstGPT-like trace as request events (streams ChatGPT and GPT-4)."""
    df = synthesize(rows, seed=seed)
    return [
        RequestEvent(float(ts), int(rq), int(rs), models[i % len(models)] if models else str(m))
        for i, (ts, rq, rs, m) in enumerate(
            zip(
                df["Timestamp"],
                df["Request tokens"],
                df["Response tokens"],
                df["Model"],
                strict=True,
            )
        )
    ]


def _series(events: list[RequestEvent]) -> np.ndarray:
    return request_matrix(
        np.array([e.timestamp_s for e in events]),
        np.array([e.request_tokens for e in events]),
        np.array([e.response_tokens for e in events]),
    )


@cache
def _champion_dir(root: str) -> Path:
    """Tiny LSTM and DLinear artifacts (version 1 each), trained once per session."""
    model_dir = Path(root) / "champions"
    series = [_series(_events(1200, seed=7))]
    for model in MODELS:
        cfg = TrainConfig(model=model, seq_len=SEQ_LEN, epochs=2, device="cpu", params=TINY[model])
        result = train_forecaster(series, cfg, progress=False)
        save_artifact(
            result.forecaster, model_dir, preset="test", version=1, extra=result.metadata()
        )
    return model_dir


@pytest.fixture
def model_dir(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the version-1 champions for this test."""
    root = tmp_path_factory.getbasetemp() / "refit-shared"
    root.mkdir(exist_ok=True)
    dest = tmp_path / "models"
    shutil.copytree(_champion_dir(str(root)), dest)
    return dest


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(model_dir: Path, **kw: Any) -> RefitConfig:
    base: dict[str, Any] = {
        "model_dir": model_dir,
        "models": MODELS,
        "every_events": None,
        "every_s": None,
        "window_events": 1500,
        "min_events": 300,
        "seq_len": SEQ_LEN,
        "epochs": 2,
        "batch_size": 64,
        "device": "cpu",
        "params": TINY,
    }
    return RefitConfig(**{**base, **kw})


def _swaps(metrics: Metrics, model: str, result: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "reqcast_model_swaps_total", {"model": model, "result": result, "reason": reason}
    )
    return value or 0.0


def _version_metric(metrics: Metrics, model: str) -> float | None:
    return metrics.registry.get_sample_value(
        "reqcast_model_version", {"model": model, "task": "next_request"}
    )


class Fixed:
    """A forecaster that always says the same thing (for guard tests)."""

    kind = "model"

    def __init__(self, value: float, seq_len: int = SEQ_LEN, channels: int = 3, horizon: int = 1):
        self.name, self.value = "fixed", value
        self.seq_len, self.channels, self.horizon = seq_len, channels, horizon

    def predict(self, windows: np.ndarray) -> Prediction:
        out = np.full((len(windows), self.horizon, self.channels), self.value)
        return Prediction(out, out, out)


def _nan_copy(fc: Forecaster) -> NeuralForecaster:
    bad = copy.deepcopy(fc)
    assert isinstance(bad, NeuralForecaster)
    with torch.no_grad():
        next(iter(bad.module.parameters())).fill_(math.nan)
    return bad


def _holdout(events: list[RequestEvent]) -> tuple[list[np.ndarray], list[int]]:
    s = _series(events)
    return [s], [len(s) // 10]


# -- the buffer -----------------------------------------------------------------------------
def test_recent_events_bounded_per_stream() -> None:
    buf = RecentEvents(capacity=5)
    a = [RequestEvent(10.0 + 2 * i, 100 + i, 10 + i, "A") for i in range(8)]
    b = [RequestEvent(3.0 * i, 7, 8, "B") for i in range(3)]
    assert buf.add(a[:4]) == 4
    assert buf.add([*a[4:], *b]) == 7
    assert buf.total == 11 and len(buf) == 5 + 3  # A keeps only its last five
    snap = buf.snapshot()
    assert set(snap) == {"A", "B"}
    assert snap["A"].shape == (5, 3) and snap["B"].shape == (3, 3)
    # the oldest kept row has no predecessor in the buffer: gap 0; then 2 s apart
    np.testing.assert_array_equal(snap["A"][:, 0], [0.0, 2.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(snap["A"][:, 1], [103, 104, 105, 106, 107])
    np.testing.assert_array_equal(snap["A"][:, 2], [13, 14, 15, 16, 17])
    np.testing.assert_array_equal(snap["B"][:, 0], [0.0, 3.0, 3.0])


def test_recent_events_snapshot_gaps_never_negative_and_copy() -> None:
    buf = RecentEvents(capacity=10)
    buf.add([RequestEvent(t, 1, 1, "m") for t in (5.0, 4.0, 9.5, 9.5)])  # late and tied events
    snap = buf.snapshot()
    np.testing.assert_array_equal(snap["m"][:, 0], [0.0, 0.0, 5.5, 0.0])
    buf.add([RequestEvent(20.0, 1, 1, "m")])
    assert snap["m"].shape == (4, 3)  # a snapshot does not move with the buffer


def test_recent_events_one_stream_without_key() -> None:
    buf = RecentEvents(capacity=3, stream_key="none")
    buf.add([RequestEvent(float(i), 1, 1, f"m{i % 2}") for i in range(6)])
    snap = buf.snapshot()
    assert list(snap) == ["all"] and snap["all"].shape == (3, 3)


# -- the guard ------------------------------------------------------------------------------
@pytest.fixture
def champions(model_dir: Path) -> dict[str, NeuralForecaster]:
    return {m: load_artifact(list_artifacts(model_dir, m)[-1].path)[0] for m in MODELS}


def test_judge_accepts_no_worse_challenger(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    champ = champions["dlinear"]
    same = copy.deepcopy(champ)
    d = judge("dlinear", same, champ, series, holdout)
    assert d.accepted and d.reason == "no_worse"
    assert d.challenger_score == pytest.approx(d.champion_score)
    assert d.challenger_score is not None and math.isfinite(d.challenger_score)


def test_judge_rejects_worse_challenger(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    d = judge("lstm", Fixed(1e6), champions["lstm"], series, holdout)
    assert not d.accepted and d.reason == "worse"
    assert d.challenger_score is not None and d.champion_score is not None
    assert d.challenger_score > d.champion_score
    assert "rejected (worse)" in d.describe()
    # a tolerance wide enough lets the same challenger through
    assert judge("lstm", Fixed(1e6), champions["lstm"], series, holdout, tolerance=1e9).accepted


def test_judge_rejects_nan_weights(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    bad = _nan_copy(champions["lstm"])
    assert judge("lstm", bad, champions["lstm"], series, holdout) == Decision(
        "lstm", False, "non_finite_weights"
    )
    # even without a champion to compare with
    assert judge("lstm", bad, None, series, holdout).reason == "non_finite_weights"


def test_judge_rejects_shape_mismatch(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    for odd in (Fixed(1.0, channels=2), Fixed(1.0, horizon=4)):
        d = judge("dlinear", odd, champions["dlinear"], series, holdout)
        assert not d.accepted and d.reason == "shape_mismatch"


def test_judge_rejects_non_finite_output(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    d = judge("dlinear", Fixed(math.nan), champions["dlinear"], series, holdout)
    assert not d.accepted and d.reason == "non_finite_output"


def test_judge_without_champion_accepts(champions: dict[str, NeuralForecaster]) -> None:
    series, holdout = _holdout(_events(800, seed=2))
    d = judge("dlinear", champions["dlinear"], None, series, holdout)
    assert d.accepted and d.reason == "no_champion" and d.champion_score is None


# -- the worker -----------------------------------------------------------------------------
def test_refit_once_saves_installs_and_publishes(model_dir: Path, metrics: Metrics) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    assert {m: s.version for m, s in slots.items()} == {"lstm": 1, "dlinear": 1}
    published: list[Any] = []
    # the guard itself is tested above; a wide tolerance makes every sound refit a swap
    worker = RefitWorker(
        _config(model_dir, tolerance=1e9), slots, metrics, publish=published.append
    )
    events = _events(3000, seed=4)
    worker.observe(events)
    per_stream = Counter(e.model for e in events)
    assert len(worker.buffer) == sum(min(n, 1500) for n in per_stream.values()) < 3000
    assert worker.buffer.total == 3000
    versions: dict[str, list[int]] = defaultdict(list)
    for round_ in (1, 2):
        before = {m: slots[m].current() for m in MODELS}
        decisions = worker.refit_once()
        assert [d.model for d in decisions] == list(MODELS)
        assert all(d.accepted and d.reason == "no_worse" for d in decisions), decisions
        for m in MODELS:
            cur = slots[m].current()
            assert cur is not None and cur is not before[m]
            assert cur.version == 1 + round_
            assert cur.meta["preset"] == "refit" and cur.meta["guard"]["accepted"] is True
            assert cur.meta["training"]["epochs_run"] <= 2
            assert _version_metric(metrics, m) == 1 + round_
            versions[m].append(cur.version)
    for m in MODELS:
        on_disk = [a.version for a in list_artifacts(model_dir, m)]
        assert on_disk == [1, 2, 3]
        # what was saved is what serves
        newest = list_artifacts(model_dir, m)[-1]
        fc, meta = load_artifact(newest.path)
        assert meta["version"] == slots[m].version == 3
        serving = slots[m].current()
        assert serving is not None
        wins = np.stack([_series(_events(200, seed=3))[i : i + SEQ_LEN] for i in range(0, 160, 8)])
        np.testing.assert_allclose(
            fc.predict(wins).point, serving.forecaster.predict(wins).point, rtol=1e-5
        )
        assert _swaps(metrics, m, "accepted", "no_worse") == 2
    assert [(i.model, i.version) for i in published] == [
        ("lstm", 2),
        ("dlinear", 2),
        ("lstm", 3),
        ("dlinear", 3),
    ]
    assert worker.refits == 2 and len(worker.decisions) == 4


def test_refit_without_models_accepts_first_versions(tmp_path: Path, metrics: Metrics) -> None:
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    worker = RefitWorker(_config(tmp_path / "empty"), slots, metrics)
    worker.observe(_events(1500, seed=5))
    decisions = worker.refit_once()
    assert [(d.model, d.accepted, d.reason) for d in decisions] == [
        ("lstm", True, "no_champion"),
        ("dlinear", True, "no_champion"),
    ]
    assert {m: s.version for m, s in slots.items()} == {"lstm": 1, "dlinear": 1}
    assert [a.version for a in list_artifacts(tmp_path / "empty")] == [1, 1]


def test_isolated_refit_trains_in_a_child_process(tmp_path: Path, metrics: Metrics) -> None:
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    worker = RefitWorker(_config(tmp_path / "iso", isolate=True), slots, metrics)
    try:
        worker.observe(_events(1500, seed=5))
        decisions = worker.refit_once()
        assert worker._pool is not None  # the training ran in the worker's child process
        child = worker._pool.submit(os.getpid).result()
        assert child != os.getpid()
    finally:
        worker.stop()
    assert all(d.accepted for d in decisions)
    assert {m: s.version for m, s in slots.items()} == {"lstm": 1, "dlinear": 1}
    lstm = slots["lstm"].current()
    assert lstm is not None and next(lstm.forecaster.module.parameters()).device.type == "cpu"


def test_refit_keeps_the_champion_when_the_guard_says_worse(
    model_dir: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    champion = slots["lstm"].current()

    def worse(*args: Any, **kwargs: Any) -> Decision:
        return Decision(args[0], False, "worse", 2.0, 1.0)

    monkeypatch.setattr(refit_mod, "judge", worse)
    worker = RefitWorker(_config(model_dir, models=("lstm",)), slots, metrics)
    worker.observe(_events(1500, seed=5))
    assert [d.reason for d in worker.refit_once()] == ["worse"]
    assert slots["lstm"].current() is champion
    assert [a.version for a in list_artifacts(model_dir, "lstm")] == [1]
    assert _swaps(metrics, "lstm", "rejected", "worse") == 1


def test_consider_rejects_nan_challenger_and_counts_by_reason(
    model_dir: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    published: list[Any] = []
    worker = RefitWorker(_config(model_dir), slots, metrics, publish=published.append)
    series, holdout = _holdout(_events(1000, seed=6))
    champion = slots["lstm"].current()
    assert champion is not None
    with caplog.at_level(logging.WARNING, logger="trainer.refit"):
        d = worker.consider("lstm", _nan_copy(champion.forecaster), series, holdout)
    assert d == Decision("lstm", False, "non_finite_weights")
    assert slots["lstm"].version == 1 and slots["lstm"].current() is champion
    assert [a.version for a in list_artifacts(model_dir, "lstm")] == [1]
    assert published == []
    assert "lstm: rejected (non_finite_weights)" in caplog.text
    # an acceptance and a rejection, each counted under its own result and reason
    champion_d = slots["dlinear"].current()
    assert champion_d is not None
    ok = worker.consider("dlinear", copy.deepcopy(champion_d.forecaster), series, holdout)
    assert ok.accepted and ok.reason == "no_worse" and slots["dlinear"].version == 2
    assert _swaps(metrics, "lstm", "rejected", "non_finite_weights") == 1
    assert _swaps(metrics, "dlinear", "accepted", "no_worse") == 1
    assert _swaps(metrics, "lstm", "accepted", "no_worse") == 0
    assert _swaps(metrics, "dlinear", "rejected", "non_finite_weights") == 0
    assert [(i.model, i.version) for i in published] == [("dlinear", 2)]
    assert worker.decisions == [d, ok]


def test_cuda_oom_retries_on_cpu_with_smaller_batch(
    model_dir: Path,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[TrainConfig] = []
    real = refit_mod.train_forecaster

    def flaky(series: Any, cfg: TrainConfig, progress: bool = True) -> Any:
        calls.append(cfg)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(series, cfg, progress=progress)

    monkeypatch.setattr(refit_mod, "train_forecaster", flaky)
    slots = read_slots(model_dir, MODELS, metrics)
    worker = RefitWorker(_config(model_dir, models=("lstm",), tolerance=1e9), slots, metrics)
    worker.observe(_events(1500, seed=8))
    with caplog.at_level(logging.WARNING, logger="trainer.refit"):
        decisions = worker.refit_once()
    assert [(c.device, c.batch_size) for c in calls] == [("cpu", 64), ("cpu", 32)]
    assert decisions[0].accepted and slots["lstm"].version == 2
    assert "CUDA out of memory refitting lstm: retrying on cpu with batch 32" in caplog.text
    assert _swaps(metrics, "lstm", "retried", "cuda_oom") == 1
    assert (
        metrics.registry.get_sample_value(
            "reqcast_training_duration_seconds_count", {"model": "lstm", "device": "cpu"}
        )
        == 1
    )


def test_other_training_errors_are_not_retried(
    model_dir: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(series: Any, cfg: TrainConfig, progress: bool = True) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(refit_mod, "train_forecaster", broken)
    slots = read_slots(model_dir, MODELS, metrics)
    worker = RefitWorker(_config(model_dir, models=("lstm",)), slots, metrics)
    worker.observe(_events(500, seed=8))
    with pytest.raises(RuntimeError, match="shapes"):
        worker.refit_once()
    assert slots["lstm"].version == 1


def test_too_little_data_is_a_training_error_decision(model_dir: Path, metrics: Metrics) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    worker = RefitWorker(_config(model_dir, models=("dlinear",)), slots, metrics)
    worker.observe(_events(20, seed=8))
    assert worker.refit_once() == [Decision("dlinear", False, "training_error")]
    assert slots["dlinear"].version == 1
    assert _swaps(metrics, "dlinear", "rejected", "training_error") == 1


def test_schedule_by_event_count(model_dir: Path, metrics: Metrics) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    worker = RefitWorker(
        _config(model_dir, every_events=400, min_events=600, tolerance=1e9), slots, metrics
    )
    worker.start()
    try:
        events = _events(1200, seed=9)
        worker.observe(events[:500])  # enough new events, too few buffered: nothing yet
        time.sleep(0.3)
        assert worker.refits == 0
        worker.observe(events[500:])
        deadline = time.monotonic() + 30
        while len(worker.decisions) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert worker.refits == 1 and len(worker.decisions) == 2
    assert {m: s.version for m, s in slots.items()} == {"lstm": 2, "dlinear": 2}


def test_max_refits_ends_the_schedule(model_dir: Path, metrics: Metrics) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    worker = RefitWorker(
        _config(model_dir, models=("dlinear",), every_events=300, tolerance=1e9),
        slots,
        metrics,
        max_refits=1,
    )
    worker.start()
    try:
        events = _events(3000, seed=12)
        worker.observe(events[:1000])
        deadline = time.monotonic() + 30
        while worker.refits < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.observe(events[1000:])  # due again, possibly while the first refit runs
        while not worker.finished and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.finished
    finally:
        worker.stop()
    assert worker.refits == 1 and len(worker.decisions) == 1
    assert slots["dlinear"].version == 2


# -- the model-directory watcher -------------------------------------------------------------
def test_dir_watcher_installs_newer_and_rejects_corrupt(
    model_dir: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    watcher = ModelDirWatcher(model_dir, slots, metrics, interval_s=60)
    assert watcher.check() == 0  # nothing newer
    v1 = {m: slots[m].current() for m in MODELS}
    fresh = load_artifact(list_artifacts(model_dir, "lstm")[-1].path)[0]
    save_artifact(fresh, model_dir, preset="drop", version=2)
    assert watcher.check() == 1
    v2 = slots["lstm"].current()
    assert v2 is not None and v2.version == 2 and v2 is not v1["lstm"]
    assert slots["dlinear"].current() is v1["dlinear"]
    assert _swaps(metrics, "lstm", "accepted", "model_dir") == 1
    assert _version_metric(metrics, "lstm") == 2

    # version 3 arrives with weights that do not match their checksum
    bad = save_artifact(fresh, model_dir, preset="drop", version=3)
    weights = bad.path / "weights.pt"
    raw = bytearray(weights.read_bytes())
    raw[-20] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR, logger="stream.model_sync"):
        assert watcher.check() == 0
    assert slots["lstm"].current() is v2
    assert _version_metric(metrics, "lstm") == 2
    assert _swaps(metrics, "lstm", "rejected", "load_error") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "stream.model_sync"]
    assert any(
        bad.path.name in line and "weights do not match their checksum" in line for line in lines
    ), lines
    # rejected once, not on every poll
    assert watcher.check() == 0
    assert _swaps(metrics, "lstm", "rejected", "load_error") == 1

    # the old model keeps serving
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    svc = ForecastService(
        ServeConfig("in", "out"), broker.source("in", "g"), broker.sink(), slots, metrics
    )
    sink = broker.sink()
    for ev in _events(50, seed=3):
        sink.send("in", *encode(ev))
    assert svc.step(threading.Event()) == 50
    got = Counter(
        (f["model"], f["model_version"])
        for f in (json.loads(r.value) for r in broker.records("out"))
        if f["model"] in MODELS  # not the "best" pseudo-model, if published
    )
    assert got == {("lstm", 2): 50, ("dlinear", 1): 50}

    # a later good version is still taken
    save_artifact(fresh, model_dir, preset="drop", version=4)
    assert watcher.check() == 1 and slots["lstm"].version == 4


def test_dir_watcher_thread_picks_up_a_drop(model_dir: Path, metrics: Metrics) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    watcher = ModelDirWatcher(model_dir, slots, metrics, interval_s=0.05)
    watcher.start()
    try:
        fc = load_artifact(list_artifacts(model_dir, "dlinear")[-1].path)[0]
        save_artifact(fc, model_dir, preset="drop", version=7)
        deadline = time.monotonic() + 10
        while slots["dlinear"].version != 7 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert slots["dlinear"].version == 7 and slots["lstm"].version == 1


# -- model-topic messages (no broker) ---------------------------------------------------------
def _message(info: Any, **meta: Any) -> bytes:
    return json.dumps(
        {
            "meta": {**info.meta, **meta},
            "weights_b64": json.loads(encode_artifact(info))["weights_b64"],
        }
    ).encode()


def test_install_message_takes_newer_and_rejects_bad_ones(
    model_dir: Path, metrics: Metrics, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slots = read_slots(model_dir, MODELS, metrics)
    info = list_artifacts(model_dir, "lstm")[-1]
    v1 = slots["lstm"].current()
    assert not install_message(_message(info, version=1), slots, metrics)  # not newer
    assert not install_message(_message(info, model="other", version=9), slots, metrics)
    assert slots["lstm"].current() is v1
    corrupt = json.loads(_message(info, version=5, name="bad_lstm"))
    corrupt["weights_b64"] = corrupt["weights_b64"][:-8] + "AAAAAAA="
    assert v1 is not None
    nan_weights = tmp_path / "nan.pt"
    torch.save(
        {k: v.clone().fill_(math.nan) for k, v in v1.forecaster.module.state_dict().items()},  # type: ignore[attr-defined]
        nan_weights,
    )
    nan_msg = json.loads(_message(info, version=6, name="nan_lstm"))
    nan_msg["weights_b64"] = base64.b64encode(nan_weights.read_bytes()).decode()
    nan_msg["meta"]["weights_sha256"] = hashlib.sha256(nan_weights.read_bytes()).hexdigest()
    with caplog.at_level(logging.ERROR, logger="stream.model_sync"):
        for raw in (
            b"{not json",
            json.dumps({"meta": info.meta, "weights_b64": "***"}).encode(),
            json.dumps({"weights_b64": ""}).encode(),
            json.dumps(corrupt).encode(),
            json.dumps(nan_msg).encode(),
        ):
            assert not install_message(raw, slots, metrics)
    assert slots["lstm"].current() is v1 and _version_metric(metrics, "lstm") == 1
    assert _swaps(metrics, "unknown", "rejected", "load_error") == 3
    assert _swaps(metrics, "lstm", "rejected", "load_error") == 2
    assert "rejected model bad_lstm from the model topic" in caplog.text
    assert "weights do not match their checksum" in caplog.text
    assert "NaN or infinite" in caplog.text
    assert install_message(_message(info, version=7), slots, metrics)
    assert slots["lstm"].version == 7 and _version_metric(metrics, "lstm") == 7
    assert _swaps(metrics, "lstm", "accepted", "model_topic") == 1


@pytest.mark.parametrize("name", ["../escaped-by-a-message", "a/b", "/tmp/absolute"])
def test_install_message_ignores_the_name_for_paths(
    model_dir: Path, metrics: Metrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The artifact name in a message never chooses where its files are written."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    slots = read_slots(model_dir, MODELS, metrics)
    info = list_artifacts(model_dir, "dlinear")[-1]
    assert install_message(_message(info, version=3, name=name), slots, metrics)
    assert slots["dlinear"].version == 3
    assert list(scratch.iterdir()) == []  # the temporary copy is gone
    assert not (tmp_path / "escaped-by-a-message").exists()
    assert not Path("/tmp/absolute/weights.pt").exists()


# -- continuous serving while refits swap models in -------------------------------------------
@pytest.fixture
def served(model_dir: Path, metrics: Metrics) -> Iterator[tuple[MemoryBroker, ForecastService]]:
    broker = MemoryBroker()
    broker.create_topic("requests", 1)
    slots = read_slots(model_dir, MODELS, metrics)
    service = ForecastService(
        ServeConfig("requests", "forecasts", batch_max=100, poll_timeout_s=0.05),
        broker.source("requests", "serve"),
        broker.sink(),
        slots,
        metrics,
    )
    yield broker, service


def test_refits_swap_in_while_serving(
    served: tuple[MemoryBroker, ForecastService], model_dir: Path, metrics: Metrics
) -> None:
    broker, service = served
    slots = service.slots
    worker = RefitWorker(
        _config(model_dir, every_events=400, min_events=400, tolerance=1e9), slots, metrics
    )
    service.observers.append(worker.observe)
    stop, replay_done = threading.Event(), threading.Event()
    sent = [0]
    events = _events(20_000, seed=10)

    def swapped() -> bool:
        return all(s.version >= 2 for s in slots.values())

    def feed() -> None:
        # ~2,000 events/s until both models were swapped at least once, then 400 more
        sink, after = broker.sink(), None
        for i in range(0, len(events), 20):
            for ev in events[i : i + 20]:
                sink.send("requests", *encode(ev))
            sent[0] += len(events[i : i + 20])
            if after is None and swapped():
                after = sent[0]
            if (after is not None and sent[0] >= after + 400) or stop.is_set():
                break
            time.sleep(0.01)
        replay_done.set()

    worker.start()
    serving = threading.Thread(target=service.run, args=(stop,), daemon=True)
    feeder = threading.Thread(target=feed, daemon=True)
    serving.start()
    feeder.start()
    try:
        assert replay_done.wait(60), "no swap within the replay"
        deadline = time.monotonic() + 20
        while service.stats.events < sent[0] and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        serving.join(10)
        feeder.join(10)
        worker.stop()
    assert service.stats.events == sent[0] == len(broker.records("requests"))
    assert any(d.accepted for d in worker.decisions)
    assert _swaps(metrics, "lstm", "accepted", "no_worse") >= 1

    forecasts = [json.loads(r.value) for r in broker.records("forecasts")]
    per_event = Counter((f["source"]["offset"], f["model"]) for f in forecasts)
    assert set(per_event.values()) == {1}  # no duplicates
    assert {o for o, _ in per_event} == set(range(sent[0]))
    assert all((o, m) in per_event for o in range(sent[0]) for m in MODELS)
    for m in MODELS:
        versions = [
            f["model_version"]
            for f in sorted(forecasts, key=lambda f: f["source"]["offset"])
            if f["model"] == m
        ]
        assert versions == sorted(versions), f"{m}: a version went backwards"
        # the last batch may precede a refit that finished after it
        assert versions[0] == 1 and 2 <= versions[-1] <= slots[m].version
