"""``reqcast bench stream``: the serving loop against a bare Kafka echo, in one run.

Both pipelines read the same synthetic BurstGPT-like events (:mod:`predictor.synth`)
from the same broker, each in its own consumer group and its own process (so the
bench's producer and its measuring consumer never share an interpreter with them):

``echo``
    a bare kafka-python consume-decode-produce loop: ``KafkaConsumer.poll`` ->
    ``json.loads`` -> ``json.dumps`` -> ``KafkaProducer.send`` of one message per
    event, then ``flush`` and a synchronous commit per batch. It polls with the
    serve loop's batch size and timeout and uses the same consumer and producer
    settings as :class:`~stream.kafka_io.KafkaSource` / :class:`~stream.kafka_io.KafkaSink`.
    It adds the input's partition and offset to each message (``"source"``), as a
    forecast does, so its latency can be measured the same way.
``serve``
    the real serving loop, :class:`~stream.service.ForecastService` over
    ``KafkaSource`` and :class:`~stream.kafka_batch.BatchKafkaSink` with the models of
    ``--model-dir``, built as ``reqcast serve`` builds it (window warm-up on assignment
    included). It publishes one forecast per model and event plus the ``best`` one
    (3 with lstm and dlinear), so it writes three times as many messages as the echo.

Figures, all measured here:

throughput
    the events are produced first (a backlog on a fresh topic with ``--partitions``
    partitions); each pipeline then drains it. events/s = events / (time from the
    first polled batch to the acknowledgement and commit of the last), taken in the
    pipeline's process; start-up, model loading and the group join are excluded.
latency
    each pipeline gets a fresh topic, and once it has joined its group the same
    events are produced at ``--rate`` events/s (as fast as possible without it) by a
    producer thread while it consumes. A group-less consumer of the output topic, in a
    process of its own (:mod:`stream.bench.throughput_worker`), notes when each output
    arrives (every output: three per event for serve); latency = that time minus the input
    record's Kafka timestamp (set by the producer when it sent the event, ms
    resolution), matched through the output's ``source`` partition and offset.
peak RSS
    the peak resident set size (``VmHWM``) of each pipeline's process at its end.
memory (``--memory-check``)
    a fresh serve process handles ``--memory-events`` events (produced as fast as
    possible while it consumes); its resident set size is read from
    ``/proc/self/statm`` after every batch; the figure after ``--memory-baseline``
    events (default 100,000), at every further multiple of it and at the end is the
    median over the last 21 batches (one reading can catch the allocator still holding
    a batch's freed buffers, which is noise of +-5 % here, not growth). The default of 300,000 events keeps
    the check to a few minutes on a small machine (serve handles a few thousand events
    a second there); the design's target is set at ``--memory-events 1000000``.

Targets (docs/design.md, "Performance targets"): serve/echo throughput >= 0.7, serve/echo
p99 latency <= 1.5 at 5,000 events/s, RSS after 1,000,000 events within 10 % of the
RSS after 100,000. The machine's cores are shared with the broker, the bench's
producer and the measuring consumer; the table says how many there are.

The bench creates topics named ``reqcast-bench-<run id>-*`` and deletes them at the
end (``--keep-topics`` keeps them). Without models in ``--model-dir`` it trains tiny
ones there first (a few seconds; their metadata says ``preset: bench-tiny``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from predictor.errors import ConfigError, ReqcastError
from predictor.events import RequestEvent
from predictor.tasks import NEXT_REQUEST
from stream.bench.throughput_worker import BACKGROUND_SUFFIX, LINE_PREFIX
from stream.cliutil import add_flag, add_kafka_flags, check_torch_threads, kafka_config

log = logging.getLogger(__name__)

#: models served when ``--models`` is not given
DEFAULT_MODELS = ("lstm", "dlinear")
TARGET_THROUGHPUT_RATIO = 0.7
TARGET_P99_RATIO = 1.5
TARGET_P99_RATE = 5_000.0
TARGET_MEMORY_GROWTH = 0.10


class BenchError(ReqcastError):
    """A pipeline of the benchmark failed or did not finish in time."""


# -- command line ---------------------------------------------------------------------------
def add_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Throughput, event-to-forecast latency and memory of the serving loop, against a "
        "bare kafka-python consume-decode-produce echo on the same broker and events."
    )
    add_kafka_flags(p)
    add_flag(p, "--events", type=int, default=100_000, help="events per measurement")
    add_flag(
        p,
        "--rate",
        type=float,
        help="events/s of the paced production of the latency run (default: as fast as possible)",
    )
    add_flag(
        p, "--model-dir", default="models", help="models served (tiny ones are trained if none)"
    )
    add_flag(p, "--models", nargs="+", default=list(DEFAULT_MODELS), help="models to serve")
    add_flag(p, "--partitions", type=int, default=2, help="partitions of the input topics (1-4)")
    add_flag(p, "--batch-max", type=int, default=500, help="most events per micro-batch (both)")
    add_flag(p, "--seed", type=int, default=0, help="seed of the synthetic events")
    add_flag(
        p,
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads of the serve process (as `reqcast serve --torch-threads`, whose "
        "default is 1; 0: torch's default)",
    )
    add_flag(
        p,
        "--compression",
        default="none",
        choices=["none", "gzip"],
        help="codec of serve's forecast batches (as `reqcast serve --compression`)",
    )
    add_flag(p, "--json", help="write the results as JSON to this file", env=False)
    add_flag(
        p,
        "--memory-check",
        action="store_true",
        help="also measure serve's RSS after --memory-baseline and --memory-events events",
    )
    add_flag(
        p,
        "--memory-events",
        type=int,
        default=300_000,
        help="events of the memory check (the design's target is set at 1000000)",
    )
    add_flag(
        p,
        "--memory-baseline",
        type=int,
        default=100_000,
        help="events after which the memory check takes its reference RSS",
    )
    add_flag(
        p,
        "--timeout",
        type=float,
        help="seconds each measurement may take (default: 120 + 4 ms per event)",
    )
    add_flag(p, "--keep-topics", action="store_true", help="do not delete the bench topics")


@dataclasses.dataclass(frozen=True)
class _Topics:
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
    def dlq(self) -> str:
        return self.name("dlq")

    def inputs(self) -> list[str]:
        return [self.backlog, self.latency_in("echo"), self.latency_in("serve")]

    def outputs(self) -> list[str]:
        return [self.out(p, ph) for p in ("echo", "serve") for ph in ("throughput", "latency")] + [
            self.out("serve", "memory"),
            self.dlq,
        ]


def _check(args: argparse.Namespace) -> None:
    if args.events < 1:
        raise ConfigError("--events must be at least 1")
    if args.rate is not None and not (math.isfinite(args.rate) and args.rate > 0):
        raise ConfigError(f"--rate must be a positive number, got {args.rate}")
    if not 1 <= args.partitions <= 4:
        raise ConfigError("--partitions must be between 1 and 4")
    if args.batch_max < 1:
        raise ConfigError("--batch-max must be positive")
    if args.memory_check and not 1 <= args.memory_baseline < args.memory_events:
        raise ConfigError("--memory-baseline must be at least 1 and below --memory-events")
    check_torch_threads(args.torch_threads)
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError("--timeout must be positive")
    from trainer.offline import check_models

    check_models(args.models)


def run(args: argparse.Namespace) -> int:
    from stream.kafka_admin import ensure_topics, wait_for_broker

    _check(args)
    kafka = kafka_config(args)
    wait_for_broker(kafka, timeout_s=30)
    models = _ensure_models(args.model_dir, args.models, args.seed)
    topics = _Topics(f"reqcast-bench-{uuid.uuid4().hex[:8]}")
    created = {t: args.partitions for t in topics.inputs()}
    created.update({t: 1 for t in topics.outputs()})
    if args.memory_check:
        created[topics.memory_in] = args.partitions
    ensure_topics(kafka, created)
    timeout = args.timeout or 120.0 + args.events / 250.0
    report: dict[str, Any] = {
        "benchmark": "stream",
        "config": {
            "bootstrap_servers": kafka.bootstrap_servers,
            "events": args.events,
            "rate_events_per_s": args.rate,
            "partitions": args.partitions,
            "batch_max": args.batch_max,
            "seed": args.seed,
            "torch_threads": args.torch_threads or None,
            "compression": args.compression,
            "model_dir": str(args.model_dir),
            "models": models,
            "topics_prefix": topics.prefix,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": _load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "kafka_python": _kafka_python_version(),
            # without it kafka-python computes record CRCs in pure Python (slow)
            "crc32c_installed": importlib.util.find_spec("crc32c") is not None,
        },
    }
    try:
        events = _events(args.events, args.seed)
        log.info("producing %d events to %s", len(events), topics.backlog)
        report["produce"] = _produce(kafka, topics.backlog, events, rate=None)
        for pipeline in ("echo", "serve"):
            report[pipeline] = _run_pipeline(pipeline, args, kafka, topics, events, timeout)
        report["ratios"] = _ratios(report["echo"], report["serve"])
        if args.memory_check:
            report["memory"] = _memory_check(args, kafka, topics)
        report["targets"] = _targets(report, args.rate)
    finally:
        if not args.keep_topics:
            _delete_topics(kafka, sorted(created))
    report["config"]["load_average_at_end"] = _load_average()
    print(render_table(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


# -- preparation ----------------------------------------------------------------------------
def _ensure_models(model_dir: str, names: list[str], seed: int) -> dict[str, Any]:
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


def _events(n: int, seed: int, start_s: float = 0.0) -> list[RequestEvent]:
    """``n`` synthetic BurstGPT-like request events, in time order."""
    from predictor.synth import synthesize

    df = synthesize(n, seed=seed, start_s=start_s)
    return [
        RequestEvent(float(ts), int(req), int(resp), str(model), str(log_type))
        for ts, req, resp, model, log_type in zip(
            df["Timestamp"].tolist(),
            df["Request tokens"].tolist(),
            df["Response tokens"].tolist(),
            df["Model"].tolist(),
            df["Log Type"].tolist(),
            strict=True,
        )
    ]


def _event_chunks(total: int, seed: int, chunk: int = 100_000) -> Iterator[RequestEvent]:
    """``total`` events made ``chunk`` at a time (for the memory check), time order kept."""
    start, made, part = 0.0, 0, 0
    while made < total:
        evs = _events(min(chunk, total - made), seed + part, start_s=start)
        start = evs[-1].timestamp_s + 1.0
        made += len(evs)
        part += 1
        yield from evs


def _produce(
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


class _Producer(threading.Thread):
    """:func:`_produce` on a thread; ``result`` or ``error`` once it ends."""

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
            self.result = _produce(self.kafka, self.topic, self.events, self.rate, self.stop)
        except BaseException as exc:  # reported by the caller
            self.error = exc


# -- one pipeline ---------------------------------------------------------------------------
class _Worker:
    """A pipeline process: takes its plan as JSON on stdin, reports JSON lines on stdout."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.name = plan["mode"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.bench.throughput_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        self.proc.stdin.write(json.dumps(plan))
        self.proc.stdin.close()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith(LINE_PREFIX):
                self._lines.put(json.loads(line[len(LINE_PREFIX) :]))
        self._lines.put(None)

    def expect(self, kind: str, phase: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(
                    f"the {self.name} pipeline did not report {kind} of {phase} within "
                    f"{timeout_s:.0f} s (see --timeout)"
                ) from None
            if msg is None:
                code = self.proc.wait()
                raise BenchError(f"the {self.name} pipeline exited with status {code} in {phase}")
            if msg.get("type") == "error":
                raise BenchError(f"the {self.name} pipeline failed in {phase}: {msg['message']}")
            if msg.get("type") == kind and msg.get("phase") == phase:
                return msg

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _plan(
    mode: str, args: argparse.Namespace, kafka: Any, phases: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "mode": mode,
        "kafka": dataclasses.asdict(kafka),
        "batch_max": args.batch_max,
        "model_dir": str(args.model_dir),
        "models": list(args.models),
        "torch_threads": args.torch_threads,
        "compression": args.compression,
        "phases": phases,
    }


def _run_pipeline(
    pipeline: str,
    args: argparse.Namespace,
    kafka: Any,
    topics: _Topics,
    events: list[RequestEvent],
    timeout: float,
) -> dict[str, Any]:
    """Throughput on the shared backlog, then latency on a fresh topic fed at ``--rate``."""
    n = len(events)
    phases = [
        {
            "name": "throughput",
            "topic": topics.backlog,
            "output": topics.out(pipeline, "throughput"),
            "dlq": topics.dlq,
            "group": f"{topics.prefix}-{pipeline}-throughput",
            "events": n,
            "ready": False,
        },
        {
            "name": "latency",
            "topic": topics.latency_in(pipeline),
            "output": topics.out(pipeline, "latency"),
            "dlq": topics.dlq,
            "group": f"{topics.prefix}-{pipeline}-latency",
            "events": n,
            "ready": True,
        },
    ]
    log.info("bench %s: throughput over %d events", pipeline, n)
    worker = _Worker(_plan(pipeline, args, kafka, phases))
    try:
        tp = worker.expect("result", "throughput", timeout)
        per_event = tp["outputs"] / max(tp["events"], 1)
        arrivals = Path(tempfile.mkdtemp(prefix="reqcast-bench-")) / "arrivals.json"
        recorder = _Worker(
            {
                "mode": "record",
                "kafka": dataclasses.asdict(kafka),
                "topic": topics.out(pipeline, "latency"),
                "expect": round(n * per_event),
                "within_s": timeout + 60.0,
                "out": str(arrivals),
            }
        )
        try:
            recorder.expect("ready", "record", 60.0)
            worker.expect("ready", "latency", 60.0)
            log.info(
                "bench %s: latency over %d events at %s",
                pipeline,
                n,
                f"{args.rate:g} events/s" if args.rate else "full speed",
            )
            producer = _Producer(kafka, topics.latency_in(pipeline), events, args.rate)
            producer.start()
            lat = worker.expect("result", "latency", timeout)
            producer.join(timeout)
            if producer.error is not None:
                raise BenchError(f"producing events failed: {producer.error}") from producer.error
            received = recorder.expect("result", "record", 90.0)["received"]
        finally:
            recorder.close()
        final = worker.expect("result", "end", 30.0)
    finally:
        worker.close()
    rows = json.loads(arrivals.read_text())
    shutil.rmtree(arrivals.parent, ignore_errors=True)
    latency = _latency(kafka, topics.latency_in(pipeline), rows, received)
    latency.update(
        {
            "rate_events_per_s": args.rate,
            "produced": producer.result,
            "events": lat["events"],
            "outputs": lat["outputs"],
        }
    )
    return {
        "throughput": _throughput(tp),
        "latency": latency,
        "outputs_per_event": tp["outputs"] / max(tp["events"], 1),
        "peak_rss_mb": final["peak_rss_bytes"] / 2**20,
        "group_join_s": tp["join_s"],
        **({"torch_threads": tp["torch_threads"]} if "torch_threads" in tp else {}),
    }


def _throughput(r: dict[str, Any]) -> dict[str, Any]:
    elapsed = max(r["t_last_ack"] - r["t_first_poll"], 1e-9)
    spent = {k: float(v) for k, v in r.get("spent_s", {}).items()}
    main = [v for k, v in spent.items() if not k.endswith(BACKGROUND_SUFFIX)]
    spent["other"] = max(0.0, elapsed - sum(main))
    return {
        "events": r["events"],
        "outputs": r["outputs"],
        "batches": r["batches"],
        "elapsed_s": elapsed,
        "events_per_s": r["events"] / elapsed,
        "outputs_per_s": r["outputs"] / elapsed,
        "time_share": {k: v / elapsed for k, v in spent.items()},
    }


def _latency(
    kafka: Any, input_topic: str, arrivals: list[list[Any]], received: int
) -> dict[str, Any]:
    """Output arrival time minus the input record's timestamp, for every output received
    (``arrivals``: ``[arrival_s, partition, offset, model]`` from the measuring process)."""
    from stream.kafka_admin import read_all

    produced = {(r.partition, r.offset): r.timestamp_ms for r in read_all(kafka, input_topic, 60.0)}
    seen: set[tuple[int, int, str]] = set()
    lat_ms: list[float] = []
    for arrived, partition, offset, model in arrivals:
        key = (int(partition), int(offset), str(model))
        ts = produced.get(key[:2])
        if key in seen or ts is None:
            continue  # a redelivery (at least once) or not one of ours
        seen.add(key)
        lat_ms.append(arrived * 1000.0 - ts)
    if not lat_ms:
        raise BenchError(f"no output of {input_topic!r} could be matched to its input")
    arr = np.asarray(lat_ms)
    return {
        "received": received,
        "matched": len(lat_ms),
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "max_ms": float(arr.max()),
    }


def _memory_check(args: argparse.Namespace, kafka: Any, topics: _Topics) -> dict[str, Any]:
    total, base = args.memory_events, args.memory_baseline
    phases = [
        {
            "name": "memory",
            "topic": topics.memory_in,
            "output": topics.out("serve", "memory"),
            "dlq": topics.dlq,
            "group": f"{topics.prefix}-serve-memory",
            "events": total,
            "ready": True,
            "checkpoint_every": base,
        }
    ]
    log.info("bench memory: serve over %d events (reference after %d)", total, base)
    worker = _Worker(_plan("serve", args, kafka, phases))
    timeout = args.timeout or 120.0 + total / 250.0
    try:
        worker.expect("ready", "memory", 60.0)
        producer = _Producer(kafka, topics.memory_in, _event_chunks(total, args.seed + 1), None)
        producer.start()
        res = worker.expect("result", "memory", timeout)
        producer.stop.set()
        producer.join(30)
    finally:
        worker.close()
    samples = res["checkpoints"]
    at_base = next(s for s in samples if s["events"] >= base)
    at_end = samples[-1]
    growth = at_end["rss_bytes"] / at_base["rss_bytes"] - 1.0
    return {
        "events": res["events"],
        "baseline_events": base,
        "rss_mb_at_baseline": at_base["rss_bytes"] / 2**20,
        "events_at_baseline": at_base["events"],
        "rss_mb_at_end": at_end["rss_bytes"] / 2**20,
        "events_at_end": at_end["events"],
        "growth": growth,
        "events_per_s": res["events"] / max(res["t_last_ack"] - res["t_first_poll"], 1e-9),
        "samples": [
            {
                "events": s["events"],
                "rss_mb": s["rss_bytes"] / 2**20,
                "rss_mb_now": s["rss_bytes_now"] / 2**20,
                "python_objects": s["python_objects"],
            }
            for s in samples
        ],
    }


def _ratios(echo: dict[str, Any], serve: dict[str, Any]) -> dict[str, float]:
    return {
        "throughput": serve["throughput"]["events_per_s"] / echo["throughput"]["events_per_s"],
        "outputs_per_s": serve["throughput"]["outputs_per_s"] / echo["throughput"]["outputs_per_s"],
        "p50": serve["latency"]["p50_ms"] / max(echo["latency"]["p50_ms"], 1e-9),
        "p99": serve["latency"]["p99_ms"] / max(echo["latency"]["p99_ms"], 1e-9),
        "peak_rss": serve["peak_rss_mb"] / echo["peak_rss_mb"],
    }


def _targets(report: dict[str, Any], rate: float | None) -> dict[str, Any]:
    ratios = report["ratios"]
    out: dict[str, Any] = {
        "throughput_ratio": {
            "value": ratios["throughput"],
            "target": f">= {TARGET_THROUGHPUT_RATIO}",
            "met": ratios["throughput"] >= TARGET_THROUGHPUT_RATIO,
        },
        "p99_ratio": {
            "value": ratios["p99"],
            "target": f"<= {TARGET_P99_RATIO} at {TARGET_P99_RATE:,.0f} events/s",
            "rate_events_per_s": rate,
            "applies": rate == TARGET_P99_RATE,
            "met": ratios["p99"] <= TARGET_P99_RATIO,
        },
    }
    mem = report.get("memory")
    if mem:
        out["memory_growth"] = {
            "value": mem["growth"],
            "target": f"within {TARGET_MEMORY_GROWTH:.0%} from 100,000 to 1,000,000 events",
            "events": [mem["baseline_events"], mem["events"]],
            "applies": (mem["baseline_events"], mem["events"]) == (100_000, 1_000_000),
            "met": abs(mem["growth"]) <= TARGET_MEMORY_GROWTH,
        }
    return out


def _delete_topics(kafka: Any, names: list[str]) -> None:
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


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages of the machine (other work skews the figures)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _kafka_python_version() -> str:
    import kafka

    return str(getattr(kafka, "__version__", "?"))


# -- the table ------------------------------------------------------------------------------
def render_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    cfg, echo, serve, ratios = report["config"], report["echo"], report["serve"], report["ratios"]
    targets = report.get("targets", {})
    rate = cfg["rate_events_per_s"]
    pace = f"{rate:,.0f} events/s" if rate else "full speed"

    def verdict(name: str) -> str:
        t = targets.get(name)
        if not t:
            return ""
        mark = "met" if t["met"] else "MISSED"
        if not t.get("applies", True):
            mark += " (target is set at another load)"
        return f"{t['target']}: {mark}"

    rows = [
        ("", "echo", "serve", "serve/echo", "target"),
        (
            "throughput events/s",
            f"{echo['throughput']['events_per_s']:,.0f}",
            f"{serve['throughput']['events_per_s']:,.0f}",
            f"{ratios['throughput']:.2f}",
            verdict("throughput_ratio"),
        ),
        (
            "messages out/s",
            f"{echo['throughput']['outputs_per_s']:,.0f}",
            f"{serve['throughput']['outputs_per_s']:,.0f}",
            f"{ratios['outputs_per_s']:.2f}",
            f"serve writes {serve['outputs_per_event']:.0f} per event",
        ),
        (
            f"latency p50 ms @ {pace}",
            f"{echo['latency']['p50_ms']:.1f}",
            f"{serve['latency']['p50_ms']:.1f}",
            f"{ratios['p50']:.2f}",
            "",
        ),
        (
            f"latency p99 ms @ {pace}",
            f"{echo['latency']['p99_ms']:.1f}",
            f"{serve['latency']['p99_ms']:.1f}",
            f"{ratios['p99']:.2f}",
            verdict("p99_ratio"),
        ),
        (
            "peak RSS MB",
            f"{echo['peak_rss_mb']:.0f}",
            f"{serve['peak_rss_mb']:.0f}",
            f"{ratios['peak_rss']:.2f}",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        f"reqcast bench stream: {cfg['events']:,} events, {cfg['partitions']} input partitions, "
        f"batch {cfg['batch_max']}, models {', '.join(cfg['models'])}, "
        + (
            f"serve writes {cfg['compression']}, "
            if cfg.get("compression", "none") != "none"
            else ""
        )
        + f"broker {cfg['bootstrap_servers']}, {cfg['cpu_count']} CPUs shared with it"
        + (
            f", load average {cfg['load_average_at_start'][0]:.1f} at the start"
            if cfg.get("load_average_at_start")
            else ""
        ),
    ]
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in (1, 2, 3)] + [r[4]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths[:4]) + "  " + "-" * 6)
    for name, pipe in (("echo", echo), ("serve", serve)):
        shares = sorted(pipe["throughput"].get("time_share", {}).items(), key=lambda kv: -kv[1])
        main = [(k, v) for k, v in shares if not k.endswith(BACKGROUND_SUFFIX)]
        if main:
            parts = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in main)
            lines.append(f"{name} time (throughput run): {parts}")
        for k, v in shares:
            if k.endswith(BACKGROUND_SUFFIX):
                step = k.removesuffix(BACKGROUND_SUFFIX).replace("_", " ")
                lines.append(
                    f"{name} {step} on the inference thread, alongside: {v:.0%} of the run"
                )
    if cfg.get("crc32c_installed") is False:
        lines.append(
            "note: the crc32c package is not installed, so kafka-python computes record CRCs "
            "in pure Python; serve writes more bytes and pays more for it"
        )
    mem = report.get("memory")
    if mem:
        lines.append(
            f"memory: serve RSS {mem['rss_mb_at_baseline']:.0f} MB after "
            f"{mem['events_at_baseline']:,} events, {mem['rss_mb_at_end']:.0f} MB after "
            f"{mem['events_at_end']:,} ({mem['growth']:+.1%}); {verdict('memory_growth')}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("usage: reqcast bench stream --help")
