"""The pipeline processes of ``reqcast bench stream``: the bare echo and the serving loop.

:mod:`stream.bench.throughput_pipelines` starts ``python -m stream.bench.throughput_worker``
once per pipeline, writes its plan (JSON) to the process's stdin and reads its reports,
JSON lines that start with :data:`LINE_PREFIX`, from its stdout: ``ready`` once a phase's consumer joined its
group, ``result`` with a phase's figures (time spent per step, events, outputs, RSS
readings), ``error`` with a one-line message. Each phase consumes from its own topic in
its own consumer group; see :mod:`stream.bench.throughput` for what is measured.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from predictor.errors import ConfigError

#: prefix of the protocol lines a pipeline process writes on stdout
LINE_PREFIX = "@@bench "
#: group timings of both pipelines: tansu holds a group join for about half the
#: session timeout, so a short one keeps the joins (not measured) short
GROUP_SETTINGS: dict[str, int] = {
    "session_timeout_ms": 3_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 10_000,
}
#: the memory check's RSS figure is the median over this many batches before its checkpoint
RSS_WINDOW_BATCHES = 21


def _emit(kind: str, phase: str, **fields: Any) -> None:
    sys.stdout.write(LINE_PREFIX + json.dumps({"type": kind, "phase": phase, **fields}) + "\n")
    sys.stdout.flush()


def _rss_bytes() -> int:
    """Current resident set size of this process (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process: ``VmHWM`` (``ru_maxrss`` on Linux also
    counts the parent's memory before ``exec``, so it serves only where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class _Clock:
    """Times of one phase: first polled batch, last acknowledged one, memory checkpoints,
    and where the time went (``spent``: seconds per step, counted once records flow)."""

    def __init__(self, checkpoint_every: int | None) -> None:
        self.started = time.time()
        self.assigned: float | None = None
        self.first_poll: float | None = None
        self.last_ack = 0.0
        self.every = checkpoint_every
        self.next_checkpoint = checkpoint_every or 0
        self.checkpoints: list[dict[str, int]] = []
        self.spent: dict[str, float] = {}
        self.recent_rss: deque[int] = deque(maxlen=RSS_WINDOW_BATCHES)

    def spend(self, what: str, seconds: float) -> None:
        if self.first_poll is not None:
            self.spent[what] = self.spent.get(what, 0.0) + seconds

    def polled(self, n: int) -> None:
        if n and self.first_poll is None:
            self.first_poll = time.time()

    def acked(self, events: int) -> None:
        self.last_ack = time.time()
        if self.every:
            self.recent_rss.append(_rss_bytes())
            if events >= self.next_checkpoint:
                self.checkpoint(events)
                while self.next_checkpoint <= events:
                    self.next_checkpoint += self.every

    def checkpoint(self, events: int) -> None:
        """RSS now, and the median of the last batches' (a single reading may catch the
        allocator holding a batch's freed buffers; the median is what the check uses)."""
        now = _rss_bytes()
        recent = sorted(self.recent_rss or [now])
        self.checkpoints.append(
            {
                "events": events,
                "rss_bytes": recent[len(recent) // 2],
                "rss_bytes_now": now,
                # objects the garbage collector tracks (containers, not bytes or floats):
                # a count that grows with the events points at a leak of Python objects
                "python_objects": len(gc.get_objects()),
            }
        )

    def result(self, events: int, outputs: int, batches: int) -> dict[str, Any]:
        if self.every and (not self.checkpoints or self.checkpoints[-1]["events"] != events):
            self.checkpoint(events)
        return {
            "events": events,
            "outputs": outputs,
            "batches": batches,
            "t_first_poll": self.first_poll or self.last_ack,
            "t_last_ack": self.last_ack,
            "join_s": (self.assigned or self.started) - self.started,
            "rss_bytes": _rss_bytes(),
            "peak_rss_bytes": _peak_rss_bytes(),
            "checkpoints": self.checkpoints,
            "spent_s": self.spent,
        }


def _worker_main() -> int:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s bench-worker %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    plan = json.loads(sys.stdin.read())
    phase = "setup"
    try:
        from stream.kafka_io import KafkaConfig

        kafka = KafkaConfig(**plan["kafka"])
        if plan["mode"] == "record":
            phase = "record"
            _emit("result", "record", **_record(plan, kafka))
            return 0
        run_phase = (
            _echo_worker(plan, kafka) if plan["mode"] == "echo" else _serve_worker(plan, kafka)
        )
        for spec in plan["phases"]:
            phase = spec["name"]
            _emit("result", phase, **run_phase(spec))
        _emit("result", "end", peak_rss_bytes=_peak_rss_bytes())
    except Exception as exc:
        _emit("error", phase, message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


PhaseRunner = Callable[[dict[str, Any]], dict[str, Any]]

#: how a load forecast's JSON starts (stream.tasks.load): the recorder leaves them out
_LOAD = b'{"kind": "load"'
#: fetch wait of the measuring consumer (tansu holds a fetch for part of it even with data)
MEASURE_FETCH_WAIT_MS = 10


def _record(plan: dict[str, Any], kafka: Any) -> dict[str, Any]:
    """The measuring consumer: reads ``plan["topic"]`` from the start without a group and
    notes when each message arrives, until ``plan["expect"]`` are in or ``plan["within_s"]``
    pass; then writes ``[arrival_s, partition, offset, model]`` per output to
    ``plan["out"]``. Load forecasts are left out: ``expect`` counts the next-request
    forecasts and dead letters, one per model and event. In a process of its own, so that neither the bench's producer nor
    the pipeline shares its interpreter (serve's three outputs per event would otherwise
    slow its own measurement)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        fetch_max_wait_ms=MEASURE_FETCH_WAIT_MS,
        check_crcs=False,  # what is measured is arrival, not integrity
    )
    arrivals: list[tuple[float, bytes]] = []
    try:
        parts = consumer.partitions_for_topic(plan["topic"]) or {0}
        tps = [TopicPartition(plan["topic"], p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        consumer.poll(timeout_ms=0)
        _emit("ready", "record")
        deadline = time.monotonic() + float(plan["within_s"])
        expect = int(plan["expect"])
        while len(arrivals) < expect and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=100)
            now = time.time()
            for msgs in batches.values():
                # load forecasts (one per closed bin and model) are not what is waited for
                arrivals.extend((now, m.value) for m in msgs if not m.value.startswith(_LOAD))
    finally:
        consumer.close(autocommit=False)
    rows = []
    for arrived, value in arrivals:  # parsed once the clock no longer matters
        try:
            msg = json.loads(value)
            src = msg.get("source") or {}
            rows.append([arrived, int(src["partition"]), int(src["offset"]), msg.get("model")])
        except (ValueError, KeyError, TypeError):
            continue
    with open(plan["out"], "w") as f:
        json.dump(rows, f)
    return {"received": len(arrivals)}


def _echo_worker(plan: dict[str, Any], kafka: Any) -> PhaseRunner:
    """The bare echo: poll -> json.loads -> json.dumps -> send; flush, then commit the batch."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata

    from stream.kafka_io import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS

    producer = KafkaProducer(**{**PRODUCER_DEFAULTS, **kafka.client_kwargs()})
    batch_max = int(plan["batch_max"])

    def phase(spec: dict[str, Any]) -> dict[str, Any]:
        clock = _Clock(spec.get("checkpoint_every"))
        consumer = KafkaConsumer(
            **{**CONSUMER_DEFAULTS, **kafka.client_kwargs()},
            group_id=spec["group"],
            auto_offset_reset="earliest",
            **GROUP_SETTINGS,
        )
        consumer.subscribe([spec["topic"]])
        out, target = spec["output"], int(spec["events"])
        events = outputs = batches = 0
        try:
            while events < target:
                t0 = time.perf_counter()
                polled = consumer.poll(timeout_ms=200, max_records=batch_max)
                t_polled = time.perf_counter()
                clock.spend("poll", t_polled - t0)
                if clock.assigned is None and consumer.assignment():
                    clock.assigned = time.time()
                    if spec["ready"]:
                        _emit("ready", spec["name"])
                if not polled:
                    continue
                clock.polled(1)
                offsets = {}
                for tp, msgs in polled.items():
                    for m in msgs:
                        obj = json.loads(m.value)
                        obj["source"] = {"partition": m.partition, "offset": m.offset}
                        producer.send(out, key=m.key, value=json.dumps(obj).encode())
                        outputs += 1
                    events += len(msgs)
                    offsets[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)
                t1 = time.perf_counter()
                producer.flush()
                t2 = time.perf_counter()
                consumer.commit(offsets=offsets)
                t3 = time.perf_counter()
                clock.spend("decode_encode_send", t1 - t_polled)
                clock.spend("flush", t2 - t1)
                clock.spend("commit", t3 - t2)
                batches += 1
                clock.acked(events)
        finally:
            consumer.close(autocommit=False)
        return clock.result(events, outputs, batches)

    return phase


def _serve_worker(plan: dict[str, Any], kafka: Any) -> PhaseRunner:
    """The serving process, assembled as ``reqcast serve`` assembles it from the settings its
    flags make (``plan["serve_argv"]``, :mod:`stream.bench.throughput_serve`): the loop, the
    load task and the model workers (refit, model topic, model-dir watcher) of its settings,
    one consumer group per phase."""
    import torch
    from prometheus_client import CollectorRegistry

    from stream.app import complete_service, kafka_service
    from stream.bench.throughput_serve import parse_serve, phase_argv
    from stream.cliutil import set_torch_threads
    from stream.kafka_batch import BatchKafkaSink
    from stream.metrics import Metrics
    from stream.model_slots import have_models, read_slots
    from stream.service import tune_gc
    from trainer.device import resolve_device

    base_argv = list(plan["serve_argv"])
    args, settings = parse_serve(base_argv)
    metrics = Metrics(CollectorRegistry(), max_exported_streams=settings.metrics_max_streams)
    device = resolve_device(args.device)
    slots = read_slots(args.model_dir, list(args.models), metrics, device=device)
    if not have_models(slots):
        raise ConfigError(f"no loadable models in {args.model_dir!r}")
    sink = BatchKafkaSink(kafka, compression=args.compression)
    active: list[_Clock] = []  # the clock of the phase running, for the model timings
    for slot in slots.values():
        loaded = slot.current()
        if loaded is not None:
            fc = loaded.forecaster
            setattr(fc, "predict", _timed(fc.predict, "model_inference", active))  # noqa: B010

    def phase(spec: dict[str, Any]) -> dict[str, Any]:
        clock = _Clock(spec.get("checkpoint_every"))
        active[:] = [clock]
        _, phase_settings = parse_serve(
            phase_argv(base_argv, spec["topic"], spec["output"], spec["dlq"])
        )
        timed: list[_TimedSource] = []

        def wrap(source: Any) -> _TimedSource:
            timed.append(_TimedSource(source, clock))
            return timed[0]

        service, source = kafka_service(
            kafka,
            phase_settings.serve,
            spec["group"],
            sink,
            slots,
            metrics,
            wrap,
            **GROUP_SETTINGS,
        )
        load, workers = complete_service(
            phase_settings, service, slots, metrics, kafka=kafka, device=device
        )
        service.on_batch = lambda svc, _msgs: clock.acked(svc.stats.events)
        setattr(service, "deliver", _timed(service.deliver, "send_flush", active))  # noqa: B010
        stop = threading.Event()
        try:
            set_torch_threads(args.torch_threads)
            # as `reqcast serve` does, before it reads events (the full collection in it
            # would otherwise stall the first events the bench produces)
            tune_gc()
            if spec["ready"]:
                while not source.assignment():
                    service.step(stop)
                clock.assigned = time.time()
                _emit("ready", spec["name"])
            stats = service.run(stop, max_events=int(spec["events"]))
        finally:
            for w in workers:
                w.stop()
            source.close()
        if clock.assigned is None:
            clock.assigned = timed[0].assigned_at
        outputs = sum(stats.forecasts.values()) + stats.invalid
        res = clock.result(stats.events, outputs, stats.batches)
        res["load_outputs"] = 0 if load is None else load.published
        res["workers"] = sorted(type(w).__name__ for w in workers)
        res["torch_threads"] = torch.get_num_threads()
        return res

    return phase


#: time of calls made off the pipeline's main thread (the serving loop's inference
#: thread) is counted under its step's name with this suffix: it overlaps the main
#: thread's steps, so it is not part of the breakdown of the main thread's time
BACKGROUND_SUFFIX = "_on_inference_thread"


def _timed(fn: Callable[..., Any], what: str, clocks: list[_Clock]) -> Callable[..., Any]:
    """``fn``, adding the seconds each call takes to ``what`` of the running phase's clock."""

    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if clocks:
                main = threading.current_thread() is threading.main_thread()
                key = what if main else what + BACKGROUND_SUFFIX
                clocks[0].spend(key, time.perf_counter() - t0)

    return timed


class _TimedSource:
    """A :class:`~stream.transport.Source` that notes when records first came (bench only)."""

    def __init__(self, inner: Any, clock: _Clock) -> None:
        self.inner, self.clock = inner, clock
        self.assigned_at: float | None = None

    def poll(self, max_records: int, timeout_s: float) -> list[Any]:
        t0 = time.perf_counter()
        records: list[Any] = self.inner.poll(max_records, timeout_s)
        self.clock.spend("poll", time.perf_counter() - t0)
        if self.assigned_at is None and self.inner.assignment():
            self.assigned_at = time.time()
        self.clock.polled(len(records))
        return records

    def commit(self, offsets: dict[int, int]) -> None:
        t0 = time.perf_counter()
        self.inner.commit(offsets)
        self.clock.spend("commit", time.perf_counter() - t0)

    def assignment(self) -> list[int]:
        return list(self.inner.assignment())

    def lag(self) -> int | None:
        lag: int | None = self.inner.lag()
        return lag

    def close(self) -> None:
        self.inner.close()


if __name__ == "__main__":
    sys.exit(_worker_main())
