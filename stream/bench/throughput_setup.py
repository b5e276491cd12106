"""``reqcast bench stream``, the harness: the run's topics, its events, its models.

:class:`Topics` names every topic of one run (``reqcast-bench-<run id>-*``);
:func:`make_events` and :func:`event_chunks` make the synthetic BurstGPT-like events
(:mod:`predictor.synth`) and :func:`produce` / :class:`Producer` write them to a topic,
paced or not; :func:`ensure_models` trains tiny models into an empty ``--model-dir``
(metadata ``preset: bench-tiny``); :func:`delete_topics` removes the topics at the end.
What is measured is in :mod:`stream.bench.throughput_pipelines`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from predictor.errors import ConfigError
from predictor.events import RequestEvent
from predictor.tasks import NEXT_REQUEST

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Topics:
    """Every topic of one bench run."""

    prefix: str

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    @property
    def backlog(self) -> str:
        return self.name("in")

    def out(self, pipeline: str, phase: str) -> str:
        return self.name(f"{pipeline}-{phase}-out")

    def latency_in(self, pipeline: str) -> str:
        return self.name(f"{pipeline}-latency-in")

    @property
    def memory_in(self) -> str:
        return self.name("memory-in")

    @property
    def models(self) -> str:
        """The serve side's model topic (its refits publish there, its follower reads it)."""
        return self.name("models")

    @property
    def dlq(self) -> str:
        return self.name("dlq")

    def inputs(self) -> list[str]:
        return [self.backlog, self.latency_in("echo"), self.latency_in("serve")]

    def outputs(self) -> list[str]:
        return [self.out(p, ph) for p in ("echo", "serve") for ph in ("throughput", "latency")] + [
            self.out("serve", "memory"),
            self.dlq,
        ]


def ensure_models(model_dir: str, names: list[str], seed: int) -> dict[str, Any]:
    """The newest artifact of each model, after training tiny ones if the directory has none."""
    from predictor.artifacts import list_artifacts

    found = {n: list_artifacts(model_dir, n, NEXT_REQUEST) for n in names}
    trained = False
    if not any(found.values()):
        _train_tiny(model_dir, names, seed)
        found = {n: list_artifacts(model_dir, n, NEXT_REQUEST) for n in names}
        trained = True
        if not any(found.values()):
            raise ConfigError(f"could not train models into {model_dir!r}; see the log above")
    out: dict[str, Any] = {}
    for name, infos in found.items():
        if infos:
            info = infos[-1]
            spec = info.meta.get("spec", {})
            out[name] = {
                "version": info.version,
                "artifact": info.path.name,
                "seq_len": spec.get("seq_len") if isinstance(spec, dict) else None,
                "trained_by_bench": trained,
            }
    return out


def _train_tiny(model_dir: str, names: list[str], seed: int) -> None:
    import torch

    from stream.cliutil import load_from_args
    from trainer.offline import train_models
    from trainer.presets import get_preset

    log.warning("no models in %s: training tiny ones for the benchmark (a few seconds)", model_dir)
    df, _, _ = load_from_args(argparse.Namespace(data_path=None), synth_rows=2_000, synth_seed=seed)
    preset = dataclasses.replace(
        get_preset("cpu").override(
            epochs=1, seq_len=16, batch_size=64, sample_size=None, patience=1, models=tuple(names)
        ),
        name="bench-tiny",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # more threads than free cores only slow this small model down
    try:
        report = train_models(df, preset, model_dir, seed=seed, progress=False)
    finally:
        torch.set_num_threads(threads)
    for o in report.outcomes:
        if o.error:
            log.error("tiny %s model failed: %s", o.model, o.error)


def make_events(
    n: int, seed: int, start_s: float = 0.0, trace_rate: float | None = None
) -> list[RequestEvent]:
    """``n`` synthetic BurstGPT-like request events, in time order.

    With ``trace_rate`` (events per second of trace time) the timestamps are compressed
    about ``start_s`` so that the events arrive at that mean rate, gaps kept in proportion
    (bursts stay bursts): the synthetic week runs at about 0.3 requests/s, and replayed as
    a backlog its load bins would close every few events, as they never do for a service
    taking thousands of requests a second.
    """
    from predictor.synth import synthesize

    df = synthesize(n, seed=seed, start_s=start_s)
    stamps = df["Timestamp"].to_numpy(dtype=np.float64)
    if trace_rate and n > 1 and stamps[-1] > stamps[0]:
        scale = (n - 1) / (trace_rate * (stamps[-1] - stamps[0]))
        stamps = start_s + (stamps - start_s) * scale
    return [
        RequestEvent(float(ts), int(req), int(resp), str(model), str(log_type))
        for ts, req, resp, model, log_type in zip(
            stamps.tolist(),
            df["Request tokens"].tolist(),
            df["Response tokens"].tolist(),
            df["Model"].tolist(),
            df["Log Type"].tolist(),
            strict=True,
        )
    ]


def event_chunks(
    total: int, seed: int, chunk: int = 100_000, trace_rate: float | None = None
) -> Iterator[RequestEvent]:
    """``total`` events made ``chunk`` at a time (for the memory check), time order kept."""
    start, made, part = 0.0, 0, 0
    while made < total:
        evs = make_events(min(chunk, total - made), seed + part, start, trace_rate)
        start = evs[-1].timestamp_s + (1.0 / trace_rate if trace_rate else 1.0)
        made += len(evs)
        part += 1
        yield from evs


def produce(
    kafka: Any,
    topic: str,
    events: Iterable[RequestEvent],
    rate: float | None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Replay ``events`` onto ``topic`` (at ``rate``), flushed; how many and how fast."""
    from stream.kafka_io import KafkaSink
    from stream.trace_replay import replay

    sink = KafkaSink(kafka)
    started = time.monotonic()
    try:
        sent = replay(events, sink, topic, rate=rate, progress=False, stop=stop)
    finally:
        sink.close()
    elapsed = time.monotonic() - started
    return {"events": sent, "elapsed_s": elapsed, "events_per_s": sent / max(elapsed, 1e-9)}


class Producer(threading.Thread):
    """:func:`produce` on a thread; ``result`` or ``error`` once it ends."""

    def __init__(
        self, kafka: Any, topic: str, events: Iterable[RequestEvent], rate: float | None
    ) -> None:
        super().__init__(name=f"bench-produce-{topic}", daemon=True)
        self.kafka, self.topic, self.events, self.rate = kafka, topic, events, rate
        self.stop = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = produce(self.kafka, self.topic, self.events, self.rate, self.stop)
        except BaseException as exc:  # reported by the caller
            self.error = exc


def delete_topics(kafka: Any, names: list[str]) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(**kafka.client_kwargs())
    except KafkaError as exc:
        log.warning("could not delete the bench topics: %s", exc)
        return
    try:
        admin.delete_topics(names, timeout_ms=10_000)
    except KafkaError as exc:
        log.warning("could not delete the bench topics: %s", exc)
    finally:
        admin.close()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages of the machine (other work skews the figures)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def kafka_python_version() -> str:
    import kafka

    return str(getattr(kafka, "__version__", "?"))
