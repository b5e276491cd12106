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
    the real serving process, :class:`~stream.service.ForecastService` over
    ``KafkaSource`` and :class:`~stream.kafka_batch.BatchKafkaSink` with the models of
    ``--model-dir``, assembled as ``reqcast serve`` assembles it from its settings
    (:func:`stream.app.complete_service`), and configured by ``reqcast serve``'s own parser
    with its default flags (:mod:`stream.bench.throughput_serve`): the refit worker on its
    default schedule (its training in a lower-priority child process), the load task with
    its ``ensemble``, the model-topic follower (on a topic of the run's own) and the
    model-dir watcher, windows rebuilt from history on assignment. ``--no-refit``,
    ``--no-load`` and ``--serve-args`` change that as they would change ``reqcast serve``;
    ``--serve-args "--no-refit --no-load --model-topic '' --watch-model-dir 0
    --history-records 0"`` runs the loop alone, as the bench did before. It publishes one
    forecast per model and event plus the ``best`` one (3 with lstm and dlinear), so it
    writes three times as many messages as the echo, and the load forecasts of every closed
    bin (counted apart: ``load_outputs``; the latency is the next-request forecasts').

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

This module holds the flags and the run's sequence; the harness (topics, events, models)
is :mod:`stream.bench.throughput_setup`, the measurement of each pipeline
:mod:`stream.bench.throughput_pipelines`, and the ratios, targets and table
:mod:`stream.bench.throughput_report`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from predictor.errors import ConfigError
from stream.bench.throughput_pipelines import memory_check, run_pipeline
from stream.bench.throughput_report import check_targets, render_table, serve_echo_ratios
from stream.bench.throughput_serve import (
    OLD_SERVE_ARGS,
    describe,
    parse_serve,
    serve_argv,
    served_model_dir,
)
from stream.bench.throughput_setup import (
    Topics,
    delete_topics,
    ensure_models,
    kafka_python_version,
    load_average,
    make_events,
    produce,
)
from stream.cliutil import add_flag, add_kafka_flags, check_torch_threads, kafka_config

log = logging.getLogger(__name__)

#: models served when ``--models`` is not given
DEFAULT_MODELS = ("lstm", "dlinear")


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
        "--trace-rate",
        type=float,
        default=1000.0,
        help="events per second of trace time: the synthetic timestamps are compressed to "
        "this mean rate (gaps in proportion), so load bins close as they would for a service "
        "taking that many requests a second; 0 keeps the synthetic week's own clock (about "
        "0.3 requests/s: a load bin closes every few events, the worst case for the load task)",
    )
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
    add_flag(
        p,
        "--no-refit",
        action="store_true",
        help="serve without the refit worker (as `reqcast serve --no-refit`)",
        env=False,
    )
    add_flag(
        p,
        "--no-load",
        action="store_true",
        help="serve without load forecasts (as `reqcast serve --no-load`)",
        env=False,
    )
    add_flag(
        p,
        "--serve-args",
        default="",
        help="more `reqcast serve` flags for the serve side, one string (e.g. "
        '"--refit-every-s 60"; the loop alone, as before serve\'s defaults were benched: '
        f'"{OLD_SERVE_ARGS}")',
        env=False,
    )


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
    parse_serve(serve_argv(args, str(args.model_dir), "reqcast-bench-models"))  # a bad flag: now


def run(args: argparse.Namespace) -> int:
    from stream.kafka_admin import ensure_topics, wait_for_broker

    _check(args)
    kafka = kafka_config(args)
    wait_for_broker(kafka, timeout_s=30)
    models = ensure_models(args.model_dir, args.models, args.seed)
    topics = Topics(f"reqcast-bench-{uuid.uuid4().hex[:8]}")
    served = served_model_dir(args.model_dir, args.models)
    args.serve_argv = serve_argv(args, str(served), topics.models)
    serve_args, settings = parse_serve(args.serve_argv)
    created = {t: args.partitions for t in topics.inputs()}
    created.update({t: 1 for t in topics.outputs()})
    created[topics.models] = 1
    if args.memory_check:
        created[topics.memory_in] = args.partitions
    ensure_topics(kafka, created, configs={topics.models: {"cleanup.policy": "compact"}})
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
            "load_average_at_start": load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "kafka_python": kafka_python_version(),
            # what `reqcast serve` flags the serve side ran with, and the settings they made
            "serve_args": args.serve_argv,
            "trace_rate": args.trace_rate or None,
            "serve": describe(settings, serve_args),
            # without it kafka-python computes record CRCs in pure Python (slow)
            "crc32c_installed": importlib.util.find_spec("crc32c") is not None,
        },
    }
    try:
        events = make_events(args.events, args.seed, trace_rate=args.trace_rate or None)
        log.info("producing %d events to %s", len(events), topics.backlog)
        report["produce"] = produce(kafka, topics.backlog, events, rate=None)
        for pipeline in ("echo", "serve"):
            report[pipeline] = run_pipeline(pipeline, args, kafka, topics, events, timeout)
        report["ratios"] = serve_echo_ratios(report["echo"], report["serve"])
        if args.memory_check:
            report["memory"] = memory_check(args, kafka, topics)
        report["targets"] = check_targets(report, args.rate)
    finally:
        shutil.rmtree(served, ignore_errors=True)
        if not args.keep_topics:
            delete_topics(kafka, sorted(created))
    report["config"]["load_average_at_end"] = load_average()
    print(render_table(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


if __name__ == "__main__":
    sys.exit("usage: reqcast bench stream --help")
