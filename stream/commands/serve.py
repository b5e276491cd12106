"""``reqcast serve``: the streaming forecast service over Kafka.

Consumes request events from ``--input-topic`` in consumer group ``--group-id``,
publishes a next-request forecast per model for every valid event to
``--output-topic`` and dead letters to ``--dlq-topic``; commits input offsets
only once those are acknowledged (at least once). Without models in
``--model-dir`` it exits with status 2 and says how to make some.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from predictor.errors import ConfigError
from stream.cliutil import add_flag, check_torch_threads, set_torch_threads
from stream.commands._refit import add_refit_flags, refit_config
from stream.metrics import MAX_EXPORTED_STREAMS, METRICS_HOST, Metrics, serve_metrics
from stream.service import ServeConfig
from stream.transport import Record, Sink, Source

if TYPE_CHECKING:
    from predictor.models.base import Forecaster
    from predictor.slot import ModelSlot
    from stream.kafka_io import KafkaConfig, KafkaSource
    from stream.model_sync import ModelDirWatcher
    from stream.service import ForecastService
    from stream.tasks.load import LoadForecasting

log = logging.getLogger(__name__)

#: a conservative rate for reading history on assignment (kafka-python reads far faster)
HISTORY_RECORDS_PER_S = 5_000


def add_service_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``serve`` and ``run``."""
    add_flag(
        p,
        "--no-best",
        action="store_true",
        help="publish no `best` forecasts (per quantity, the model with the lower rolling error)",
    )
    add_flag(
        p,
        "--no-load",
        action="store_true",
        help="publish no load forecasts even if load models exist",
    )
    add_flag(
        p,
        "--bin-s",
        type=float,
        default=60.0,
        help="load forecasts: bin size in seconds (load models must be trained for it)",
    )
    add_flag(
        p,
        "--horizons",
        type=int,
        nargs="+",
        default=[1, 6, 30],
        help="load forecasts: horizons in bins",
    )
    add_flag(p, "--input-topic", default="requests", help="topic of request events")
    add_flag(p, "--output-topic", default="forecasts", help="topic forecasts are published to")
    add_flag(p, "--dlq-topic", help="dead-letter topic (default: <input topic>.dlq)")
    add_flag(p, "--model-dir", default="models", help="where model artifacts are")
    add_flag(p, "--models", nargs="+", default=["lstm", "dlinear"], help="models to serve")
    add_flag(
        p,
        "--stream-key",
        default="model",
        choices=["model", "none"],
        help="one rolling window per model field, or one for all",
    )
    add_flag(p, "--metrics-port", type=int, default=9464, help="port of /metrics (0: off)")
    add_flag(
        p,
        "--metrics-host",
        default=METRICS_HOST,
        help="address /metrics listens on (the default, every interface, suits a container; "
        "127.0.0.1 keeps it to the host)",
    )
    add_flag(
        p,
        "--metrics-max-streams",
        type=int,
        default=MAX_EXPORTED_STREAMS,
        help="streams each per-stream gauge exports at most, first come first served (the "
        "rest are counted in reqcast_stream_series_dropped_total)",
    )
    add_flag(p, "--batch-max", type=int, default=500, help="most events per micro-batch")
    add_flag(
        p,
        "--window",
        type=int,
        default=256,
        help="requests kept per stream (at least the longest seq_len)",
    )
    add_flag(
        p,
        "--max-lateness",
        type=float,
        default=3600.0,
        help="events this many seconds older than their stream go to the DLQ",
    )
    add_flag(
        p,
        "--max-future",
        type=float,
        default=86400.0,
        help="events stamped this many seconds after the newest event accepted (trace time: "
        "seconds from the start of a trace), or after this machine's clock (by more than the "
        "smaller of this and --max-lateness), go to the DLQ as future_timestamp; a trace that "
        "really jumps is followed from its second event",
    )
    add_flag(
        p, "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="device for inference"
    )
    add_flag(
        p,
        "--compression",
        default="none",
        choices=["none", "gzip"],
        help="codec of the forecast batches written to Kafka (gzip: about 13 times fewer "
        "bytes for about 5 us of CPU per event)",
    )
    add_flag(
        p,
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads for inference (0: torch's default, one per core); one keeps the "
        "small models from competing with the Kafka client and broker for cores",
    )


def service_config(args: argparse.Namespace) -> ServeConfig:
    if args.window < 1 or args.batch_max < 1:
        raise ConfigError("--window and --batch-max must be positive")
    if not args.max_future > 0 or not args.max_lateness >= 0:
        raise ConfigError("--max-future must be positive and --max-lateness 0 or more")
    if getattr(args, "history_records", 0) < 0:
        raise ConfigError(f"--history-records must be 0 or more, got {args.history_records}")
    check_torch_threads(args.torch_threads)  # applied once the loop starts
    return ServeConfig(
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        dlq_topic=args.dlq_topic,
        stream_key=args.stream_key,
        batch_max=args.batch_max,
        window_capacity=args.window,
        max_lateness_s=args.max_lateness,
        max_future_s=args.max_future,
        publish_best=not args.no_best,
        history_records=getattr(args, "history_records", 0),  # serve only
    )


def service_metrics(args: argparse.Namespace) -> Metrics:
    """The metrics of ``serve`` and ``run``, as ``--metrics-max-streams`` bounds them."""
    if args.metrics_max_streams < 0:
        raise ConfigError(
            f"--metrics-max-streams must be 0 or more, got {args.metrics_max_streams}"
        )
    return Metrics(max_exported_streams=args.metrics_max_streams)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to finish its batch and stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def add_parser(p: argparse.ArgumentParser) -> None:
    from stream.kafka_io import KafkaConfig

    KafkaConfig.add_flags(p)
    add_flag(
        p,
        "--broker-wait",
        type=float,
        default=30.0,
        help="seconds start-up waits for a Kafka broker to answer before it gives up",
    )
    add_flag(
        p,
        "--group-id",
        default="reqcast-serve",
        help="consumer group shared by all serve instances",
    )
    add_service_flags(p)
    add_flag(
        p, "--session-timeout-ms", type=int, default=10_000, help="consumer group session timeout"
    )
    add_flag(
        p,
        "--max-poll-interval-ms",
        type=int,
        default=300_000,
        help="consumer max poll interval (small brokers rebalance faster with a few seconds)",
    )
    add_flag(
        p,
        "--history-records",
        type=int,
        default=20_000,
        help="records per partition read on assignment, just before the committed offsets, to "
        "rebuild the request windows (at least --window) and the load bins, and to prime the "
        "load intervals' calibration (load models need about 140 bins of history; fewer "
        "records suit many partitions, more suit quiet streams and long bins)",
    )
    add_flag(
        p, "--max-events", type=int, help="stop after this many events (for tests and benchmarks)"
    )
    add_flag(
        p,
        "--model-topic",
        default="reqcast-models",
        help="compacted topic new model versions arrive on ('' to ignore it)",
    )
    add_flag(
        p,
        "--watch-model-dir",
        type=float,
        default=5.0,
        help="seconds between checks of --model-dir for newer versions of the next-request and "
        "the load models (0: off)",
    )
    add_refit_flags(p)


def kafka_service(
    kafka: KafkaConfig,
    config: ServeConfig,
    group_id: str,
    sink: Sink,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    wrap_source: Callable[[KafkaSource], Source] | None = None,
    *,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
) -> tuple[ForecastService, KafkaSource]:
    """The serving loop over a member of ``group_id`` reading ``config.input_topic``, as
    ``serve`` runs it: on every assignment the windows are rebuilt from the records just
    before the committed offsets. ``wrap_source`` may wrap the source the loop polls."""
    from stream.kafka_admin import read_before
    from stream.kafka_io import KafkaSource
    from stream.service import ForecastService

    holder: dict[str, ForecastService] = {}

    def on_assign(partitions: list[int]) -> None:
        holder["service"].on_assign(partitions)

    source = KafkaSource(
        kafka,
        config.input_topic,
        group_id,
        on_assign=on_assign,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        max_poll_interval_ms=max_poll_interval_ms,
        async_commits=True,  # forecasts are acknowledged before; see KafkaSource.commit
    )

    def history(partitions: list[int]) -> list[Record]:
        ends = source.committed(partitions)
        per_partition = max(config.window_capacity, config.history_records)
        # a read cut short by its timeout keeps the older records, so leave it ample time,
        # but not so much that the group gives up on this member (it reads inside poll)
        timeout_s = min(
            10.0 + per_partition * len(ends) / HISTORY_RECORDS_PER_S,
            max_poll_interval_ms / 2000,
        )
        return read_before(kafka, config.input_topic, ends, per_partition, timeout_s=timeout_s)

    polled = wrap_source(source) if wrap_source is not None else source
    service = ForecastService(config, polled, sink, slots, metrics, history=history)
    service.health.connected = source.connected
    holder["service"] = service
    return service, source


def run(args: argparse.Namespace) -> int:
    from stream.kafka_admin import ensure_topics, wait_for_broker
    from stream.kafka_batch import BatchKafkaSink
    from stream.kafka_io import KafkaConfig
    from stream.model_slots import have_models, read_slots
    from stream.service import tune_gc
    from trainer.device import resolve_device

    config = service_config(args)
    kafka = KafkaConfig.from_args(args)
    if not args.broker_wait > 0:
        raise ConfigError(f"--broker-wait must be positive, got {args.broker_wait:g}")
    metrics = service_metrics(args)
    slots = read_slots(args.model_dir, args.models, metrics, device=resolve_device(args.device))
    if not have_models(slots):
        raise ConfigError(
            f"no model artifacts in {args.model_dir!r}: train some first, e.g. "
            f"`reqcast train --preset cpu --model-dir {args.model_dir}` (or use `reqcast run`, "
            "which trains first models by itself)"
        )
    wait_for_broker(kafka, timeout_s=args.broker_wait)
    ensure_topics(kafka, {config.output_topic: 1, config.dead_letter_topic: 1})
    serve_metrics(args.metrics_port, metrics.registry, args.metrics_host)
    stop = threading.Event()
    stop_on_signals(stop)
    sink = BatchKafkaSink(kafka, compression=args.compression)
    service, source = kafka_service(
        kafka,
        config,
        args.group_id,
        sink,
        slots,
        metrics,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=max(100, args.session_timeout_ms // 3),
        max_poll_interval_ms=args.max_poll_interval_ms,
    )
    load = attach_load(args, service, metrics, resolve_device(args.device))
    workers = start_model_workers(args, slots, metrics, service, kafka=kafka, load=load)
    log.info(
        "serving %s -> %s (group %s, models %s)",
        config.input_topic,
        config.output_topic,
        args.group_id,
        {n: s.version for n, s in slots.items()},
    )
    service.health.start()
    try:
        set_torch_threads(args.torch_threads)
        tune_gc()
        stats = service.run(stop, max_events=args.max_events)
    finally:
        service.health.stop()
        for w in workers:
            w.stop()
        source.close()
        sink.close()
    log.info(
        "stopped after %d events (%d invalid), forecasts %s",
        stats.events,
        stats.invalid,
        stats.forecasts,
    )
    return 0


def start_model_workers(
    args: argparse.Namespace,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    service: ForecastService,
    kafka: KafkaConfig | None = None,
    load: LoadForecasting | None = None,
) -> list[Any]:
    """The refit worker, the model-topic follower and the model-dir watchers (next-request
    models, and ``load``'s models if given) that the flags ask for."""
    from stream.model_sync import ModelDirWatcher, ModelPublisher, ModelTopicFollower
    from trainer.refit import RefitWorker

    workers: list[Any] = []
    model_topic = getattr(args, "model_topic", "") or ""
    if kafka is not None and model_topic:
        from stream.kafka_admin import ensure_topics

        ensure_topics(kafka, {model_topic: 1}, configs={model_topic: {"cleanup.policy": "compact"}})
        workers.append(ModelTopicFollower(kafka, model_topic, slots, metrics))
    if getattr(args, "watch_model_dir", 0):
        workers.append(
            ModelDirWatcher(args.model_dir, slots, metrics, interval_s=args.watch_model_dir)
        )
        if load is not None:
            workers.append(load_watcher(args, load, metrics))
    if not args.no_refit:
        publish = None
        if kafka is not None and model_topic:
            from stream.kafka_io import KafkaSink

            # a producer of its own: the serving loop's flushes and errors stay its own
            publish = ModelPublisher(KafkaSink(kafka), model_topic)
        worker = RefitWorker(refit_config(args), slots, metrics, publish=publish)
        service.observers.append(worker.observe)
        workers.append(worker)
    for w in workers:
        w.start()
    return workers


def attach_load(
    args: argparse.Namespace, service: ForecastService, metrics: Metrics, device: str = "cpu"
) -> LoadForecasting | None:
    """Add load forecasts to ``service`` when load models for ``--bin-s`` are in the model dir."""
    from stream.model_slots import have_models, read_slots
    from stream.tasks.load import LoadConfig, LoadForecasting

    if args.no_load:
        return None
    slots = read_slots(args.model_dir, args.models, metrics, device=device, task="load")
    for name, slot in slots.items():
        cur = slot.current()
        why = _bin_mismatch(cur.meta, args.bin_s) if cur else None
        if why is not None:
            log.warning("load model %s: %s: not used", name, why)
            slots[name] = type(slot)(name)
    if not have_models(slots):
        log.info("no load models in %s: publishing next-request forecasts only", args.model_dir)
        return None
    load = LoadForecasting(
        LoadConfig(
            service.config.output_topic, args.bin_s, tuple(args.horizons), service.config.stream_key
        ),
        slots,
        metrics,
    )
    service.add_task(load)
    return load


def _bin_mismatch(meta: dict[str, Any], bin_s: float) -> str | None:
    """Why a load artifact cannot forecast ``bin_s`` bins (None: it can)."""
    trained = meta.get("load", {}).get("bin_s")
    if trained is not None and float(trained) != float(bin_s):
        return f"trained for {trained}s bins, not {bin_s}s"
    return None


def load_watcher(
    args: argparse.Namespace, load: LoadForecasting, metrics: Metrics
) -> ModelDirWatcher:
    """A model-dir watcher that swaps newer load models into ``load``'s slots: ones for this
    ``--bin-s`` whose window fits the bins the service keeps."""
    from stream.model_sync import ModelDirWatcher

    def compatible(meta: dict[str, Any], fc: Forecaster) -> str | None:
        capacity = load.bins.capacity
        if fc.seq_len > capacity:
            return f"needs {fc.seq_len} bins of history, the service keeps {capacity}"
        return _bin_mismatch(meta, args.bin_s)

    return ModelDirWatcher(
        args.model_dir,
        load.slots,
        metrics,
        interval_s=args.watch_model_dir,
        task="load",
        compatible=compatible,
    )
