"""``reqcast replay``: publish a trace to a Kafka topic as request events.

Pacing: ``--speed X`` replays at X times real time (event-time gaps divided by X),
``--rate R`` at R events per second, neither as fast as the broker takes them.
"""

from __future__ import annotations

import argparse

from predictor.errors import ConfigError
from predictor.streams import STREAM_KEYS
from predictor.traces import iter_events, load_trace
from stream.cliutil import add_flag, add_kafka_flags, add_trace_flags, kafka_config, trace_path
from stream.trace_replay import check_pacing, replay


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="trace file (same as --data-path)")
    add_trace_flags(p, required=True)
    add_kafka_flags(p)
    add_flag(p, "--topic", default="requests", help="topic to publish the events to")
    add_flag(p, "--speed", type=float, help="times real time (event-time gaps / SPEED)")
    add_flag(p, "--rate", type=float, help="events per second")
    add_flag(
        p,
        "--stream-key",
        default="model",
        choices=list(STREAM_KEYS),
        help="message key: the model name, or one stream 'all'",
    )
    add_flag(p, "--limit", type=int, help="replay only the first N events of the trace")
    add_flag(
        p,
        "--partitions",
        type=int,
        help="create the topic with this many partitions if it does not exist",
    )
    add_flag(p, "--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    from stream.kafka_io import KafkaSink

    check_pacing(args.speed, args.rate)
    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit must be 0 or more, got {args.limit}")
    config = kafka_config(args)
    path = trace_path(args)
    df, _ = load_trace(
        path, columns=args.columns, time_unit=args.time_unit, drop_failed=args.drop_failed
    )
    if args.limit is not None:
        df = df.head(args.limit)
    if args.partitions:
        from stream.kafka_admin import ensure_topics

        ensure_topics(config, {args.topic: args.partitions})
    sink = KafkaSink(config)
    try:
        sent = replay(
            iter_events(df),
            sink,
            args.topic,
            stream_key=args.stream_key,
            speed=args.speed,
            rate=args.rate,
            progress=not args.no_progress,
            total=len(df),
        )
    finally:
        sink.close()
    print(f"replayed {sent:,} events from {path} to topic {args.topic}")
    return 0
