"""``reqcast bench stream``, the measurement: each pipeline in a process of its own.

:class:`PipelineProcess` starts ``python -m stream.bench.throughput_worker`` with a plan
and reads its reports; :func:`run_pipeline` measures one pipeline (``echo`` or
``serve``): its throughput on the shared backlog, then its event-to-output latency on a
fresh topic fed at ``--rate`` while a group-less consumer in another process notes each
output's arrival; :func:`memory_check` follows serve's resident set size over many
events. See :mod:`stream.bench.throughput` for how each figure is defined.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from predictor.errors import ReqcastError
from predictor.events import RequestEvent
from stream.bench.throughput_setup import Producer, Topics, event_chunks
from stream.bench.throughput_worker import BACKGROUND_SUFFIX, LINE_PREFIX

log = logging.getLogger(__name__)


class BenchError(ReqcastError):
    """A pipeline of the benchmark failed or did not finish in time."""


class PipelineProcess:
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
        # `reqcast serve` flags of the serve side (stream.bench.throughput_serve)
        "serve_argv": list(getattr(args, "serve_argv", [])),
        "phases": phases,
    }


def run_pipeline(
    pipeline: str,
    args: argparse.Namespace,
    kafka: Any,
    topics: Topics,
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
    worker = PipelineProcess(_plan(pipeline, args, kafka, phases))
    try:
        tp = worker.expect("result", "throughput", timeout)
        per_event = tp["outputs"] / max(tp["events"], 1)
        arrivals = Path(tempfile.mkdtemp(prefix="reqcast-bench-")) / "arrivals.json"
        recorder = PipelineProcess(
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
            producer = Producer(kafka, topics.latency_in(pipeline), events, args.rate)
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
        **({"workers": tp["workers"]} if "workers" in tp else {}),
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
        # load forecasts (serve, one per closed bin and model), not in ``outputs``
        "load_outputs": r.get("load_outputs", 0),
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


def memory_check(args: argparse.Namespace, kafka: Any, topics: Topics) -> dict[str, Any]:
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
    worker = PipelineProcess(_plan("serve", args, kafka, phases))
    timeout = args.timeout or 120.0 + total / 250.0
    try:
        worker.expect("ready", "memory", 60.0)
        producer = Producer(
            kafka,
            topics.memory_in,
            event_chunks(total, args.seed + 1, trace_rate=args.trace_rate or None),
            None,
        )
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
