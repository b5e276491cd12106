"""Hot swaps across processes over a real Kafka-protocol broker: ``serve`` instances follow
the compacted model topic (new versions in, corrupt ones rejected), and ``reqcast trainer``
publishes the versions its guard accepts.

The services run as real subprocesses (``python -m stream.cli``); the test publishes
with :class:`~stream.model_sync.ModelPublisher` and reads topics and ``/metrics`` directly.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from predictor.artifacts import ArtifactInfo, list_artifacts, load_artifact, save_artifact
from predictor.events import RequestEvent
from predictor.features import request_matrix
from predictor.models.base import Forecaster
from predictor.slot import ModelSlot
from predictor.synth import synthesize
from stream.kafka_admin import ensure_topics
from stream.kafka_io import KafkaConfig, KafkaSink
from stream.metrics import Metrics
from stream.model_sync import ModelPublisher, encode_artifact, install_message
from stream.trace_replay import encode
from trainer.train import TrainConfig, train_forecaster

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
MODELS = ("lstm", "dlinear")
TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}
#: short group timings: on tansu a group join waits for them
GROUP = ("--max-poll-interval-ms", "3000", "--session-timeout-ms", "3000")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- models and events ----------------------------------------------------------------------
def _events(rows: int, seed: int) -> list[RequestEvent]:
    df = synthesize(rows, seed=seed)
    cols = (df["Timestamp"], df["Request tokens"], df["Response tokens"], df["Model"])
    return [
        RequestEvent(float(t), int(rq), int(rs), str(m)) for t, rq, rs, m in zip(*cols, strict=True)
    ]


@cache
def _trained(root: str) -> dict[str, Path]:
    """One tiny artifact per model (seq_len 16, 2 epochs), version 1, trained once."""
    evs = _events(1200, seed=7)
    series = [
        request_matrix(
            np.array([e.timestamp_s for e in evs]),
            np.array([e.request_tokens for e in evs]),
            np.array([e.response_tokens for e in evs]),
        )
    ]
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the broker and other services share the cores
    try:
        for model in MODELS:
            cfg = TrainConfig(model=model, seq_len=16, epochs=2, device="cpu", params=TINY[model])
            result = train_forecaster(series, cfg, progress=False)
            out[model] = save_artifact(
                result.forecaster, Path(root) / "v1", preset="test", version=1
            ).path
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def versions(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """``versions(model, n)``: the tiny model saved again as version ``n`` (an ArtifactInfo);
    ``versions.serving_dir`` holds version 1 of both models for a serve instance."""
    root = tmp_path_factory.getbasetemp() / "hot-swap-models"
    root.mkdir(exist_ok=True)
    v1 = _trained(str(root))
    published = tmp_path / "published"
    serving = tmp_path / "serving"
    for model in MODELS:
        fc, _ = load_artifact(v1[model])
        save_artifact(fc, serving, preset="test", version=1)

    def make(model: str, n: int) -> ArtifactInfo:
        fc, _ = load_artifact(v1[model])
        return save_artifact(fc, published, preset="refit", version=n)

    make.serving_dir = serving  # type: ignore[attr-defined]
    return make


def _corrupt_weights(info: ArtifactInfo, version: int) -> bytes:
    """A model-topic message for ``info`` as ``version`` whose weights fail their checksum."""
    body = json.loads(encode_artifact(info))
    meta = {**body["meta"], "version": version, "name": f"corrupt_{info.model}_v{version}"}
    weights = bytearray(base64.b64decode(body["weights_b64"]))
    weights[len(weights) // 2] ^= 0xFF
    return json.dumps({"meta": meta, "weights_b64": base64.b64encode(weights).decode()}).encode()


def _bad_base64(info: ArtifactInfo, version: int) -> bytes:
    meta = {**info.meta, "version": version}
    return json.dumps({"meta": meta, "weights_b64": "not*base64!"}).encode()


def _send(config: KafkaConfig, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    sink = KafkaSink(config)
    try:
        for key, value in messages:
            sink.send(topic, key, value)
        sink.flush(timeout_s=15)
    finally:
        sink.close()


def _publish(config: KafkaConfig, topic: str, *infos: ArtifactInfo) -> None:
    sink = KafkaSink(config)
    try:
        publish = ModelPublisher(sink, topic)
        for info in infos:
            publish(info)
    finally:
        sink.close()


def _read_topic(
    config: KafkaConfig, topic: str, done: Callable[[list[Any]], bool], timeout_s: float
) -> list[Any]:
    """Records of a one-partition topic from the beginning until ``done(records)``."""
    consumer = KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while not done(records) and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=200).values():
                records.extend(msgs)
        return records
    finally:
        consumer.close(autocommit=False)


# -- the services as subprocesses -----------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> Samples:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_metrics(self, ok: Callable[[Samples], bool], timeout_s: float, what: str) -> Samples:
        deadline = time.monotonic() + timeout_s
        last: Samples = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log()}"
            try:
                last = self.metrics()
                if ok(last):
                    return last
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{what} not seen within {timeout_s} s; log:\n{self.log()[-6000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``spawn(name, *argv)``: ``python -m stream.cli *argv`` with its output in a log file;
    stopped (and its log shown on failure) at the end of the test."""
    started: list[Proc] = []

    def start(name: str, *argv: str, metrics_port: int = 0) -> Proc:
        log_path = tmp_path / f"{name}.log"
        cmd = [sys.executable, "-m", "stream.cli", *argv]
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)
        started.append(Proc(proc, log_path, metrics_port))
        return started[-1]

    yield start
    for p in started:
        p.stop()
        print(f"----- {p.log_path.name} -----\n{p.log()[-4000:]}")


def _serve(
    spawn: Callable[..., Proc], name: str, config: KafkaConfig, topic: str, model_dir: Path
) -> Proc:
    port = _free_port()
    return spawn(
        name,
        "serve",
        "--bootstrap-servers",
        config.bootstrap_servers,
        "--input-topic",
        f"{topic}.in",
        "--output-topic",
        f"{topic}.out",
        "--group-id",
        f"{topic}-{name}",
        "--model-dir",
        str(model_dir),
        "--metrics-port",
        str(port),
        "--no-refit",
        "--model-topic",
        f"{topic}.models",
        "--watch-model-dir",
        "0",
        *GROUP,
        metrics_port=port,
    )


def _version(samples: Samples, model: str) -> float | None:
    key = frozenset({("model", model), ("task", "next_request")})
    return samples.get(("reqcast_model_version", key))


def _swaps(samples: Samples, model: str, result: str, reason: str) -> float:
    key = frozenset({("model", model), ("result", result), ("reason", reason)})
    return samples.get(("reqcast_model_swaps_total", key), 0.0)


def _topics(config: KafkaConfig, t: str) -> None:
    """The input and output topics of a test, and its compacted model topic."""
    ensure_topics(config, {f"{t}.in": 1, f"{t}.out": 1})
    ensure_topics(
        config, {f"{t}.models": 1}, configs={f"{t}.models": {"cleanup.policy": "compact"}}
    )


def _model_forecasts(records: list[Any]) -> list[dict[str, Any]]:
    """The forecasts of the served models (not the "best" pseudo-model), in topic order."""
    return [f for f in (json.loads(r.value) for r in records) if f["model"] in MODELS]


def _per_model(count: int) -> Callable[[list[Any]], bool]:
    return lambda records: len(_model_forecasts(records)) >= count


def _at(want: dict[str, int]) -> Callable[[Samples], bool]:
    return lambda s: all(_version(s, m) == v for m, v in want.items())


# -- the tests ------------------------------------------------------------------------------
def test_serve_takes_published_versions_and_rejects_corrupt_ones(
    kafka_config: KafkaConfig, topic_name: str, versions: Any, spawn: Callable[..., Proc]
) -> None:
    t = topic_name
    _topics(kafka_config, t)
    serve = _serve(spawn, "a", kafka_config, t, versions.serving_dir)
    serve.wait_metrics(_at({"lstm": 1, "dlinear": 1}), 30, "version 1 serving")

    # (a) a newer version on the model topic replaces the serving one
    v2 = {m: versions(m, 2) for m in MODELS}
    _publish(kafka_config, f"{t}.models", *v2.values())
    serve.wait_metrics(_at({"lstm": 2, "dlinear": 2}), 20, "version 2 from the model topic")
    events = _events(150, seed=21)
    _send(kafka_config, f"{t}.in", [encode(e) for e in events])
    out = _read_topic(kafka_config, f"{t}.out", _per_model(2 * len(events)), 30)
    forecasts = _model_forecasts(out)
    assert len(forecasts) == 2 * len(events)
    assert {(f["model"], f["model_version"]) for f in forecasts} == {("lstm", 2), ("dlinear", 2)}

    # (c) corrupt messages are rejected, the version stays, the follower carries on
    _send(
        kafka_config,
        f"{t}.models",
        [
            (b"lstm", _bad_base64(v2["lstm"], 9)),
            (b"lstm", _corrupt_weights(v2["lstm"], 9)),
            (b"lstm", b"{not json"),
        ],
    )
    _publish(kafka_config, f"{t}.models", versions("dlinear", 3))  # behind the bad ones
    samples = serve.wait_metrics(_at({"dlinear": 3}), 20, "dlinear version 3")
    assert _version(samples, "lstm") == 2
    assert _swaps(samples, "lstm", "rejected", "load_error") == 1  # the bad checksum
    assert _swaps(samples, "unknown", "rejected", "load_error") == 2  # unreadable messages
    assert _swaps(samples, "lstm", "accepted", "model_topic") == 1
    assert _swaps(samples, "dlinear", "accepted", "model_topic") == 2
    log = serve.log()
    assert "rejected model corrupt_lstm_v9 from the model topic" in log
    assert "weights do not match their checksum" in log
    assert "rejected model message from the model topic: malformed message" in log
    more = _events(40, seed=22)
    _send(kafka_config, f"{t}.in", [encode(e) for e in more])
    total = 2 * (len(events) + len(more))
    out = _read_topic(kafka_config, f"{t}.out", _per_model(total), 30)
    late = _model_forecasts(out)[2 * len(events) :]
    assert len(late) == 2 * len(more)
    assert {(f["model"], f["model_version"]) for f in late} == {("lstm", 2), ("dlinear", 3)}


def test_instance_started_later_loads_the_newest_version(
    kafka_config: KafkaConfig, topic_name: str, versions: Any, spawn: Callable[..., Proc]
) -> None:
    t = topic_name
    _topics(kafka_config, t)
    for n in (2, 3):
        _publish(kafka_config, f"{t}.models", *(versions(m, n) for m in MODELS))
    _send(kafka_config, f"{t}.models", [(b"dlinear", _corrupt_weights(versions("dlinear", 4), 4))])
    _publish(kafka_config, f"{t}.models", versions("lstm", 2))  # an old one replayed: ignored
    serve = _serve(spawn, "late", kafka_config, t, versions.serving_dir)
    samples = serve.wait_metrics(
        lambda s: (
            _at({"lstm": 3, "dlinear": 3})(s)
            and _swaps(s, "dlinear", "rejected", "load_error") == 1
        ),
        30,
        "version 3 from the model topic",
    )
    assert _swaps(samples, "lstm", "rejected", "load_error") == 0
    assert "serving lstm version 3" in serve.log()


def test_trainer_publishes_an_accepted_version(
    kafka_config: KafkaConfig, topic_name: str, tmp_path: Path, spawn: Callable[..., Proc]
) -> None:
    t = topic_name
    ensure_topics(kafka_config, {f"{t}.in": 1})
    events = _events(1500, seed=23)
    _send(kafka_config, f"{t}.in", [encode(e) for e in events])
    model_dir = tmp_path / "trainer-models"
    trainer = spawn(
        "trainer",
        "trainer",
        "--bootstrap-servers",
        kafka_config.bootstrap_servers,
        "--input-topic",
        f"{t}.in",
        "--group-id",
        f"{t}-trainer",
        "--model-topic",
        f"{t}.models",
        "--model-dir",
        str(model_dir),
        "--seq-len",
        "16",
        "--metrics-port",
        "0",
        "--refit-every-events",
        "500",
        "--refit-every-s",
        "0",
        "--refit-window",
        "1500",
        "--refit-min-events",
        "500",
        "--refit-epochs",
        "2",
        "--train-device",
        "cpu",
        "--max-refits",
        "1",
        *GROUP,
    )
    try:
        rc = trainer.proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the trainer did not finish:\n{trainer.log()[-6000:]}")
    log = trainer.log()
    assert rc == 0, log
    assert "lstm: accepted (no_champion)" in log and "dlinear: accepted (no_champion)" in log
    saved = {a.model: a.version for a in list_artifacts(model_dir)}
    assert saved == {"lstm": 1, "dlinear": 1}

    records = _read_topic(kafka_config, f"{t}.models", lambda r: len(r) >= 2, 15)
    assert sorted(r.key for r in records) == [b"dlinear", b"lstm"]
    # what was published installs in a fresh serving slot like any other version
    slots: dict[str, ModelSlot[Forecaster]] = {m: ModelSlot(m) for m in MODELS}
    metrics = Metrics(CollectorRegistry())
    assert all(install_message(r.value, slots, metrics) for r in records)
    assert {m: s.version for m, s in slots.items()} == {"lstm": 1, "dlinear": 1}
    meta = json.loads(records[0].value)["meta"]
    assert meta["preset"] == "refit" and meta["guard"]["reason"] == "no_champion"
    assert meta["spec"]["seq_len"] == 16


def _hostile(info: ArtifactInfo, version: int) -> list[tuple[bytes | None, bytes]]:
    """Model-topic messages that once stopped the follower or slipped through: an
    ``Infinity`` version, deep nesting, a NaN scaler, a spec of 16,000 hidden units."""
    body = json.loads(encode_artifact(info))
    meta = {**body["meta"], "version": version}

    def with_meta(**changes: Any) -> bytes:
        return json.dumps({**body, "meta": {**meta, **changes}}).encode()

    spec = {**meta["spec"], "params": {"hidden_size": 16000, "num_layers": 1}}
    return [
        (b"lstm", with_meta(version=float("inf"))),
        (b"lstm", b'{"meta": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        (b"lstm", with_meta(scaler={"mean": [float("nan")] * 3, "std": [1.0] * 3})),
        (b"lstm", with_meta(spec=spec)),
    ]


def test_hostile_models_are_rejected_and_serving_goes_on(
    kafka_config: KafkaConfig, topic_name: str, versions: Any, spawn: Callable[..., Proc]
) -> None:
    """A bad meta.json in the model dir and bad messages on the model topic: serve starts,
    rejects each once, installs the next good version, and so does an instance that reads
    the topic from the beginning later (issue 13, items 4 to 6)."""
    import shutil

    t = topic_name
    _topics(kafka_config, t)
    serving: Path = versions.serving_dir
    good = next(p for p in serving.iterdir() if "_lstm_" in p.name)
    bad = serving / "test_lstm_20990101_000000"
    shutil.copytree(good, bad)
    text = (bad / "meta.json").read_text().replace('"version": 1', '"version": Infinity')
    (bad / "meta.json").write_text(text)
    serve = _serve(spawn, "a", kafka_config, t, serving)
    samples = serve.wait_metrics(_at({"lstm": 1, "dlinear": 1}), 30, "version 1 serving")
    assert _swaps(samples, "lstm", "rejected", "load_error") == 1  # the bad meta.json
    assert f"rejected model {bad.name}: " in serve.log()

    _send(kafka_config, f"{t}.models", _hostile(versions("lstm", 2), 9))
    _publish(kafka_config, f"{t}.models", versions("lstm", 3))  # behind the bad ones
    samples = serve.wait_metrics(_at({"lstm": 3}), 30, "lstm version 3 after the bad messages")
    assert _swaps(samples, "unknown", "rejected", "load_error") == 2  # Infinity, nesting
    assert _swaps(samples, "lstm", "rejected", "load_error") == 1 + 2  # NaN scaler, 16,000
    assert "version must be an integer" in serve.log()
    assert "hidden_size must be an integer in [1, 4096], got 16000" in serve.log()
    assert "Traceback" not in serve.log()

    late = _serve(spawn, "late", kafka_config, t, serving)
    samples = late.wait_metrics(_at({"lstm": 3, "dlinear": 1}), 30, "the late instance at 3")
    assert "Traceback" not in late.log()
    events = _events(30, seed=24)
    _send(kafka_config, f"{t}.in", [encode(e) for e in events])
    out = _read_topic(kafka_config, f"{t}.out", _per_model(2 * len(events)), 30)
    for f in _model_forecasts(out):
        assert f["model_version"] == (3 if f["model"] == "lstm" else 1)


# -- load models refitted while serving -------------------------------------------------------
LOAD_BIN_S = 10.0


@cache
def _trained_load(root: str) -> Path:
    """A tiny DLinear load model (10 s bins, 3 bins ahead, window 8), version 1 (its
    metadata has ``load.bin_s``)."""
    from predictor.load import bin_load

    evs = _events(600, seed=41)
    _, series = bin_load(
        np.array([e.timestamp_s for e in evs]),
        np.array([e.request_tokens for e in evs]),
        np.array([e.response_tokens for e in evs]),
        LOAD_BIN_S,
    )
    cfg = TrainConfig.for_model(
        "dlinear",
        task="load",
        seq_len=8,
        horizon=3,
        epochs=1,
        device="cpu",
        params={**TINY["dlinear"], "level_windows": [2, 4, 8]},
    )
    result = train_forecaster([series], cfg, progress=False)
    return save_artifact(
        result.forecaster,
        Path(root) / "load-v1",
        preset="test",
        task="load",
        version=1,
        extra={"load": {"bin_s": LOAD_BIN_S, "horizon_bins": 3}},
    ).path


def _load_version(samples: Samples, model: str) -> float | None:
    return samples.get(("reqcast_model_version", frozenset({("model", model), ("task", "load")})))


def test_load_refit_reaches_a_second_instance_while_replaying(
    kafka_config: KafkaConfig,
    topic_name: str,
    versions: Any,
    spawn: Callable[..., Proc],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Instance A refits its load model during a continuous replay (in its training child
    process), the guard accepts it, A publishes it; instance B (``--no-refit``) installs it
    from the model topic between micro-batches; load forecast versions never step back."""
    import shutil
    import threading

    t = topic_name
    _topics(kafka_config, t)
    root = tmp_path_factory.getbasetemp() / "hot-swap-models"
    root.mkdir(exist_ok=True)
    load_v1 = _trained_load(str(root))
    dirs = {}
    for name in ("a", "b"):
        dirs[name] = tmp_path / f"models-{name}"
        shutil.copytree(versions.serving_dir, dirs[name])
        fc, meta = load_artifact(load_v1)
        save_artifact(
            fc, dirs[name], preset="load", task="load", version=1, extra={"load": meta["load"]}
        )
    load_flags = ("--bin-s", str(LOAD_BIN_S), "--horizons", "1", "3")
    port_a, port_b = _free_port(), _free_port()
    common = (
        "--bootstrap-servers",
        kafka_config.bootstrap_servers,
        "--input-topic",
        f"{t}.in",
        "--model-topic",
        f"{t}.models",
        "--watch-model-dir",
        "0",
        *load_flags,
        *GROUP,
    )
    a = spawn(
        "a",
        "serve",
        *common,
        "--output-topic",
        f"{t}.out-a",
        "--group-id",
        f"{t}-a",
        "--model-dir",
        str(dirs["a"]),
        "--metrics-port",
        str(port_a),
        "--refit-every-s",
        "0",  # next-request models: never (this test is about the load models)
        "--refit-load-every-s",
        "1",
        "--refit-load-window",
        "300",
        "--refit-epochs",
        "1",
        "--refit-tolerance",
        "1e9",  # the guard's comparison is unit-tested; here any sound refit swaps
        "--train-device",
        "cpu",
        metrics_port=port_a,
    )
    b = spawn(
        "b",
        "serve",
        *common,
        "--output-topic",
        f"{t}.out-b",
        "--group-id",
        f"{t}-b",
        "--model-dir",
        str(dirs["b"]),
        "--metrics-port",
        str(port_b),
        "--no-refit",
        metrics_port=port_b,
    )
    for p in (a, b):
        p.wait_metrics(lambda s: _load_version(s, "dlinear") == 1, 30, "load version 1 serving")

    stop = threading.Event()
    events = _events(20_000, seed=42)

    def replay() -> None:  # a continuous stream, 40 events every 0.1 s, until told to stop
        sink = KafkaSink(kafka_config)
        try:
            for i in range(0, len(events), 40):
                if stop.is_set():
                    break
                for e in events[i : i + 40]:
                    sink.send(f"{t}.in", *encode(e))
                sink.flush(timeout_s=15)
                stop.wait(0.1)
        finally:
            sink.close()

    feeder = threading.Thread(target=replay, daemon=True)
    feeder.start()
    try:
        samples_b = b.wait_metrics(
            lambda s: (_load_version(s, "dlinear") or 0) >= 2, 120, "B at load version 2"
        )
        assert _swaps(samples_b, "dlinear", "accepted", "model_topic") >= 1
        assert _version(samples_b, "lstm") == 1 and _version(samples_b, "dlinear") == 1
        at = _load_version(samples_b, "dlinear") or 0
        time.sleep(2.0)  # a few more micro-batches after the swap
    finally:
        stop.set()
        feeder.join(30)
    samples_a = a.metrics()
    assert (_load_version(samples_a, "dlinear") or 0) >= at
    assert _swaps(samples_a, "dlinear", "accepted", "no_worse") >= 1
    assert "refit load dlinear: accepted" in a.log()
    assert "Traceback" not in a.log() + b.log()
    # next-request versions untouched: the load version went to the load slot only
    assert _version(a.metrics(), "lstm") == 1

    def load_forecasts(records: list[Any]) -> list[dict[str, Any]]:
        return [
            f
            for f in (json.loads(r.value) for r in records)
            if f.get("kind") == "load" and f["model"] == "dlinear"
        ]

    out = _read_topic(
        kafka_config,
        f"{t}.out-b",
        lambda r: any(f["model_version"] >= 2 for f in load_forecasts(r)),
        30,
    )
    forecasts = load_forecasts(out)
    seen = [f["model_version"] for f in forecasts]
    assert seen and seen[0] == 1 and max(seen) >= 2, seen
    assert seen == sorted(seen), "a load version went backwards"
    models = _read_topic(kafka_config, f"{t}.models", lambda r: len(r) >= 1, 15)
    metas = [json.loads(r.value)["meta"] for r in models]
    # dlinear's refits, and (no cold start) a first lstm load model for its empty slot
    assert ("dlinear", "load") in {(m["model"], m["task"]) for m in metas}
    assert all(m["task"] == "load" for m in metas)
    assert all(m["load"]["bin_s"] == LOAD_BIN_S for m in metas)
