"""Hostile model-topic messages: each is rejected, counted and logged once, the follower goes
on and installs the next good version; a seeded fuzz run finds nothing but ModelLoadError."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import random
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.artifacts import ArtifactInfo, save_artifact
from predictor.errors import ModelLoadError
from predictor.features import Scaler, to_log
from predictor.models import lstm
from predictor.models.base import Forecaster
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module
from predictor.slot import ModelSlot
from stream import model_sync
from stream.metrics import Metrics
from stream.model_slots import read_slots
from stream.model_sync import (
    MAX_MODEL_MESSAGE_BYTES,
    ModelTopicFollower,
    encode_artifact,
    install_message,
    load_message,
    parse_message,
)


def _forecaster() -> NeuralForecaster:
    torch.manual_seed(0)
    spec = NeuralSpec("lstm", seq_len=8, horizon=1, params={"hidden_size": 8, "num_layers": 1})
    raw = np.random.default_rng(0).gamma(1.0, 50.0, size=(64, 3))
    return NeuralForecaster(spec, build_module(spec), Scaler.fit(to_log(raw)), confidence=0.8)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> ArtifactInfo:
    return save_artifact(_forecaster(), tmp_path_factory.mktemp("art"), preset="cpu", version=1)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _body(info: ArtifactInfo) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(encode_artifact(info))
    return body


def _message(info: ArtifactInfo, **meta: Any) -> bytes:
    body = _body(info)
    body["meta"].update(meta)
    return json.dumps(body).encode()


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _bad_messages(info: ArtifactInfo) -> dict[str, tuple[bytes, str]]:
    """Each bad message, and the model its rejection is counted as."""
    spec = info.meta["spec"]
    body = _body(info)
    huge = b'{"meta": {}, "pad": "' + b"a" * MAX_MODEL_MESSAGE_BYTES + b'"}'
    return {
        "version Infinity": (_message(info, version=math.inf), "unknown"),
        "version NaN": (_message(info, version=math.nan), "unknown"),
        "version string": (_message(info, version="9"), "unknown"),
        "version fraction": (_message(info, version=9.5), "unknown"),
        "nested JSON": (b'{"meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "unknown"),
        "nested meta": (_message(info, version=9, data=_nested(500)), "lstm"),
        "NaN scaler": (
            _message(info, version=9, scaler={"mean": [math.nan] * 3, "std": [1, 1, 1]}),
            "lstm",
        ),
        "zero scale": (_message(info, version=9, scaler={"mean": [0] * 3, "std": [0] * 3}), "lstm"),
        "NaN calibration": (_message(info, version=9, calibration=[[math.nan] * 3]), "lstm"),
        "oversized spec": (
            _message(info, version=9, spec={**spec, "params": {"hidden_size": 16000}}),
            "lstm",
        ),
        "spec within field bounds, too many values": (
            _message(
                info, version=9, spec={**spec, "params": {"hidden_size": 4096, "num_layers": 8}}
            ),
            "lstm",
        ),
        "seq_len a string": (_message(info, version=9, spec={**spec, "seq_len": "8"}), "lstm"),
        "meta a list": (json.dumps({"meta": [], "weights_b64": ""}).encode(), "unknown"),
        "body a list": (b"[1, 2]", "unknown"),
        "body null": (b"null", "unknown"),
        "model a number": (_message(info, model=5, version=9), "unknown"),
        "weights a number": (json.dumps({**body, "weights_b64": 5}).encode(), "unknown"),
        "garbage base64": (json.dumps({**body, "weights_b64": "not*base64!"}).encode(), "unknown"),
        "non-ASCII base64": (
            json.dumps({**body, "weights_b64": "\u00e9\u00e9=="}).encode(),
            "unknown",
        ),
        "not UTF-8": (b"\xff\xfe\x00\x81garbage", "unknown"),
        "huge message": (huge, "unknown"),
    }


def _swaps(metrics: Metrics, model: str, result: str, reason: str) -> float:
    labels = {"model": model, "result": result, "reason": reason}
    return metrics.registry.get_sample_value("reqcast_model_swaps_total", labels) or 0.0


@pytest.fixture
def no_big_modules(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records any LSTM built with more than 1,000 hidden units, and refuses to build it
    (the old code built a 4 GB one before noticing the weights did not fit)."""
    attempts: list[int] = []
    real = lstm.LSTMNet.__init__

    def init(self: Any, *args: Any, hidden_size: int = 64, **kwargs: Any) -> None:
        if hidden_size > 1000:
            attempts.append(hidden_size)
            raise MemoryError(f"test refuses an LSTM of {hidden_size} hidden units")
        real(self, *args, hidden_size=hidden_size, **kwargs)

    monkeypatch.setattr(lstm.LSTMNet, "__init__", init)
    return attempts


def test_each_bad_message_is_rejected_once_and_the_next_good_one_installs(
    artifact: ArtifactInfo,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    no_big_modules: list[int],
) -> None:
    slots: dict[str, ModelSlot[Forecaster]] = {"lstm": ModelSlot("lstm")}
    bad = _bad_messages(artifact)
    for case, (raw, counted_as) in bad.items():
        caplog.clear()
        before = _swaps(metrics, counted_as, "rejected", "load_error")
        with caplog.at_level(logging.ERROR, logger="stream.model_sync"):
            assert install_message(raw, slots, metrics) is False, case
        assert _swaps(metrics, counted_as, "rejected", "load_error") == before + 1, case
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "rejected model" in errors[0].getMessage(), case
        assert "\n" not in errors[0].getMessage()[:200], case
    assert slots["lstm"].current() is None
    assert no_big_modules == []  # refused from the spec, never built
    assert "larger than" in _log_of(bad["huge message"][0], slots, metrics, caplog)
    assert install_message(_message(artifact, version=10), slots, metrics)
    assert slots["lstm"].version == 10
    assert _swaps(metrics, "lstm", "accepted", "model_topic") == 1


def _log_of(
    raw: bytes,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> str:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="stream.model_sync"):
        install_message(raw, slots, metrics)
    return caplog.text


def test_a_message_over_the_size_bound_is_not_parsed(
    artifact: ArtifactInfo, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = json.loads

    def loads(value: Any, **kw: Any) -> Any:
        parsed.append(len(value))
        return real(value, **kw)

    huge = _message(artifact, version=2, pad="a" * MAX_MODEL_MESSAGE_BYTES)
    monkeypatch.setattr(model_sync.json, "loads", loads)
    with pytest.raises(ModelLoadError, match="larger than"):
        parse_message(huge)
    assert parsed == []
    assert not install_message(huge, {"lstm": ModelSlot("lstm")}, metrics)
    assert parsed == []


# -- the follower itself, over a stand-in consumer -------------------------------------------
class _Consumer:
    """What the follower uses of ``kafka.KafkaConsumer``, serving queued message values."""

    queue: ClassVar[list[bytes | None]] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps: Any) -> None:
        pass

    def seek_to_beginning(self, *tps: Any) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Any]]:
        if not self.queue:
            time.sleep(0.01)
            return {}
        value = self.queue.pop(0)
        return {("models", 0): [SimpleNamespace(value=value)]}

    def close(self, **kwargs: Any) -> None:
        pass


@pytest.fixture
def follow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModelTopicFollower]]:
    import kafka

    monkeypatch.setattr(kafka, "KafkaConsumer", _Consumer)
    started: list[ModelTopicFollower] = []

    def start(
        values: list[bytes | None], slots: dict[str, ModelSlot[Forecaster]], metrics: Metrics
    ) -> ModelTopicFollower:
        _Consumer.queue = list(values)
        kafka_config = SimpleNamespace(client_kwargs=dict)
        follower = ModelTopicFollower(kafka_config, "models", slots, metrics)
        follower.start()
        started.append(follower)
        return follower

    yield start
    for f in started:
        f.stop()


def test_the_follower_survives_every_bad_message_and_installs_the_next_good_one(
    artifact: ArtifactInfo,
    metrics: Metrics,
    follow: Callable[..., ModelTopicFollower],
    no_big_modules: list[int],
) -> None:
    """An ``Infinity`` version or deep nesting killed the follower thread (OverflowError,
    RecursionError): no later version was ever installed."""
    slots: dict[str, ModelSlot[Forecaster]] = {"lstm": ModelSlot("lstm")}
    bad = [raw for raw, _ in _bad_messages(artifact).values()]
    good = [_message(artifact, version=v) for v in (3, 2, 7)]  # 2 is older than 3: ignored
    follower = follow([*bad, None, b"", *good], slots, metrics)
    deadline = time.monotonic() + 30
    while slots["lstm"].version != 7 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert follower._thread.is_alive()
    assert slots["lstm"].version == 7 and follower.installed == 2
    rejected = sum(_swaps(metrics, m, "rejected", "load_error") for m in ("unknown", "lstm"))
    assert rejected == len(bad)


def test_the_follower_outlives_an_unexpected_error(
    artifact: ArtifactInfo,
    metrics: Metrics,
    follow: Callable[..., ModelTopicFollower],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even a bug (an exception install_message did not mean to raise) costs one message."""
    real = model_sync.install_message
    calls: list[int] = []

    def flaky(value: bytes, *args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(value, *args, **kwargs)

    monkeypatch.setattr(model_sync, "install_message", flaky)
    slots: dict[str, ModelSlot[Forecaster]] = {"lstm": ModelSlot("lstm")}
    follower = follow(
        [_message(artifact, version=2), _message(artifact, version=3)], slots, metrics
    )
    deadline = time.monotonic() + 30
    while slots["lstm"].version != 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert follower._thread.is_alive() and slots["lstm"].version == 3
    assert _swaps(metrics, "unknown", "rejected", "load_error") == 1


# -- the model directory at start-up ---------------------------------------------------------
def test_model_workers_share_the_background_worker_lifecycle(
    artifact: ArtifactInfo, metrics: Metrics, follow: Callable[..., ModelTopicFollower]
) -> None:
    """Stop before start returns at once (a serve start-up that fails half-way stops every
    worker it built); a started follower or watcher ends its named daemon thread on stop."""
    from predictor.background import BackgroundWorker, PeriodicWorker
    from stream.model_sync import ModelDirWatcher

    slots: dict[str, ModelSlot[Forecaster]] = {"lstm": ModelSlot("lstm")}
    idle = ModelTopicFollower(SimpleNamespace(client_kwargs=dict), "models", slots, metrics)
    watcher = ModelDirWatcher(artifact.path.parent, slots, metrics, interval_s=0.01)
    assert isinstance(idle, BackgroundWorker) and isinstance(watcher, PeriodicWorker)
    idle.stop()  # never started
    assert not idle.finished
    follower = follow([_message(artifact, version=2)], slots, metrics)
    watcher.start()
    assert {follower._thread.name, watcher._thread.name} == {
        "model-topic",
        "model-dir-next_request",
    }
    assert follower._thread.daemon and watcher._thread.daemon
    follower.stop(timeout_s=10)
    watcher.stop(timeout_s=10)
    assert follower.finished and watcher.finished


def test_serve_start_up_skips_bad_meta_and_serves_the_newest_good_one(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """``"version": Infinity`` in a meta.json made ``serve`` exit at start-up (OverflowError)."""
    good = save_artifact(_forecaster(), tmp_path, preset="cpu", version=1)
    inf = save_artifact(_forecaster(), tmp_path, preset="cpu", version=2)
    text = (inf.path / "meta.json").read_text().replace('"version": 2', '"version": Infinity')
    (inf.path / "meta.json").write_text(text)
    nan = save_artifact(_forecaster(), tmp_path, preset="cpu", version=3)
    meta = {**nan.meta, "scaler": {"mean": [math.nan, 0, 0], "std": [1, 1, 1]}}
    (nan.path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.ERROR, logger="stream.model_slots"):
        slots = read_slots(tmp_path, ["lstm", "dlinear"], metrics)
        again = read_slots(tmp_path, ["lstm", "dlinear"], metrics, task="load")
    loaded = slots["lstm"].current()
    assert loaded is not None and loaded.version == 1 and loaded.meta["name"] == good.path.name
    assert all(s.current() is None for s in again.values())
    assert _swaps(metrics, "lstm", "rejected", "load_error") == 2
    assert _swaps(metrics, "unknown", "rejected", "load_error") == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # each once, though two loads saw them
    assert any(inf.path.name in line and "version" in line for line in lines)
    assert any(nan.path.name in line and "scaler" in line for line in lines)


def test_start_up_with_only_bad_artifacts_starts_without_them(
    tmp_path: Path, metrics: Metrics
) -> None:
    only = save_artifact(_forecaster(), tmp_path, preset="cpu", version=1)
    (only.path / "meta.json").write_text('{"format": "reqcast-model/1", "version": 1e999}')
    slots = read_slots(tmp_path, ["lstm", "dlinear"], metrics)
    load = read_slots(tmp_path, ["lstm", "dlinear"], metrics, task="load")
    assert all(s.current() is None for s in [*slots.values(), *load.values()])
    # it names no model: any slot may have wanted it; counted once all the same
    assert _swaps(metrics, "unknown", "rejected", "load_error") == 1


# -- fuzz --------------------------------------------------------------------------------------
_VALUES: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    7,
    2**31,
    2**64,
    0.5,
    1e308,
    -1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x",
    "Infinity",
    [],
    {},
    [1, 2, 3],
    [[0.0, 0.0, 0.0]],
    {"a": 1},
    _nested(40),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "weights_b64":
                out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list) and len(value) <= 8:
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(body: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node = body
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value


def _weights_variant(rng: random.Random, weights: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return weights[: rng.randrange(len(weights))]
    if kind == 2:  # a zip, but not a state dict
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("archive/data.pkl", rng.randbytes(64))
        return buf.getvalue()
    data = bytearray(weights)
    for _ in range(rng.randrange(1, 6)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _mutant(rng: random.Random, good: bytes, body: dict[str, Any]) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        data = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        return good[: rng.randrange(len(good))]
    mutated = json.loads(json.dumps(body))
    if kind == 5:  # other weights, with a checksum that matches them
        weights = _weights_variant(rng, base64.b64decode(body["weights_b64"]))
        mutated["weights_b64"] = base64.b64encode(weights).decode()
        mutated["meta"]["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        return json.dumps(mutated).encode()
    for _ in range(rng.randrange(1, 4)):
        paths = _paths(mutated)
        path = paths[rng.randrange(len(paths))]
        _set(mutated, path, rng.choice(_VALUES), delete=rng.random() < 0.2)
    return json.dumps(mutated).encode()


def test_fuzz_the_model_message_loader(artifact: ArtifactInfo, metrics: Metrics) -> None:
    """Any bytes in: installed, or a ModelLoadError out; never another exception."""
    rng = random.Random(20240517)
    body = _body(artifact)
    body["meta"]["version"] = 2
    good = json.dumps(body).encode()
    outcomes = {"loaded": 0, "rejected": 0, "installed": 0}
    for i in range(400):
        raw = good if i % 50 == 0 else _mutant(rng, good, body)
        try:
            fc, _ = load_message(parse_message(raw))
        except ModelLoadError:
            outcomes["rejected"] += 1
        else:
            assert isinstance(fc, NeuralForecaster)
            outcomes["loaded"] += 1
        slots: dict[str, ModelSlot[Forecaster]] = {"lstm": ModelSlot("lstm")}
        installed = install_message(raw, slots, metrics)
        assert isinstance(installed, bool)
        outcomes["installed"] += installed
    assert outcomes["loaded"] >= 8 and outcomes["rejected"] >= 300, outcomes
    assert outcomes["installed"] <= outcomes["loaded"]


def test_fuzz_runs_in_a_thread_too(artifact: ArtifactInfo, metrics: Metrics) -> None:
    """The follower's thread has a smaller stack than the main one: deep nesting is still a
    rejection there, not a crash."""
    errors: list[BaseException] = []
    results: list[bool] = []

    def run() -> None:
        try:
            for depth in (10, 1_000, 100_000):
                raw = b'{"meta": ' + b"[" * depth + b"]" * depth + b"}"
                results.append(install_message(raw, {"lstm": ModelSlot("lstm")}, metrics))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert errors == [] and results == [False, False, False]
