"""Flags shared by ``reqcast serve`` and ``reqcast run``, and the settings they make
(:class:`stream.app.ServiceSettings`): the one place flags become the serving process's
typed configuration."""

from __future__ import annotations

import argparse

from predictor.drift import DEFAULT_FACTOR
from predictor.errors import ConfigError
from stream.app import LoadSettings, ServiceSettings, WorkerSettings
from stream.cliutil import add_flag, add_kafka_flags, add_metrics_flags, check_torch_threads
from stream.metrics import MAX_EXPORTED_STREAMS
from stream.refit_flags import add_refit_flags, refit_config
from stream.service import ServeConfig


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
        "--next-request-ensemble",
        action="store_true",
        help="also publish the next-request `ensemble`: per stream and quantity, the served "
        "models and the baselines aggregated online (BOA), its interval calibrated online",
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
    add_metrics_flags(p, 9464)
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
        "--drift-factor",
        type=float,
        default=DEFAULT_FACTOR,
        help="with the refit: request a refit of a task as soon as its schedule allows when a "
        "serving model's online MAE over its last 200 next-request forecasts (30 one-bin-"
        "ahead load forecasts) exceeds this many times its held-out MAE on any quantity "
        '(0: never); counted in reqcast_refit_requests_total{reason="drift"}',
    )
    add_flag(
        p,
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads for inference (0: torch's default, one per core); one keeps the "
        "small models from competing with the Kafka client and broker for cores",
    )


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of ``reqcast serve`` (its parser; the streaming benchmark parses its serve
    side's command line with it, so it runs exactly what ``serve`` would)."""
    add_kafka_flags(p)
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


def service_settings(args: argparse.Namespace) -> ServiceSettings:
    """The settings of ``args`` (``serve``'s or ``run``'s), checked: a bad value is a
    :class:`ConfigError` naming its flag."""
    if args.window < 1 or args.batch_max < 1:
        raise ConfigError("--window and --batch-max must be positive")
    if not args.max_future > 0 or not args.max_lateness >= 0:
        raise ConfigError("--max-future must be positive and --max-lateness 0 or more")
    history_records = getattr(args, "history_records", 0)  # serve only
    if history_records < 0:
        raise ConfigError(f"--history-records must be 0 or more, got {history_records}")
    check_torch_threads(args.torch_threads)  # applied once the loop starts
    if not args.drift_factor >= 0:
        raise ConfigError(f"--drift-factor must be 0 (off) or more, got {args.drift_factor}")
    if args.metrics_max_streams < 0:
        raise ConfigError(
            f"--metrics-max-streams must be 0 or more, got {args.metrics_max_streams}"
        )
    serve = ServeConfig(
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        dlq_topic=args.dlq_topic,
        stream_key=args.stream_key,
        batch_max=args.batch_max,
        window_capacity=args.window,
        max_lateness_s=args.max_lateness,
        max_future_s=args.max_future,
        publish_best=not args.no_best,
        next_request_ensemble=bool(args.next_request_ensemble),
        history_records=history_records,
    )
    watch_s = getattr(args, "watch_model_dir", 0) or 0.0  # serve only
    load = LoadSettings(
        model_dir=args.model_dir,
        models=tuple(args.models),
        bin_s=args.bin_s,
        horizons=tuple(args.horizons),
        enabled=not args.no_load,
        watch_s=watch_s,
    )
    workers = WorkerSettings(
        model_dir=args.model_dir,
        watch_model_dir_s=watch_s,
        model_topic=getattr(args, "model_topic", "") or "",  # serve only
        refit=None if args.no_refit else refit_config(args),
        drift_factor=args.drift_factor,
    )
    return ServiceSettings(serve, load, workers, args.metrics_max_streams)
