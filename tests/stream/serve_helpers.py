"""Helpers for the ``reqcast serve`` tests against a real broker: tiny models, the
service as a real subprocess, plain kafka-python readers of its output topics, and
``/metrics`` scraping.

Nothing here goes through the code under test except :func:`train_tiny_models`,
which uses the trainer to make artifacts the service can load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2
from prometheus_client.parser import text_string_to_metric_families

from predictor.events import RequestEvent
from stream.kafka_admin import ensure_topics
from stream.kafka_io import KafkaConfig

REPO = Path(__file__).resolve().parents[2]
#: the models trained and served
MODELS = ("lstm", "dlinear")
#: the forecasts published for every valid event: each model's, and ``best`` (per quantity,
#: the model with the lower rolling error)
PUBLISHED = (*MODELS, "best")
#: group timings short enough for tansu, where a group join waits for them
GROUP_FLAGS = ("--max-poll-interval-ms", "3000", "--session-timeout-ms", "3000")


# -- models ---------------------------------------------------------------------------------
def train_tiny_models(model_dir: Path, rows: int = 600, seq_len: int = 16) -> None:
    """Save a tiny LSTM (hidden 8) and DLinear artifact, version 1 each, trained 2 epochs on a
    synthetic BurstGPT-like trace."""
    import torch

    from predictor.artifacts import save_artifact
    from predictor.streams import stream_series
    from predictor.synth import synthesize, write_trace
    from predictor.traces import load_trace
    from trainer.train import TrainConfig, train_forecaster

    csv = write_trace(synthesize(rows, seed=3), model_dir / "train.csv")
    df, _ = load_trace(csv)
    series = list(stream_series(df, "model", min_rows=seq_len + 2).values())
    params = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {}}
    # one thread: a tiny LSTM is many small ops, and on a busy machine a second torch thread
    # spinning for a core makes it 10-40 times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model in MODELS:
            cfg = TrainConfig(
                model=model,
                seq_len=seq_len,
                epochs=2,
                batch_size=64,
                device="cpu",
                params=params[model],
            )
            result = train_forecaster(series, cfg, progress=False)
            save_artifact(result.forecaster, model_dir, preset="test", extra=result.metadata())
    finally:
        torch.set_num_threads(threads)
    csv.unlink()


# -- events ---------------------------------------------------------------------------------
def partition_of(key: bytes, partitions: int) -> int:
    """Where kafka-python's default partitioner puts ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def stream_names(partitions: int, per_partition: int = 2) -> list[str]:
    """Stream names whose keys land ``per_partition`` on each of ``partitions`` partitions."""
    names: list[str] = []
    taken: Counter[int] = Counter()
    i = 0
    while len(names) < partitions * per_partition:
        name = f"svc-{i}"
        p = partition_of(name.encode(), partitions)
        if taken[p] < per_partition:
            taken[p] += 1
            names.append(name)
        i += 1
    return names


def synthetic_events(rows: int, names: list[str], seed: int = 0) -> list[RequestEvent]:
    """A synthetic BurstGPT-like trace spread over the streams ``names`` (round robin)."""
    from predictor.synth import synthesize

    df = synthesize(rows, seed=seed)
    return [
        RequestEvent(float(ts), int(rq), int(rs), names[i % len(names)], "API log", None)
        for i, (ts, rq, rs) in enumerate(
            zip(df["Timestamp"], df["Request tokens"], df["Response tokens"], strict=True)
        )
    ]


def create_topics(config: KafkaConfig, input_topic: str, partitions: int, *outputs: str) -> None:
    """The input topic with ``partitions`` partitions, and one-partition output topics."""
    ensure_topics(config, {input_topic: partitions, **dict.fromkeys(outputs, 1)})


def produce_raw(
    config: KafkaConfig, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` pairs with a plain producer, one by one; their (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, acks="all")
    try:
        out = []
        for key, value in messages:
            meta = producer.send(topic, key=key, value=value).get(timeout=15)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        producer.close(timeout=5)


# -- reading topics -------------------------------------------------------------------------
class TopicReader:
    """Every record of a topic from the beginning, with manual assignment (no group)."""

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            auto_offset_reset="earliest",
            reconnect_backoff_max_ms=1000,
        )
        parts: set[int] | None = None
        deadline = time.monotonic() + 15
        while not parts and time.monotonic() < deadline:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.1)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)

    def poll(self, timeout_s: float = 0.2) -> list[Any]:
        got = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        new = [m for msgs in got.values() for m in msgs]
        self.records.extend(new)
        return new

    def read_until(
        self, done: Callable[[list[Any]], bool], timeout_s: float, idle_s: float = 0.0
    ) -> list[Any]:
        """Poll until ``done(records)`` (then ``idle_s`` more of nothing new) or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.records):
            self.poll()
        quiet_until = time.monotonic() + idle_s
        while time.monotonic() < min(quiet_until, deadline):
            if self.poll():
                quiet_until = time.monotonic() + idle_s
        return self.records

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in self.records]

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def forecast_keys(forecasts: Iterable[dict[str, Any]]) -> Counter[tuple[int, int, str]]:
    """How many next-request forecasts there are per (source partition, source offset,
    model): one per event and model. (Load forecasts, one per closed bin, among them the
    ``ensemble`` published even without load models, are checked in the load tests.)"""
    return Counter(
        (f["source"]["partition"], f["source"]["offset"], f["model"])
        for f in forecasts
        if f.get("kind", "next_request") == "next_request"
    )


def missing_forecasts(
    forecasts: Iterable[dict[str, Any]], sources: Iterable[tuple[int, int]]
) -> list[tuple[int, int, str]]:
    """(partition, offset, model) of every source event lacking one of its forecasts."""
    have = set(forecast_keys(forecasts))
    return [(p, o, m) for p, o in sources for m in PUBLISHED if (p, o, m) not in have]


# -- the service as a subprocess -------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """This environment without ``REQCAST_*`` settings (flags say everything), one torch
    thread per process (the tests run several services on two cores), unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServeProcess:
    """``python -m stream.cli serve`` with its output in a log file and /metrics on a free port."""

    name: str
    log_dir: Path
    bootstrap: str
    input_topic: str
    output_topic: str
    group: str
    model_dir: Path
    extra: tuple[str, ...] = ()
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"serve-{self.name}.log"

    def start(self) -> ServeProcess:
        argv = [
            sys.executable,
            "-m",
            "stream.cli",
            "serve",
            "--bootstrap-servers",
            self.bootstrap,
            "--input-topic",
            self.input_topic,
            "--output-topic",
            self.output_topic,
            "--group-id",
            self.group,
            "--model-dir",
            str(self.model_dir),
            "--metrics-port",
            str(self.metrics_port),
            # no refit, and a model topic of this test's own: the served versions stay put
            "--no-refit",
            "--model-topic",
            f"{self.input_topic}.models",
            *GROUP_FLAGS,
            *self.extra,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def assignments(self) -> list[list[int]]:
        """Every input assignment the service warmed its windows for, in order (from its log)."""
        return [
            [int(p) for p in re.findall(r"\d+", m)]
            for m in re.findall(r"records of partitions \[([\d, ]*)\]", self.log())
        ]

    def metrics(
        self, timeout_s: float = 2.0
    ) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """One scrape of /metrics: (sample name, labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_for_metrics(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.alive(), f"serve {self.name} exited with {self.proc and self.proc.poll()}"
            try:
                self.metrics(timeout_s=0.5)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"serve {self.name}: no /metrics within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no last commit, no leaving the group."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the whole process stalls (heartbeats too), as in a long GC or VM pause."""
        assert self.proc is not None and self.alive()
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case it was paused
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class Services:
    """The serve processes of one test; :func:`services` stops them all."""

    def __init__(self, log_dir: Path, bootstrap: str, model_dir: Path) -> None:
        self.log_dir, self.bootstrap, self.model_dir = log_dir, bootstrap, model_dir
        self.started: list[ServeProcess] = []

    def start(
        self, name: str, input_topic: str, output_topic: str, group: str, *extra: str
    ) -> ServeProcess:
        proc = ServeProcess(
            name,
            self.log_dir,
            self.bootstrap,
            input_topic,
            output_topic,
            group,
            self.model_dir,
            extra=extra,
        )
        self.started.append(proc)
        return proc.start()


@contextmanager
def services(log_dir: Path, bootstrap: str, model_dir: Path) -> Iterator[Services]:
    """A :class:`Services`; on the way out every process is stopped, and if the block
    failed their logs are printed (pytest shows them with the failure)."""
    group = Services(log_dir, bootstrap, model_dir)
    try:
        yield group
    except BaseException:
        for s in group.started:
            s.stop(timeout_s=3)
            print(f"----- log of serve {s.name} ({s.log_path}) -----\n{s.log()[-20000:]}")
        raise
    finally:
        for s in group.started:
            s.stop()
