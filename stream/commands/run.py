"""``reqcast run``: the whole pipeline in one process, the embedded default.

Replays a trace (a synthetic BurstGPT-like one unless ``--data-path``) through
an in-process transport into the serving loop; trains first models on the head
of the trace when ``--model-dir`` has none; serves ``/metrics``; writes every
forecast to a JSON Lines file; prints a live status line and a summary. With
``--bootstrap-servers`` the same pieces talk over Kafka instead.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from predictor.errors import ConfigError
from predictor.traces import iter_events
from stream.app import complete_service, service_metrics, stop_on_signals
from stream.cliutil import (
    add_flag,
    add_trace_flags,
    load_from_args,
    set_flag_default,
    set_torch_threads,
)
from stream.first_models import announce, train_first, train_first_load
from stream.metrics import serve_metrics
from stream.refit_flags import add_refit_flags
from stream.serve_flags import add_service_flags, service_settings
from stream.sinks import JsonlSink, TeeSink
from stream.status import StatusPrinter
from stream.summary import DEFAULT_FORECASTS, Timings, run_summary
from stream.trace_replay import replay
from stream.transport import MemoryBroker, Sink, Source

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    add_trace_flags(p)
    add_flag(
        p, "--events", type=int, default=20_000, help="events to replay (the trace's last N rows)"
    )
    add_flag(p, "--duration", type=float, help="stop after this many seconds even if events remain")
    add_flag(
        p,
        "--rate",
        type=float,
        default=2_000.0,
        help="replay rate in events/s (0: as fast as possible)",
    )
    add_flag(
        p, "--speed", type=float, help="replay at this multiple of real time instead of --rate"
    )
    add_flag(
        p,
        "--train-rows",
        type=int,
        default=5_000,
        help="rows before the replayed part used to train first models when --model-dir has none",
    )
    add_flag(p, "--first-epochs", type=int, default=6, help="epochs of that first training")
    add_flag(p, "--seq-len", type=int, default=64, help="window length of first models")
    add_flag(
        p, "--load-seq-len", type=int, default=48, help="window length in bins of first load models"
    )
    add_flag(
        p,
        "--output",
        default=DEFAULT_FORECASTS,
        help="JSON Lines file of forecasts (dead letters go beside it)",
    )
    add_flag(
        p,
        "--status-interval",
        type=float,
        default=2.0,
        help="seconds between status lines (0: none)",
    )
    add_flag(p, "--seed", type=int, default=0, help="seed of the synthetic trace and of training")
    add_flag(
        p, "--bootstrap-servers", help="use this Kafka cluster instead of the in-process transport"
    )
    add_flag(
        p,
        "--broker-wait",
        type=float,
        default=30.0,
        help="with --bootstrap-servers: seconds start-up waits for the broker before it gives up",
    )
    add_flag(
        p,
        "--keep-serving",
        action="store_true",
        help="after the replay, keep /metrics and the status line up until Ctrl-C",
    )
    add_service_flags(p)
    set_flag_default(
        p,
        "--model-dir",
        "out/models",
        help="models to serve; first models are trained here when it has none (apart from "
        "reqcast train's models/, which run never serves unless named here)",
    )
    add_refit_flags(p, every_s=5, window=5_000, epochs=5, load_every_s=10)


def run(args: argparse.Namespace) -> int:
    from predictor.artifacts import list_artifacts
    from stream.model_slots import have_models, read_slots
    from stream.service import ForecastService, tune_gc

    began = time.monotonic()
    settings = service_settings(args)
    config = settings.serve
    if args.keep_serving and not args.metrics_port:
        raise ConfigError("--keep-serving keeps /metrics up: give it a --metrics-port, not 0")
    if args.bootstrap_servers:  # before minutes of training, not after
        _wait_for_broker(args)
    total_rows = args.events + args.train_rows
    df, _, source_name = load_from_args(args, synth_rows=total_rows, synth_seed=args.seed)
    replayed = df.tail(args.events) if args.events else df
    head = df.iloc[: len(df) - len(replayed)].tail(args.train_rows)
    if len(head) == 0:
        head = df.head(min(len(df) // 2, args.train_rows))
    metrics = service_metrics(settings.metrics_max_streams)
    # no models yet is what a first run expects: information, not a warning
    slots = read_slots(
        args.model_dir, args.models, metrics, device=args.device, missing_level=logging.INFO
    )
    first = {
        "next request": not have_models(slots),
        "load": not args.no_load and not list_artifacts(args.model_dir, task="load"),
    }
    trained = time.monotonic()
    if any(first.values()):
        announce([part for part, needed in first.items() if needed], len(head))
    if first["next request"]:
        train_first(args, head)
        slots = read_slots(args.model_dir, args.models, metrics, device=args.device)
    if first["load"]:
        train_first_load(args, head)
    train_s = time.monotonic() - trained if any(first.values()) else 0.0
    serve_metrics(args.metrics_port, metrics.registry, args.metrics_host)
    out = Path(args.output)
    dlq_file = out.with_name(out.stem + ".dlq.jsonl")
    out.unlink(missing_ok=True)
    dlq_file.unlink(missing_ok=True)
    files = JsonlSink({config.output_topic: out, config.dead_letter_topic: dlq_file})
    stop = threading.Event()
    stop_on_signals(stop)
    source: Source
    kafka = None
    sink: Sink
    publish: Sink
    if args.bootstrap_servers:
        from stream.cliutil import kafka_config
        from stream.kafka_admin import ensure_topics
        from stream.kafka_batch import BatchKafkaSink
        from stream.kafka_io import KafkaSink, KafkaSource

        kafka = kafka_config(args)
        ensure_topics(
            kafka, {config.input_topic: 1, config.output_topic: 1, config.dead_letter_topic: 1}
        )
        publish = KafkaSink(kafka)
        sink = TeeSink(BatchKafkaSink(kafka, compression=args.compression), files)
        source = KafkaSource(
            kafka,
            config.input_topic,
            f"reqcast-run-{int(time.time())}",
            max_poll_interval_ms=3000,
            session_timeout_ms=3000,
            heartbeat_interval_ms=1000,
        )
    else:
        broker = MemoryBroker()
        broker.create_topic(config.input_topic, partitions=1)
        publish, sink, source = (
            broker.sink(),
            files,
            broker.source(config.input_topic, "reqcast-run"),
        )
    service = ForecastService(config, source, sink, slots, metrics)
    # the rows just before the replayed part are history, not news: start with warm windows
    history = list(iter_events(df.iloc[: len(df) - len(replayed)].tail(args.train_rows)))
    service.warm(history[-config.window_capacity * 20 :])
    # the model workers start once the windows are warm and the replay is about to begin
    load, workers = complete_service(
        settings, service, slots, metrics, kafka=kafka, device=args.device, start=False
    )
    if load is not None:
        load.warm(history)
    rate = None if args.speed else (args.rate or None)
    replayer = threading.Thread(
        target=replay,
        args=(iter_events(replayed), publish, config.input_topic),
        kwargs={
            "stream_key": args.stream_key,
            "speed": args.speed,
            "rate": rate,
            "progress": False,
            "total": len(replayed),
            "stop": stop,
        },
        name="replay",
        daemon=True,
    )
    log.info(
        "replaying %d events of %s at %s into the pipeline; forecasts -> %s; metrics on :%s",
        len(replayed),
        source_name,
        f"{args.speed}x real time"
        if args.speed
        else (f"{rate:g} events/s" if rate else "full speed"),
        out,
        args.metrics_port,
    )
    for worker in workers:
        worker.start()
    status = StatusPrinter(service.state, args.status_interval)
    started = time.monotonic()
    replayer.start()
    status.start()
    if args.duration:
        threading.Timer(args.duration, stop.set).start()
    try:
        set_torch_threads(args.torch_threads)
        tune_gc()
        service.run(stop, max_events=len(replayed))
    finally:
        stop.set()
        for w in workers:
            w.stop()
        status.stop()
        replayer.join(timeout=5)
        sink.close()
        source.close()
    elapsed = time.monotonic() - started
    state = service.state()
    summary = run_summary(
        args,
        state,
        Timings(state["events"], elapsed, train_s, time.monotonic() - began),
        source_name,
        files={"forecasts": str(out), "dead letters": str(dlq_file)},
        load=load,
        registry=metrics.registry,
    )
    print("\n" + summary, flush=True)
    if args.keep_serving:
        keep_serving(args, service.state)
    return 0


def _wait_for_broker(args: argparse.Namespace) -> None:
    from stream.cliutil import kafka_config
    from stream.kafka_admin import wait_for_broker

    if not args.broker_wait > 0:
        raise ConfigError(f"--broker-wait must be positive, got {args.broker_wait:g}")
    wait_for_broker(kafka_config(args), timeout_s=args.broker_wait)


def keep_serving(args: argparse.Namespace, state: Callable[[], dict[str, Any]]) -> None:
    """Keep ``/metrics`` (and the status line) up after the replay until SIGINT or SIGTERM."""
    status = StatusPrinter(state, args.status_interval)
    hold = threading.Event()
    stop_on_signals(hold)
    host = "localhost" if args.metrics_host in ("", "0.0.0.0", "::") else args.metrics_host
    print(
        f"replay done; still serving http://{host}:{args.metrics_port}/metrics until Ctrl-C",
        flush=True,
    )
    status.start()
    try:
        hold.wait()
    finally:
        status.stop()
