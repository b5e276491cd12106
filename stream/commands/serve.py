"""``reqcast serve``: the streaming forecast service over Kafka.

Consumes request events from ``--input-topic`` in consumer group ``--group-id``,
publishes a next-request forecast per model for every valid event to
``--output-topic`` and dead letters to ``--dlq-topic``; commits input offsets
only once those are acknowledged (at least once). Without models in
``--model-dir`` it serves all the same: load forecasts come from the ensemble's untrained
experts, and the networks join as their first versions arrive (the refit trains them as
soon as it has enough data, or they come over the model topic).
"""

from __future__ import annotations

import argparse
import logging
import threading

from predictor.errors import ConfigError
from stream.app import (
    complete_service,
    kafka_service,
    service_metrics,
    stop_on_signals,
)
from stream.cliutil import set_torch_threads
from stream.metrics import serve_metrics
from stream.serve_flags import add_serve_flags, service_settings

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    add_serve_flags(p)


def run(args: argparse.Namespace) -> int:
    from stream.cliutil import kafka_config
    from stream.kafka_admin import ensure_topics, wait_for_broker
    from stream.kafka_batch import BatchKafkaSink
    from stream.model_slots import have_models, read_slots
    from stream.service import tune_gc
    from trainer.device import resolve_device

    settings = service_settings(args)
    config = settings.serve
    kafka = kafka_config(args)
    if not args.broker_wait > 0:
        raise ConfigError(f"--broker-wait must be positive, got {args.broker_wait:g}")
    metrics = service_metrics(settings.metrics_max_streams)
    slots = read_slots(
        args.model_dir,
        args.models,
        metrics,
        device=resolve_device(args.device),
        missing_level=logging.DEBUG,  # said once below
    )
    cold = not have_models(slots)
    missing = [name for name, slot in slots.items() if slot.current() is None]
    if missing and not cold:
        log.warning(
            "no artifacts of %s in %s: %s joins when a version arrives (refit, model topic)",
            ", ".join(missing),
            args.model_dir,
            "it" if len(missing) == 1 else "they",
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
    _, workers = complete_service(
        settings,
        service,
        slots,
        metrics,
        kafka=kafka,
        device=resolve_device(args.device),
        cold=cold,
    )
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
