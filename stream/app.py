"""Assembly of the serving process, out of the CLI: typed settings in, running parts out.

``reqcast serve`` and ``reqcast run`` (and the streaming benchmark's worker) build the same
pieces: the service over a Kafka consumer group (:func:`kafka_service`), load forecasts
when load models exist (:func:`attach_load`), and the workers that keep models current
(:func:`start_model_workers`: refits, the model topic, the model-dir watchers). The
commands turn their flags into the settings here (:mod:`stream.serve_flags`);
nothing here reads flags.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from predictor.drift import DEFAULT_FACTOR, MIN_BINS, MIN_EVENTS
from predictor.errors import ConfigError
from stream.metrics import MAX_EXPORTED_STREAMS, Metrics
from stream.service import ServeConfig
from stream.transport import Record, Sink, Source

if TYPE_CHECKING:
    from predictor.models.base import Forecaster
    from predictor.slot import ModelSlot
    from stream.kafka_io import KafkaConfig, KafkaSource
    from stream.model_sync import ModelDirWatcher
    from stream.service import ForecastService
    from stream.tasks.load import LoadForecasting
    from trainer.refit import RefitConfig, RefitWorker

log = logging.getLogger(__name__)

#: a conservative rate for reading history on assignment (kafka-python reads far faster)
HISTORY_RECORDS_PER_S = 5_000


@dataclass(frozen=True)
class LoadSettings:
    """Load forecasts: which artifacts (``task="load"`` in ``model_dir``), for which bins."""

    model_dir: str
    models: tuple[str, ...]
    bin_s: float = 60.0
    horizons: tuple[int, ...] = (1, 6, 30)
    enabled: bool = True
    #: seconds between checks of ``model_dir`` for newer load models (0: never)
    watch_s: float = 0.0


@dataclass(frozen=True)
class WorkerSettings:
    """What keeps the served models current besides the loop."""

    model_dir: str
    #: seconds between checks of ``model_dir`` for newer versions (0: never)
    watch_model_dir_s: float = 0.0
    #: compacted topic new versions arrive on and refits publish to ('': none)
    model_topic: str = ""
    #: the periodic refit in this process (None: none, e.g. a ``reqcast trainer`` runs)
    refit: RefitConfig | None = None
    #: with ``refit``: a task's refit is requested when a serving model's online MAE over
    #: its last ``drift_min_events`` next-request forecasts (``drift_min_bins`` one-bin-ahead
    #: load forecasts) exceeds this many times its held-out MAE on any quantity (0: never)
    drift_factor: float = DEFAULT_FACTOR
    drift_min_events: int = MIN_EVENTS
    drift_min_bins: int = MIN_BINS


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``serve`` and ``run`` share, as their flags set it."""

    serve: ServeConfig
    load: LoadSettings
    workers: WorkerSettings
    metrics_max_streams: int = MAX_EXPORTED_STREAMS


def service_metrics(max_streams: int = MAX_EXPORTED_STREAMS) -> Metrics:
    """The metrics of ``serve`` and ``run``, each per-stream gauge bounded to ``max_streams``."""
    if max_streams < 0:
        raise ConfigError(f"--metrics-max-streams must be 0 or more, got {max_streams}")
    return Metrics(max_exported_streams=max_streams)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to finish its batch and stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


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


def start_model_workers(
    settings: WorkerSettings,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    service: ForecastService,
    kafka: KafkaConfig | None = None,
    load: tuple[LoadForecasting, LoadSettings] | None = None,
    start: bool = True,
) -> list[Any]:
    """The refit worker, the model-topic follower and the model-dir watchers (next-request
    models, and ``load``'s models if given: refitted on ``load``'s bins, and followed on the
    model topic and in the model dir) that ``settings`` ask for, started (``start`` False:
    built and attached to ``service``, not started: an in-process probe of the serving path)."""
    from stream.model_sync import ModelDirWatcher, ModelPublisher, ModelTopicFollower
    from trainer.refit import RefitWorker

    workers: list[Any] = []
    model_topic = settings.model_topic
    load_slots = load[0].slots if load is not None else None
    if kafka is not None and model_topic:
        from stream.kafka_admin import ensure_topics

        ensure_topics(kafka, {model_topic: 1}, configs={model_topic: {"cleanup.policy": "compact"}})
        workers.append(
            ModelTopicFollower(
                kafka,
                model_topic,
                slots,
                metrics,
                load_slots=load_slots,
                load_compatible=None if load is None else load_compatibility(load[1], load[0]),
            )
        )
    if settings.watch_model_dir_s:
        workers.append(
            ModelDirWatcher(
                settings.model_dir, slots, metrics, interval_s=settings.watch_model_dir_s
            )
        )
        if load is not None:
            workers.append(load_watcher(load[1], load[0], metrics))
    if settings.refit is not None:
        publish = None
        if kafka is not None and model_topic:
            from stream.kafka_io import KafkaSink

            # a producer of its own: the serving loop's flushes and errors stay its own
            publish = ModelPublisher(KafkaSink(kafka), model_topic)
        refit = settings.refit
        if load is not None:  # the load models refit on the bins they serve
            refit = replace(refit, load_bin_s=load[1].bin_s, load_horizon=max(load[1].horizons))
        worker = RefitWorker(refit, slots, metrics, publish=publish, load_slots=load_slots)
        service.observers.append(worker.observe)
        watch_drift(settings, worker, service, load[0] if load is not None else None)
        workers.append(worker)
    if start:
        for w in workers:
            w.start()
    return workers


def watch_drift(
    settings: WorkerSettings,
    worker: RefitWorker,
    service: ForecastService,
    load: LoadForecasting | None = None,
) -> None:
    """Give the next-request task (and ``load``, when ``worker`` refits its models) a drift
    check that requests a refit of its task from ``worker`` and re-arms after each of its
    rounds (:mod:`stream.tasks.drift`); nothing when ``settings.drift_factor`` is 0."""
    from predictor.drift import DriftPolicy
    from predictor.features import QUANTITIES
    from predictor.load import LOAD_QUANTITIES
    from predictor.tasks import LOAD, NEXT_REQUEST
    from stream.tasks.drift import DriftWatch

    if not settings.drift_factor > 0:
        return
    factor = settings.drift_factor
    task = service.next_request
    task.drift = DriftWatch(
        NEXT_REQUEST,
        DriftPolicy(QUANTITIES, factor, settings.drift_min_events),
        task.slots,
        worker.request,
    )
    worker.after_round.append(task.drift.rearm)
    if load is not None and worker.load_slots:
        load.drift = DriftWatch(
            LOAD,
            DriftPolicy(LOAD_QUANTITIES, factor, settings.drift_min_bins),
            load.slots,
            worker.request,
        )
        worker.after_round.append(load.drift.rearm)


def complete_service(
    settings: ServiceSettings,
    service: ForecastService,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    *,
    kafka: KafkaConfig | None = None,
    device: str = "cpu",
    cold: bool = False,
    start: bool = True,
) -> tuple[LoadForecasting | None, list[Any]]:
    """What ``reqcast serve`` adds to its loop (and the streaming benchmark's serve side, and
    its in-process probe): the load task with its ensemble (unless disabled), the cold-start
    note (``cold``: no next-request model), and the model workers (refit, model topic,
    model-dir watchers) that ``settings`` ask for, started unless ``start`` is False.
    Returns the load task (None: disabled) and the workers, to stop when serving ends."""
    load = attach_load(settings.load, service, metrics, device, quiet=cold)
    if cold:
        cold_start_note(settings, settings.workers.model_dir, load)
    workers = start_model_workers(
        settings.workers,
        slots,
        metrics,
        service,
        kafka=kafka,
        load=None if load is None else (load, settings.load),
        start=start,
    )
    return load, workers


def cold_start_note(
    settings: ServiceSettings, model_dir: str, load: LoadForecasting | None = None
) -> None:
    """Say, in one line, how a service started without next-request models gets them (the
    refit's first versions, the model topic), and where its load forecasts come from until
    load networks join (``load``: the attached load task); a warning if nothing ever brings
    networks (no refit, no model topic)."""
    from stream.model_slots import have_models

    workers = settings.workers
    experts = load is not None and not have_models(load.slots)
    note = (
        "; load forecasts come from the ensemble's untrained experts until load networks join"
        if experts
        else ""
    )
    if workers.refit is not None:
        log.info(
            "no models in %s: next-request networks join after the first refit, once %d "
            "events are buffered%s",
            model_dir,
            workers.refit.min_events,
            note,
        )
    elif workers.model_topic:
        log.info(
            "no models in %s: networks join when versions arrive on the model topic %s%s",
            model_dir,
            workers.model_topic,
            note,
        )
    else:
        watched = workers.watch_model_dir_s
        log.warning(
            "no models in %s, no refit (--no-refit) and no --model-topic: %s; %s",
            model_dir,
            f"networks join only when versions are written to {model_dir}"
            if watched
            else "no network will ever join",
            "load forecasts come from the ensemble's untrained experts"
            if experts
            else "next-request forecasts need a model",
        )


def attach_load(
    settings: LoadSettings,
    service: ForecastService,
    metrics: Metrics,
    device: str = "cpu",
    quiet: bool = False,
) -> LoadForecasting | None:
    """Add load forecasts to ``service`` (unless disabled): the load models for ``bin_s`` in
    the model dir, and the ensemble, which publishes from the first closed bin with the
    experts that need no training even when there is no load model yet. ``quiet``: missing
    load models are not logged (the caller says it once, :func:`cold_start_note`)."""
    from stream.model_slots import have_models, read_slots
    from stream.tasks.load import LoadConfig, LoadForecasting

    if not settings.enabled:
        return None
    slots = read_slots(
        settings.model_dir,
        list(settings.models),
        metrics,
        device=device,
        task="load",
        missing_level=logging.DEBUG if quiet else None,
    )
    for name, slot in slots.items():
        cur = slot.current()
        why = bin_mismatch(cur.meta, settings.bin_s) if cur else None
        if why is not None:
            log.warning("load model %s: %s: not used", name, why)
            slots[name] = type(slot)(name)
    if not have_models(slots) and not quiet:
        log.info(
            "no load models in %s: load forecasts from the untrained experts (ensemble) only; "
            "networks join when a version arrives",
            settings.model_dir,
        )
    config = service.config
    load = LoadForecasting(
        LoadConfig(config.output_topic, settings.bin_s, settings.horizons, config.stream_key),
        slots,
        metrics,
    )
    service.add_task(load)
    return load


def bin_mismatch(meta: dict[str, Any], bin_s: float) -> str | None:
    """Why a load artifact cannot forecast ``bin_s`` bins (None: it can)."""
    trained = meta.get("load", {}).get("bin_s")
    if trained is not None and float(trained) != float(bin_s):
        return f"trained for {trained}s bins, not {bin_s}s"
    return None


def load_compatibility(
    settings: LoadSettings, load: LoadForecasting
) -> Callable[[dict[str, Any], Forecaster], str | None]:
    """Why a load model cannot serve in ``load`` (None: it can): it must be for this
    ``bin_s`` and its window must fit the bins the service keeps. The model-dir watcher and
    the model-topic follower both ask it."""

    def compatible(meta: dict[str, Any], fc: Forecaster) -> str | None:
        capacity = load.bins.capacity
        if fc.seq_len > capacity:
            return f"needs {fc.seq_len} bins of history, the service keeps {capacity}"
        return bin_mismatch(meta, settings.bin_s)

    return compatible


def load_watcher(
    settings: LoadSettings, load: LoadForecasting, metrics: Metrics
) -> ModelDirWatcher:
    """A model-dir watcher that swaps newer load models into ``load``'s slots: ones for this
    ``bin_s`` whose window fits the bins the service keeps."""
    from stream.model_sync import ModelDirWatcher

    return ModelDirWatcher(
        settings.model_dir,
        load.slots,
        metrics,
        interval_s=settings.watch_s,
        task="load",
        compatible=load_compatibility(settings, load),
    )
