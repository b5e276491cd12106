"""``reqcast run``: the whole pipeline in one process, the embedded default.

Replays a trace (a synthetic BurstGPT-like one unless ``--data-path``) through
an in-process transport into the serving loop; trains first models on the head
of the trace when ``--model-dir`` has none; serves ``/metrics``; writes every
forecast to a JSON Lines file; prints a live status line and a summary. With
``--bootstrap-servers`` the same pieces talk over Kafka instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path

import pandas as pd

from predictor.traces import iter_events
from stream.app import attach_load, service_metrics, start_model_workers, stop_on_signals
from stream.cliutil import (
    add_flag,
    add_trace_flags,
    load_from_args,
    set_flag_default,
    set_torch_threads,
)
from stream.commands._refit import add_refit_flags
from stream.commands._serve_flags import add_service_flags, service_settings
from stream.metrics import serve_metrics
from stream.sinks import JsonlSink, TeeSink
from stream.status import StatusPrinter, load_table, summary_table
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
        default="out/forecasts.jsonl",
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
    add_service_flags(p)
    set_flag_default(
        p,
        "--model-dir",
        "out/models",
        help="models to serve; first models are trained here when it has none (apart from "
        "reqcast train's models/, which run never serves unless named here)",
    )
    add_refit_flags(p, every_events=5_000, every_s=0, window=5_000, epochs=5)


def _first_models(args: argparse.Namespace, head: pd.DataFrame) -> None:
    from trainer.offline import train_models
    from trainer.presets import get_preset

    preset = get_preset("cpu").override(
        epochs=args.first_epochs,
        seq_len=args.seq_len,
        sample_size=None,
        models=tuple(args.models),
        patience=3,
    )
    log.info(
        "no models in %s: training first models on %d rows (preset cpu, %d epochs)",
        args.model_dir,
        len(head),
        args.first_epochs,
    )
    report = train_models(head, preset, args.model_dir, stream_key=args.stream_key, seed=args.seed)
    for o in report.outcomes:
        if o.error:
            log.error("first %s model failed: %s", o.model, o.error)


def _first_load_models(args: argparse.Namespace, head: pd.DataFrame) -> None:
    from predictor.errors import TrainingError
    from trainer.offline import LoadTask, train_models
    from trainer.presets import get_preset

    horizon = max(args.horizons)
    preset = get_preset("cpu").override(
        epochs=max(args.first_epochs, 10),
        seq_len=args.load_seq_len,
        batch_size=16,
        sample_size=None,
        models=tuple(args.models),
        patience=3,
    )
    log.info("training first load models (%gs bins, horizon %d)", args.bin_s, horizon)
    try:
        report = train_models(
            head,
            preset,
            args.model_dir,
            stream_key=args.stream_key,
            seed=args.seed,
            task="load",
            load=LoadTask(args.bin_s, horizon),
        )
    except TrainingError as exc:
        log.warning("no first load models: %s", exc)
        return
    for o in report.outcomes:
        if o.error:
            log.warning("first %s load model failed: %s", o.model, o.error)


def run(args: argparse.Namespace) -> int:
    from predictor.artifacts import list_artifacts
    from stream.model_slots import have_models, read_slots
    from stream.service import ForecastService, tune_gc

    settings = service_settings(args)
    config = settings.serve
    total_rows = args.events + args.train_rows
    df, _, source_name = load_from_args(args, synth_rows=total_rows, synth_seed=args.seed)
    replayed = df.tail(args.events) if args.events else df
    head = df.iloc[: len(df) - len(replayed)].tail(args.train_rows)
    metrics = service_metrics(settings.metrics_max_streams)
    slots = read_slots(args.model_dir, args.models, metrics, device=args.device)
    if not have_models(slots):
        if len(head) == 0:
            head = df.head(min(len(df) // 2, args.train_rows))
        _first_models(args, head)
        slots = read_slots(args.model_dir, args.models, metrics, device=args.device)
    if not args.no_load and not list_artifacts(args.model_dir, task="load"):
        _first_load_models(args, head if len(head) else df.head(min(len(df) // 2, args.train_rows)))
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
    load = attach_load(settings.load, service, metrics, args.device)
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
    workers = start_model_workers(
        settings.workers,
        slots,
        metrics,
        service,
        kafka=kafka,
        load=None if load is None else (load, settings.load),
    )
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
    state = service.state()
    elapsed = time.monotonic() - started
    print(
        f"\n=== reqcast run: {state['events']:,} events in {elapsed:.1f}s ({state['events'] / max(elapsed, 1e-9):,.0f}/s) ==="
    )
    print(f"source:     {source_name}")
    print(f"invalid:    {state['invalid']:,} (dead letters in {dlq_file})")
    print(f"forecasts:  {json.dumps(state['forecasts'])} -> {out}")
    print("online accuracy (rolling, last 1,000 scored forecasts per model):")
    print(summary_table(state))
    if load is not None:
        print(
            f"load forecasts: {load.published:,} ({args.bin_s:g}s bins) — rolling requests/s MAE and coverage:"
        )
        print(load_table(load.scores, [*load.slots, "best"], args.horizons))
    return 0
