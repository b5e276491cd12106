"""``reqcast bench swap``, measurement 1: the pause hot swaps cause in a paced stream.

:func:`swap_pause` trains first models on the head of a trace, replays the rest at
``--rate`` through the serving loop (in process, or over Kafka with
``--bootstrap-servers``) while a :class:`TimedRefitWorker` refits and swaps challengers in
(``--swap-mode refit``) or a :class:`VersionLoader` installs reloaded artifacts as new
versions (``--swap-mode load``), records when each forecast batch is delivered, and
hands the timeline to :func:`stream.bench.swap_analysis.analyse`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry

from predictor.background import PeriodicWorker
from predictor.errors import ConfigError
from predictor.streams import stream_series
from predictor.tasks import LOAD
from predictor.traces import iter_events
from stream.bench.swap_analysis import RefitSpan, analyse
from stream.cliutil import kafka_config, load_from_args
from stream.metrics import Metrics
from stream.service import ForecastService, Message, ServeConfig
from stream.tasks.load import LoadForecasting
from stream.transport import MemoryBroker, Sink, Source
from trainer.guard import Decision
from trainer.refit import RefitConfig, RefitWorker
from trainer.train import TrainConfig, train_forecaster

log = logging.getLogger(__name__)


class TimedRefitWorker(RefitWorker):
    """A :class:`RefitWorker` that notes when each refit starts and each swap lands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spans: list[RefitSpan] = []

    def refit_once(self) -> list[Decision]:
        span = RefitSpan(time.perf_counter())
        self.spans.append(span)
        try:
            span.decisions = super().refit_once()
            return span.decisions
        finally:
            span.end = time.perf_counter()

    def refit_load_once(self) -> list[Decision]:
        span = RefitSpan(time.perf_counter(), task=LOAD)
        self.spans.append(span)
        try:
            span.decisions = super().refit_load_once()
            return span.decisions
        finally:
            span.end = time.perf_counter()
            if not span.decisions and not span.swaps:
                self.spans.remove(span)  # not enough bins yet: nothing ran

    def consider(self, *args: Any, **kwargs: Any) -> Decision:
        decision = super().consider(*args, **kwargs)
        if decision.accepted and self.spans:
            self.spans[-1].swaps.append(time.perf_counter())
        return decision


class VersionLoader(PeriodicWorker):
    """Every ``every_s`` seconds, loads each model's artifact again (checksum and all) and
    installs it as the next version, from its own thread: a swap with no training here."""

    def __init__(
        self, model_dir: Path, slots: dict[str, Any], metrics: Metrics, every_s: float
    ) -> None:
        from predictor.artifacts import list_artifacts

        super().__init__("version-loader", every_s, stop_timeout_s=30.0)
        self.slots, self.metrics, self.every_s = slots, metrics, every_s
        self.paths = {m: list_artifacts(model_dir, m)[-1].path for m in slots}
        self.spans: list[RefitSpan] = []

    def observe(self, events: Any) -> None:
        return None

    def tick(self) -> None:
        from predictor.artifacts import load_artifact
        from stream.model_slots import install

        span = RefitSpan(time.perf_counter())
        self.spans.append(span)
        for name, slot in self.slots.items():
            fc, meta = load_artifact(self.paths[name])
            meta = {**meta, "version": slot.version + 1}
            if install(slot, fc, meta, self.metrics, reason="bench swap"):
                span.swaps.append(time.perf_counter())
                span.decisions.append(Decision(name, True, "loaded"))
        span.end = time.perf_counter()


def _first_models(
    head: pd.DataFrame, model_dir: Path, models: Iterable[str], seq_len: int, epochs: int, seed: int
) -> dict[str, float]:
    """Train and save version 1 of each model on ``head``; seconds per model."""
    from predictor.artifacts import save_artifact

    series = list(stream_series(head, "model", min_rows=seq_len + 2).values())
    if not series:
        raise ConfigError(f"the head of the trace has no stream longer than {seq_len + 2} rows")
    took = {}
    for model in models:
        cfg = TrainConfig.for_model(model, seq_len=seq_len, epochs=epochs, device="cpu", seed=seed)
        result = train_forecaster(series, cfg, progress=False)
        save_artifact(
            result.forecaster, model_dir, preset="bench", version=1, extra=result.metadata()
        )
        took[model] = round(result.duration_s, 2)
    return took


def _attach_load(
    args: argparse.Namespace, service: ForecastService, metrics: Metrics, head: pd.DataFrame
) -> LoadForecasting | None:
    """Load forecasts in the service (``--bin-s`` bins, horizons up to ``--load-horizon``),
    their bins warmed with the head, their slots empty: in refit mode the worker trains
    first load versions on the head's bins at once (a cold start) and refits them every
    ``--load-refit-every-s``. None with ``--skip-load`` or in load mode."""
    from predictor.slot import ModelSlot
    from stream.tasks.load import LoadConfig, LoadForecasting

    if args.skip_load or args.swap_mode == "load":
        return None
    horizons = tuple(sorted({1, min(6, args.load_horizon), args.load_horizon}))
    load = LoadForecasting(
        LoadConfig(service.config.output_topic, args.bin_s, horizons, service.config.stream_key),
        {m: ModelSlot(m) for m in args.models},
        metrics,
    )
    load.warm(list(iter_events(head)))
    service.add_task(load)
    return load


def _transport(args: argparse.Namespace, topic: str) -> tuple[Source, Sink, Sink, str, list[Any]]:
    """Source and sink of the service, the replay's sink, a description, things to close."""
    if not args.bootstrap_servers:
        broker = MemoryBroker()
        broker.create_topic(topic, 1)
        return broker.source(topic, "bench-swap"), broker.sink(), broker.sink(), "in process", []
    from stream.kafka_admin import ensure_topics, wait_for_broker
    from stream.kafka_batch import BatchKafkaSink
    from stream.kafka_io import KafkaSink, KafkaSource

    kafka = kafka_config(args)
    wait_for_broker(kafka, timeout_s=30)
    ensure_topics(kafka, {topic: 1, f"{topic}.forecasts": 1, f"{topic}.dlq": 1})
    source = KafkaSource(
        kafka,
        topic,
        f"{topic}-serve",
        max_poll_interval_ms=3000,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    sink, replay_sink = BatchKafkaSink(kafka), KafkaSink(kafka)
    return (
        source,
        sink,
        replay_sink,
        f"Kafka at {kafka.bootstrap_servers}",
        [source, sink, replay_sink],
    )


def swap_pause(args: argparse.Namespace) -> dict[str, Any]:
    """Serve a paced replay while refits swap models in; the gaps between deliveries."""
    from stream.model_slots import read_slots
    from stream.trace_replay import replay

    df, _, source_name = load_from_args(
        args, synth_rows=args.head_rows + args.events, synth_seed=args.seed
    )
    if len(df) <= args.head_rows:
        raise ConfigError(f"the trace has {len(df)} rows: not more than --head-rows")
    head, tail = df.iloc[: args.head_rows], df.iloc[args.head_rows :].head(args.events)
    topic = f"bench-swap-{int(time.time())}"
    with tempfile.TemporaryDirectory(prefix="reqcast-bench-swap-") as tmp:
        model_dir = Path(tmp)
        first = _first_models(
            head, model_dir, args.models, args.seq_len, args.first_epochs, args.seed
        )
        metrics = Metrics(CollectorRegistry())
        slots = read_slots(model_dir, args.models, metrics)
        source, sink, replay_sink, where, closers = _transport(args, topic)
        config = ServeConfig(
            topic, f"{topic}.forecasts", batch_max=args.batch_max, poll_timeout_s=0.05
        )
        service = ForecastService(config, source, sink, slots, metrics)
        service.warm(list(iter_events(head.tail(config.window_capacity * 20))))
        load = _attach_load(args, service, metrics, head)
        refit = RefitConfig(
            model_dir=model_dir,
            models=tuple(args.models),
            every_events=args.refit_every_events,
            every_s=None,
            window_events=args.refit_window,
            min_events=min(2_000, args.refit_every_events),
            seq_len=args.seq_len,
            epochs=args.refit_epochs,
            device=args.train_device,
            tolerance=args.guard_tolerance,
            seed=args.seed,
            isolate=not args.refit_in_process,
            load_bin_s=args.bin_s if load is not None else None,
            load_every_s=args.load_refit_every_s or None,
            load_seq_len=args.load_seq_len,
            load_horizon=args.load_horizon,
        )
        worker: TimedRefitWorker | VersionLoader
        if args.swap_mode == "load":
            worker = VersionLoader(model_dir, dict(slots), metrics, args.load_every_s)
        else:
            worker = TimedRefitWorker(
                refit, slots, metrics, load_slots=load.slots if load is not None else None
            )
            if worker.bins is not None:  # the head's bins: first load models from the start
                worker.bins.add(iter_events(head))
        service.observers.append(worker.observe)
        deliveries: list[tuple[float, list[Message]]] = []

        def delivered(_: ForecastService, messages: list[Message]) -> None:
            deliveries.append((time.perf_counter(), messages))  # cheap: parsed afterwards

        service.on_batch = delivered
        stop = threading.Event()
        sent: list[int] = []
        replayer = threading.Thread(
            target=lambda: sent.append(
                replay(
                    iter_events(tail),
                    replay_sink,
                    topic,
                    rate=args.rate or None,
                    progress=False,
                    stop=stop,
                )
            ),
            name="replay",
            daemon=True,
        )
        expected_s = len(tail) / args.rate if args.rate else 0.0
        limit = threading.Timer(expected_s * 2 + 120, stop.set)
        limit.daemon = True
        log.info(
            "bench swap: %d events at %s events/s %s; refit every %d events",
            len(tail),
            f"{args.rate:g}" if args.rate else "full speed",
            where,
            args.refit_every_events,
        )
        join_deadline = time.monotonic() + 60
        while not source.assignment() and time.monotonic() < join_deadline:
            service.step(stop)  # join the group before the clock starts (nothing sent yet)
        worker.start()
        started = time.perf_counter()
        replayer.start()
        limit.start()
        try:
            service.run(stop, max_events=len(tail))
        finally:
            elapsed = time.perf_counter() - started
            stop.set()
            limit.cancel()
            replayer.join(timeout=10)
            worker.stop(timeout_s=300)
            for c in closers:
                c.close()
        versions = {n: s.version for n, s in slots.items()}
    report = analyse(deliveries, worker.spans, service, config.output_topic, list(args.models))
    report.update(
        {
            "source": source_name,
            "transport": where,
            "events_sent": sent[0] if sent else None,
            "rate_target": args.rate,
            "elapsed_s": round(elapsed, 2),
            "events_per_s": round(service.stats.events / max(elapsed, 1e-9), 1),
            "first_model_train_s": first,
            "final_versions": versions,
            "swap_mode": args.swap_mode,
            "load_models": None
            if load is None
            else {
                "bin_s": args.bin_s,
                "refit_every_s": args.load_refit_every_s if args.swap_mode == "refit" else None,
                "seq_len": args.load_seq_len,
                "horizon_bins": args.load_horizon,
                "final_versions": {n: s.version for n, s in load.slots.items()},
            },
            "load_every_s": args.load_every_s if args.swap_mode == "load" else None,
            "refit": {
                "every_events": args.refit_every_events,
                "window": args.refit_window,
                "epochs": args.refit_epochs,
                "seq_len": args.seq_len,
                "guard_tolerance": args.guard_tolerance,
                "device": args.train_device,
            },
        }
    )
    return report
