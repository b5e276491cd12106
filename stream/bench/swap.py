"""``reqcast bench swap``: what hot swaps cost the stream, and what a refit costs.

Two measurements, each optional:

1. **Hot-swap pause.** First models are trained on the head of a trace; the rest is
   replayed at a steady rate (2,000 events/s by default) through the serving loop
   (in process, or over Kafka with ``--bootstrap-servers``) while a
   :class:`~trainer.refit.RefitWorker` refits every ``--refit-every-events`` events and
   swaps the challengers in. The wall-clock time of every delivered forecast batch is
   recorded; the report compares the longest gap between consecutive deliveries inside
   a swap window (from a refit's start to its last swap) with the median gap over the
   whole run (target: at most 3 times), counts the swaps, and checks that every event
   has a forecast from every model and that versions never move backwards. By default
   the guard is opened wide (``--guard-tolerance``) so that every sound refit becomes a
   swap; the pause is the thing measured here, not the guard. With ``--swap-mode load``
   nothing trains in the process: a thread loads each model's artifact again every
   ``--load-every-s`` seconds and installs it as the next version, as the model-topic
   follower does when a separate ``reqcast trainer`` publishes (the deployment where
   training runs on another machine); that isolates the cost of the swap itself.
2. **Refit time.** Each model is trained on ``--refit-events`` synthetic events (the
   leading 90 % of each stream, as a refit holds the rest out for the guard) with the
   refit defaults (sequence length 64, 10 epochs, batch 64, patience 3) on the CPU, and
   the guard's held-out scoring is timed after it.

Figures are printed as a table and, with ``--json``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from prometheus_client import CollectorRegistry

from predictor.background import PeriodicWorker
from predictor.errors import ConfigError
from predictor.streams import stream_series
from predictor.traces import iter_events
from stream.cliutil import (
    add_flag,
    add_trace_flags,
    kafka_config,
    load_from_args,
    set_torch_threads,
)
from stream.metrics import Metrics
from stream.service import ForecastService, Message, ServeConfig
from stream.transport import MemoryBroker, Sink, Source
from trainer.guard import Decision, judge
from trainer.refit import RefitConfig, RefitWorker
from trainer.train import TrainConfig, TrainResult, train_forecaster

log = logging.getLogger(__name__)

#: the hot-swap target (docs/design.md, "Performance targets"): the longest gap between
#: forecasts during a swap at most 3 x the median gap
TARGET_RATIO = 3.0
_REFIT = RefitConfig(model_dir="")  # the refit defaults


def add_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Hot-swap pause while refits swap models into a paced stream, and refit time."
    add_trace_flags(p)
    add_flag(p, "--models", nargs="+", default=list(_REFIT.models), help="models to refit")
    add_flag(p, "--seed", type=int, default=0, help="seed of the synthetic traces and training")
    add_flag(p, "--json", help="write the figures as JSON to this file", env=False)
    add_flag(p, "--no-progress", action="store_true", help="no progress bars")
    add_flag(
        p,
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads for serving and training (0: torch's default)",
    )
    add_flag(p, "--skip-swap", action="store_true", help="skip the hot-swap pause measurement")
    add_flag(p, "--skip-refit", action="store_true", help="skip the refit time measurement")
    g = p.add_argument_group("hot-swap pause")
    add_flag(g, "--events", type=int, default=60_000, help="events replayed while refitting")
    add_flag(g, "--rate", type=float, default=2_000.0, help="replay rate in events/s")
    add_flag(
        g, "--head-rows", type=int, default=5_000, help="rows before them that train first models"
    )
    add_flag(g, "--first-epochs", type=int, default=3, help="epochs of the first models")
    add_flag(g, "--seq-len", type=int, default=_REFIT.seq_len, help="window length of first models")
    add_flag(
        g,
        "--swap-mode",
        default="refit",
        choices=["refit", "load"],
        help="refit: a RefitWorker trains in this process and swaps its challengers in; "
        "load: a thread loads new versions from artifacts and offers them, as the "
        "model-topic follower does when a separate trainer publishes",
    )
    add_flag(
        g, "--load-every-s", type=float, default=2.0, help="seconds between versions (load mode)"
    )
    add_flag(
        g, "--refit-every-events", type=int, default=5_000, help="refit after this many events"
    )
    add_flag(
        g, "--refit-window", type=int, default=5_000, help="recent events per stream a refit uses"
    )
    add_flag(g, "--refit-epochs", type=int, default=3, help="maximum epochs of those refits")
    add_flag(
        g,
        "--guard-tolerance",
        type=float,
        default=1e9,
        help="relative margin a challenger may be worse by and still be swapped in "
        "(0: the real guard; the default forces every sound refit to swap)",
    )
    add_flag(
        g, "--train-device", default="cpu", choices=["auto", "cpu", "cuda"], help="refit device"
    )
    add_flag(g, "--batch-max", type=int, default=500, help="most events per micro-batch")
    add_flag(
        g,
        "--refit-in-process",
        action="store_true",
        help="train in a thread of the serving process instead of a child process (as serve's flag)",
    )
    add_flag(g, "--bootstrap-servers", help="serve over this Kafka cluster instead of in process")
    g = p.add_argument_group("refit time")
    add_flag(
        g, "--refit-events", type=int, default=100_000, help="synthetic events the refit trains on"
    )
    add_flag(g, "--epochs", type=int, default=_REFIT.epochs, help="maximum epochs (early stopping)")
    add_flag(g, "--batch-size", type=int, default=_REFIT.batch_size, help="training batch size")
    add_flag(
        g, "--full-seq-len", type=int, default=_REFIT.seq_len, help="window length of the refit"
    )
    add_flag(g, "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="training device")


# -- 1. hot-swap pause ----------------------------------------------------------------------
@dataclass
class RefitSpan:
    """One refit of the worker: when it ran, what it decided, when each swap landed."""

    start: float
    end: float = float("nan")
    swaps: list[float] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


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
        )
        worker: TimedRefitWorker | VersionLoader
        if args.swap_mode == "load":
            worker = VersionLoader(model_dir, dict(slots), metrics, args.load_every_s)
        else:
            worker = TimedRefitWorker(refit, slots, metrics)
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
    report = _analyse(deliveries, worker.spans, service, config.output_topic, list(args.models))
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


def _analyse(
    deliveries: list[tuple[float, list[Message]]],
    spans: list[RefitSpan],
    service: ForecastService,
    output_topic: str,
    models: list[str],
) -> dict[str, Any]:
    times = np.array([t for t, _ in deliveries])
    gaps = np.diff(times) if len(times) > 1 else np.empty(0)
    median = float(np.median(gaps)) if len(gaps) else float("nan")

    def window_gaps(lo: float, hi: float) -> np.ndarray:
        # gap i lies between deliveries i and i+1; it counts if it overlaps [lo, hi]
        inside = (times[1:] >= lo) & (times[:-1] <= hi)
        return gaps[inside]

    windows: list[dict[str, Any]] = []
    swap_gaps: list[float] = []  # the longest gap of each window that swapped a model in
    in_swaps: list[np.ndarray] = []
    for span in spans:
        if not np.isfinite(span.end):
            continue  # still running when the stream ended
        end = span.swaps[-1] if span.swaps else span.end
        g = window_gaps(span.start, end)
        if span.swaps and len(g):
            swap_gaps.append(float(g.max()))
            in_swaps.append(g)
        # the gap that contains the swap itself (the reference assignment)
        at_swap = [
            float(gaps[i - 1])
            for t in span.swaps
            if 0 < (i := int(np.searchsorted(times, t))) < len(times)
        ]
        windows.append(
            {
                "refit_s": round(span.end - span.start, 3),
                "swaps": len(span.swaps),
                "decisions": [d.describe() for d in span.decisions],
                "batches": len(g),
                "max_gap_ms": _ms(g.max()) if len(g) else None,
                "p99_gap_ms": _ms(np.quantile(g, 0.99)) if len(g) else None,
                "gap_at_swap_ms": [_ms(v) for v in at_swap],
            }
        )
    max_swap_gap = max(swap_gaps, default=None)
    outside = np.ones(len(gaps), dtype=bool)
    for span in spans:
        if np.isfinite(span.end):
            outside &= ~((times[1:] >= span.start) & (times[:-1] <= span.end))
    # every forecast delivered, and the versions in source order
    seen: dict[str, dict[tuple[int, int], int]] = {m: {} for m in models}
    duplicates = 0
    for _, messages in deliveries:
        for topic, _key, value in messages:
            if topic != output_topic:
                continue
            f = json.loads(value)
            key = (int(f["source"]["partition"]), int(f["source"]["offset"]))
            per_model = seen.setdefault(f["model"], {})
            duplicates += key in per_model
            per_model[key] = int(f["model_version"])
    valid = service.stats.valid
    backwards = {}
    for m, by_source in seen.items():
        v = [by_source[k] for k in sorted(by_source)]
        backwards[m] = int((np.diff(v) < 0).sum()) if len(v) > 1 else 0
    ratio = max_swap_gap / median if max_swap_gap is not None and median > 0 else None
    return {
        "batches": len(deliveries),
        "events": service.stats.events,
        "valid_events": valid,
        "invalid_events": service.stats.invalid,
        "median_gap_ms": _ms(median),
        "p99_gap_ms": _ms(np.quantile(gaps, 0.99)) if len(gaps) else None,
        "max_gap_ms_outside_refits": _ms(gaps[outside].max()) if outside.any() else None,
        "p99_gap_ms_outside_refits": _ms(np.quantile(gaps[outside], 0.99))
        if outside.any()
        else None,
        "p99_gap_ms_during_swaps": _ms(np.quantile(np.concatenate(in_swaps), 0.99))
        if in_swaps
        else None,
        "max_gap_ms_at_swap": max((v for w in windows for v in w["gap_at_swap_ms"]), default=None),
        "max_gap_ms_during_swaps": None if max_swap_gap is None else _ms(max_swap_gap),
        "max_over_median": round(ratio, 2) if ratio is not None else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio is not None and ratio <= TARGET_RATIO),
        "refits": len(spans),
        "swaps": sum(len(s.swaps) for s in spans),
        "rejected": sum(1 for s in spans for d in s.decisions if not d.accepted),
        "windows": windows,
        "forecasts_per_model": {m: len(v) for m, v in seen.items()},
        "events_without_forecast": {m: valid - len(seen.get(m, {})) for m in models},
        "duplicate_forecasts": duplicates,
        "version_steps_backwards": backwards,
        "versions_seen": {m: sorted(set(v.values())) for m, v in seen.items()},
    }


# -- 2. refit time --------------------------------------------------------------------------
def refit_time(args: argparse.Namespace) -> dict[str, Any]:
    """Train each model on ``--refit-events`` synthetic events as a refit would; time it."""
    df, _, _ = load_from_args(
        argparse.Namespace(data_path=None), synth_rows=args.refit_events, synth_seed=args.seed + 1
    )
    series = list(stream_series(df, "model", min_rows=args.full_seq_len + 2).values())
    holdout = [max(1, int(len(s) * _REFIT.holdout_fraction)) for s in series]
    train = [s[:-h] for s, h in zip(series, holdout, strict=True)]
    out: dict[str, Any] = {
        "events": int(sum(len(s) for s in series)),
        "streams": len(series),
        "train_rows": int(sum(len(s) for s in train)),
        "seq_len": args.full_seq_len,
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "patience": _REFIT.patience,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "models": {},
    }
    for model in args.models:
        cfg = TrainConfig.for_model(
            model,
            seq_len=args.full_seq_len,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=_REFIT.patience,
            device=args.device,
            seed=args.seed,
        )
        log.info("bench swap: refit of %s on %d rows", model, out["train_rows"])
        result: TrainResult = train_forecaster(train, cfg, progress=not args.no_progress)
        t0 = time.perf_counter()
        decision = judge(model, result.forecaster, None, series, holdout)
        guard_s = time.perf_counter() - t0
        out["models"][model] = {
            "train_s": round(result.duration_s, 2),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "s_per_epoch": round(result.duration_s / max(result.epochs_run, 1), 2),
            "train_windows": result.n_train,
            "val_windows": result.n_val,
            "guard_s": round(guard_s, 2),
            "guard_score": None
            if decision.challenger_score is None
            else round(decision.challenger_score, 4),
            "device": result.device,
        }
    return out


# -- the command ----------------------------------------------------------------------------
def _table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs, {m['torch_threads']} torch threads, load average "
        f"{m['load_average']} at the start, {m.get('load_average_end')} at the end",
        "",
    ]
    swap = report.get("swap")
    if swap:
        ok = "yes" if swap["meets_target"] else "NO"
        missing = ", ".join(f"{m} {n}" for m, n in swap["events_without_forecast"].items())
        lines += [
            f"hot-swap pause ({swap['swap_mode']} mode, {swap['transport']}, "
            f"{swap['events']:,} events at "
            f"{swap['events_per_s']:,.0f}/s, target {swap['rate_target']:g}/s)",
            "",
            "| figure | value |",
            "|---|---|",
            f"| refits / swaps / rejected | {swap['refits']} / {swap['swaps']} / {swap['rejected']} |",
            f"| forecast batches delivered | {swap['batches']:,} |",
            f"| median gap between deliveries | {swap['median_gap_ms']} ms |",
            f"| p99 gap overall | {swap['p99_gap_ms']} ms |",
            f"| max / p99 gap outside refits | {swap['max_gap_ms_outside_refits']} / "
            f"{swap['p99_gap_ms_outside_refits']} ms |",
            f"| max / p99 gap during swap windows | {swap['max_gap_ms_during_swaps']} / "
            f"{swap['p99_gap_ms_during_swaps']} ms |",
            f"| longest gap containing a swap | {swap['max_gap_ms_at_swap']} ms |",
            f"| max / median (target <= {TARGET_RATIO:g}) | {swap['max_over_median']} ({ok}) |",
            f"| events without a forecast | {missing} |",
            f"| duplicate forecasts / version steps back | {swap['duplicate_forecasts']} / "
            f"{sum(swap['version_steps_backwards'].values())} |",
            f"| versions served | {json.dumps(swap['versions_seen'])} |",
            "",
            "| refit | took (s) | swaps | batches in window | max gap (ms) | p99 gap (ms) "
            "| gap at swap (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i + 1} | {w['refit_s']} | {w['swaps']} | {w['batches']} | {w['max_gap_ms']} "
            f"| {w['p99_gap_ms']} | {', '.join(map(str, w['gap_at_swap_ms']))} |"
            for i, w in enumerate(swap["windows"])
        ]
        lines.append("")
    refit = report.get("refit")
    if refit:
        lines += [
            f"refit time ({refit['events']:,} synthetic events, {refit['train_rows']:,} training "
            f"rows, seq_len {refit['seq_len']}, <= {refit['max_epochs']} epochs, batch "
            f"{refit['batch_size']}, {refit['device']}, {refit['torch_threads']} torch threads)",
            "",
            "| model | train (s) | epochs run | best epoch | s/epoch | guard (s) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {r['train_s']} | {r['epochs_run']} | {r['best_epoch']} | {r['s_per_epoch']} "
            f"| {r['guard_s']} |"
            for m, r in refit["models"].items()
        ]
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.skip_swap and args.skip_refit:
        raise ConfigError("nothing to measure: both --skip-swap and --skip-refit were given")
    if args.rate < 0 or args.events < 1 or args.refit_every_events < 1 or args.refit_events < 1:
        raise ConfigError("--events, --refit-every-events and --refit-events must be positive")
    set_torch_threads(args.torch_threads)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": _cpus(),
            "torch_threads": torch.get_num_threads(),
            "load_average": _loadavg(),
        }
    }
    if not args.skip_swap:
        report["swap"] = swap_pause(args)
    if not args.skip_refit:
        report["refit"] = refit_time(args)
    report["machine"]["load_average_end"] = _loadavg()
    print(_table(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2, default=_plain) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1e3, 3)


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Decision):
        return asdict(value)
    raise TypeError(type(value).__name__)
