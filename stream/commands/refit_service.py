"""``reqcast trainer``: the periodic trainer as its own service (e.g. on a GPU machine).

Reads the input topic in its own consumer group (warming its buffer from the
recent history of every partition first), refits every model on the schedule (the
next-request models, and the load models for ``--bin-s`` found in the model directory on
their own schedule),
and publishes each version the guard accepts to the compacted model topic and
the model directory. ``serve`` instances started with ``--no-refit`` pick them
up from the topic. The input is read by a :class:`~stream.loop.DeliveryLoop` (poll retries
with backoff, offsets committed once a batch is in the buffer, broker health), like
``serve``'s.

(The module is named for what it runs; the command keeps its name, see
:data:`stream.cli.MODULES`.)
"""

from __future__ import annotations

import argparse
import logging
import threading

from predictor.errors import InvalidEvent
from predictor.events import RequestEvent, decode_event
from predictor.slot import ModelSlot
from predictor.streams import STREAM_KEYS
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.app import bin_mismatch, stop_on_signals
from stream.cliutil import add_flag, add_kafka_flags, add_metrics_flags, kafka_config
from stream.loop import DeliveryLoop, LoopConfig, Message, batch_offsets
from stream.metrics import Metrics, serve_metrics
from stream.refit_flags import add_refit_flags, refit_config
from stream.transport import Record

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    add_kafka_flags(p)
    add_flag(p, "--input-topic", default="requests", help="topic of request events")
    add_flag(p, "--group-id", default="reqcast-trainer", help="the trainer's own consumer group")
    add_flag(
        p,
        "--model-topic",
        default="reqcast-models",
        help="compacted topic accepted models are published to",
    )
    add_flag(p, "--model-dir", default="models", help="where accepted versions are written")
    add_flag(p, "--models", nargs="+", default=["lstm", "dlinear"], help="models to refit")
    add_flag(
        p,
        "--stream-key",
        default="model",
        choices=list(STREAM_KEYS),
        help="one sequence per model field, or one for all",
    )
    add_flag(p, "--seq-len", type=int, default=64, help="window length when no model exists yet")
    add_flag(
        p,
        "--bin-s",
        type=float,
        default=60.0,
        help="bins of the load models to refit (those in --model-dir trained for other bins "
        "are left alone)",
    )
    add_metrics_flags(p, 9465)
    add_flag(
        p, "--max-poll-interval-ms", type=int, default=300_000, help="consumer max poll interval"
    )
    add_flag(
        p, "--session-timeout-ms", type=int, default=10_000, help="consumer group session timeout"
    )
    add_flag(p, "--max-refits", type=int, help="stop after this many refits (for tests)")
    add_refit_flags(p)


def _decode(records: list[Record]) -> list[RequestEvent]:
    out = []
    for rec in records:
        try:
            out.append(decode_event(rec.value))
        except InvalidEvent:
            continue  # serve dead-letters it; the trainer only learns from valid events
    return out


def run(args: argparse.Namespace) -> int:
    from stream.kafka_admin import ensure_topics, read_before, wait_for_broker
    from stream.kafka_io import KafkaSink, KafkaSource
    from stream.model_slots import read_slots
    from stream.model_sync import ModelPublisher
    from trainer.refit import RefitWorker

    config = refit_config(args)  # bad flags fail before anything connects
    kafka = kafka_config(args)
    wait_for_broker(kafka, timeout_s=30)
    ensure_topics(
        kafka, {args.model_topic: 1}, configs={args.model_topic: {"cleanup.policy": "compact"}}
    )
    metrics = Metrics()
    serve_metrics(args.metrics_port, metrics.registry, args.metrics_host)
    slots = read_slots(args.model_dir, args.models, metrics)
    load_slots = read_slots(args.model_dir, args.models, metrics, task=LOAD)
    for name, slot in load_slots.items():
        cur = slot.current()
        why = bin_mismatch(cur.meta, args.bin_s) if cur is not None else None
        if why is not None:
            log.warning("load model %s: %s: not refitted", name, why)
            load_slots[name] = ModelSlot(name)
    worker = RefitWorker(
        config,
        slots,
        metrics,
        publish=ModelPublisher(KafkaSink(kafka), args.model_topic),
        max_refits=args.max_refits,
        load_slots=load_slots,
    )

    def on_assign(partitions: list[int]) -> None:
        # what came before the group's position; what follows arrives through poll()
        ends = source.committed(partitions)
        history = read_before(kafka, args.input_topic, ends, config.window_events)
        worker.observe(_decode(history))
        log.info("buffer warmed with %d events of partitions %s", len(worker.buffer), partitions)

    source = KafkaSource(
        kafka,
        args.input_topic,
        args.group_id,
        on_assign=on_assign,
        auto_offset_reset="latest",
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=max(100, args.session_timeout_ms // 3),
        max_poll_interval_ms=args.max_poll_interval_ms,
    )
    stop = threading.Event()
    stop_on_signals(stop)

    def process(records: list[Record]) -> tuple[list[Message], dict[int, int]]:
        worker.observe(_decode(records))
        return [], batch_offsets(records)  # nothing to publish: commit once observed

    def done() -> bool:
        if not args.max_refits:
            return False
        refits = [d for d in worker.decisions if d.task == NEXT_REQUEST]
        return worker.finished or len(refits) >= args.max_refits * len(config.models)

    # the serving loop's poll retry and commit handling, without a sink
    loop = DeliveryLoop(
        LoopConfig(batch_max=1000, poll_timeout_s=0.5),
        source,
        None,
        process,
        metrics,
        observe_latency=False,
    )
    loop.health.connected = source.connected
    loop.health.start()
    worker.start()
    log.info(
        "trainer on %s: refit every %s events / %s s, load models %s every %s s; publishing to %s",
        args.input_topic,
        config.every_events,
        config.every_s,
        [n for n, s in load_slots.items() if s.current() is not None],
        config.load_every_s,
        args.model_topic,
    )
    try:
        loop.run(stop, until=done)
    finally:
        loop.health.stop()
        worker.stop()
        source.close()
    for d in worker.decisions:
        print(d.describe())
    return 0
