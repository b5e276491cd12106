"""Periodic refits in a background worker that never blocks forecasting.

The serving loop hands every valid event to :meth:`RefitWorker.observe`, which
only appends to bounded per-stream buffers: recent raw events for the next-request
models, recent load bins (of the serving ``bin_s``) for the load models. Each task has
its own :class:`~trainer.schedule.Schedule` (every ``every_s`` / ``load_every_s``
seconds, optionally every ``every_events`` events, never sooner after a refit than that
refit took); while a slot of the task has no model yet, its refit is due as soon as there is
enough data to train one (``min_events`` buffered events; for load, the bins a first load
model of ``load_seq_len`` and ``load_horizon`` needs), so a service started without models
gets its first versions within the minimum gap, not after the interval. When one is due the worker thread snapshots its buffer, holds out the most
recent slice, trains each model on the rest, asks the guard (:mod:`trainer.guard`)
whether the challenger is no worse than the serving model on the held-out slice, and if
so saves it as a new version of its task (atomically), installs it in the model slot (an
atomic reference swap between micro-batches) and hands it to ``publish`` (the compacted
model topic). A CUDA out-of-memory error retries on the CPU with half the batch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any, cast

import numpy as np

from predictor.artifacts import ArtifactInfo, next_version, save_artifact
from predictor.background import BackgroundWorker
from predictor.errors import TrainingError
from predictor.events import RequestEvent
from predictor.models.base import Forecaster
from predictor.models.neural import NeuralForecaster
from predictor.slot import Loaded, ModelSlot
from predictor.tasks import LOAD, NEXT_REQUEST
from trainer.device import is_cuda_oom, resolve_device
from trainer.guard import Decision, judge
from trainer.recent import RecentBins, RecentEvents
from trainer.refit_config import RefitConfig, RefitMetrics, load_bins_needed
from trainer.schedule import Schedule
from trainer.train import TrainConfig, TrainResult, train_forecaster

log = logging.getLogger(__name__)


def _child_init(threads: int) -> None:
    """Training process setup: lower priority than serving, few threads."""
    import torch

    with contextlib.suppress(OSError):
        os.nice(10)
    torch.set_num_threads(max(1, threads))


def _fit_in_child(train: list[np.ndarray], cfg: TrainConfig) -> TrainResult:
    result = train_forecaster(train, cfg, progress=False)
    result.forecaster.to("cpu")  # a CUDA tensor must not cross back to a parent without CUDA
    return result


__all__ = ["RecentBins", "RecentEvents", "RefitConfig", "RefitWorker", "load_bins_needed"]


class RefitWorker(BackgroundWorker):
    """Retrains on a schedule in a daemon thread; swaps in challengers the guard accepts.

    ``slots`` are the next-request models; ``load_slots`` (with ``config.load_bin_s``) the
    load models, refitted on their own schedule on the recent bins; a load slot without a
    model gets a first version of ``config.load_seq_len`` bins and ``config.load_horizon``
    bins ahead (the architecture of :func:`~trainer.train.params_for_load`).
    """

    def __init__(
        self,
        config: RefitConfig,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: RefitMetrics,
        publish: Callable[[ArtifactInfo], None] | None = None,
        max_refits: int | None = None,
        load_slots: dict[str, ModelSlot[Forecaster]] | None = None,
    ) -> None:
        super().__init__("refit", stop_timeout_s=30.0)
        self.config, self.slots, self.metrics, self.publish = config, slots, metrics, publish
        #: the scheduled loop ends after this many refits of each task it refits
        #: (``reqcast trainer --max-refits``)
        self.max_refits = max_refits
        self.buffer = RecentEvents(config.window_events, config.stream_key)
        #: the serving load slots (the same objects: an accepted refit swaps in there)
        self.load_slots = load_slots if load_slots and config.load_bin_s else {}
        self.bins = (
            RecentBins(config.load_bin_s, config.load_window_bins, config.stream_key)
            if self.load_slots and config.load_bin_s
            else None
        )
        self.schedules = {
            NEXT_REQUEST: Schedule(config.every_s, config.every_events),
            LOAD: Schedule(config.load_every_s if self.bins is not None else None),
        }
        self.decisions: list[Decision] = []
        #: called with the task after each of its scheduled rounds ends (trained or skipped
        #: for want of data), from the worker's thread: the drift check re-arms on it
        self.after_round: list[Callable[[str], None]] = []
        for task, schedule in self.schedules.items():
            schedule.cold = self._cold(task)
        self._due = threading.Event()
        self._busy = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._oom_logged = False

    @property
    def refits(self) -> int:
        """Next-request refit rounds so far."""
        return self.schedules[NEXT_REQUEST].rounds

    @property
    def load_refits(self) -> int:
        """Load refit rounds so far."""
        return self.schedules[LOAD].rounds

    # called from the serving loop: cheap, never blocks on training
    def observe(self, events: Iterable[RequestEvent]) -> None:
        batch = events if isinstance(events, list) else list(events)
        n = self.buffer.add(batch)
        if self.bins is not None:
            self.bins.add(batch)
        schedule = self.schedules[NEXT_REQUEST]
        enough = len(self.buffer) >= self.config.min_events
        if schedule.count(n) and enough:
            self._due.set()
        if schedule.cold and not schedule.requested and enough and schedule.cold_ready():
            self._due.set()
        load = self.schedules[LOAD]
        if (
            load.cold
            and not load.requested
            and self.bins is not None
            and self.bins.bins() >= self._first_load_bins()
            and load.cold_ready()
        ):
            self._due.set()

    def _cold(self, task: str) -> bool:
        """Whether a slot ``task`` refits has no model yet."""
        if task == LOAD:
            return any(slot.current() is None for slot in self.load_slots.values())
        return any(
            m not in self.slots or self.slots[m].current() is None for m in self.config.models
        )

    def _first_load_bins(self) -> int:
        """Closed bins a stream needs for a first load model."""
        c = self.config
        return load_bins_needed(c.load_seq_len, c.load_horizon, c.holdout_fraction)

    def request(self, task: str = NEXT_REQUEST, reason: str = "drift") -> None:
        """Ask for a refit of ``task``'s models as soon as its schedule allows (drift)."""
        self.schedules[task].request(reason)
        self._due.set()

    def _start(self, task: str) -> Schedule:
        """Start a round of ``task``: counted by what made it due."""
        schedule = self.schedules[task]
        with schedule.lock:  # a request landing in between would be cleared uncounted
            reason = schedule.reason()
            schedule.started()
        self.metrics.refit_requests.labels(task, reason).inc()
        return schedule

    def stop(self, timeout_s: float | None = None) -> None:
        """End the scheduled loop (waiting up to ``timeout_s``, 30 s by default) and the
        training process, if any. :attr:`finished` says when the loop has ended (stopped,
        or ``max_refits`` done)."""
        super().stop(timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        self._due.set()

    def _active(self) -> list[str]:
        """The tasks this worker refits on its schedule."""
        out = []
        if self.config.models and self.schedules[NEXT_REQUEST].active:
            out.append(NEXT_REQUEST)
        if self.load_slots and self.schedules[LOAD].active:
            out.append(LOAD)
        return out

    def _done(self) -> bool:
        active = self._active()
        return (
            bool(self.max_refits)
            and bool(active)
            and all(self.schedules[t].rounds >= (self.max_refits or 0) for t in active)
        )

    def _loop(self) -> None:
        while not self._stop.is_set() and not self._done():
            now = time.monotonic()
            dues = {t: self.schedules[t].next_due(now) for t in self._active()}
            ready = [t for t, due in dues.items() if due is not None and due <= now]
            if not ready:
                waits = [due - now for due in dues.values() if due is not None]
                self._due.wait(min(waits) if waits else None)
                self._due.clear()
                continue
            for task in ready:
                if self._stop.is_set() or self._done():
                    return
                try:
                    self._refit(task)
                except Exception:  # a failed refit must never take the service down
                    log.exception("%s refit failed; the serving models stay", task)
                for listener in self.after_round:
                    try:
                        listener(task)
                    except Exception:
                        log.exception("after the %s refit", task)

    def _refit(self, task: str) -> None:
        if task == LOAD:
            self.refit_load_once()
        elif len(self.buffer) < self.config.min_events:
            self.schedules[NEXT_REQUEST].skipped(time.monotonic())
        else:
            self.refit_once()

    def refit_once(self) -> list[Decision]:
        """Train every next-request model on the buffer now and apply the guard; returns the
        decisions."""
        with self._busy:
            schedule = self._start(NEXT_REQUEST)
            try:
                series = self.buffer.snapshot()
                data = list(series.values())
                holdout = [max(1, int(len(s) * self.config.holdout_fraction)) for s in data]
                train = [s[:-h] for s, h in zip(data, holdout, strict=True)]
                out = []
                for model in self.config.models:
                    cur = self.slots[model].current() if model in self.slots else None
                    cfg = self._config(model, NEXT_REQUEST, cur)
                    try:
                        result = self._train(model, train, cfg)
                    except TrainingError as exc:
                        out.append(self._record(Decision(model, False, "training_error")))
                        log.warning("refit of %s failed: %s", model, exc)
                        continue
                    out.append(self.consider(model, result.forecaster, data, holdout, result))
                return out
            finally:
                schedule.finished()
                schedule.set_cold(self._cold(NEXT_REQUEST))

    def refit_load_once(self) -> list[Decision]:
        """Train every load model on the recent bins now and apply the guard; returns the
        decisions (none while no stream has enough bins yet). A slot without a model gets a
        first version (``config.load_seq_len``, ``config.load_horizon``)."""
        if self.bins is None:
            return []
        with self._busy:
            schedule = self.schedules[LOAD]
            series = self.bins.snapshot()
            todo = []
            for model, slot in self.load_slots.items():
                cur = slot.current()
                if cur is None:
                    need = self._first_load_bins()
                else:
                    fc = cur.forecaster
                    need = load_bins_needed(fc.seq_len, fc.horizon, self.config.holdout_fraction)
                data = [s for s in series.values() if len(s) >= need]
                if data:
                    todo.append((model, cur, data))
                else:
                    log.info(
                        "load refit of %s waits: %d bins in the longest stream, it needs %d",
                        model,
                        max((len(s) for s in series.values()), default=0),
                        need,
                    )
            if not todo:
                schedule.skipped(time.monotonic())
                schedule.set_cold(self._cold(LOAD))
                return []
            self._start(LOAD)
            try:
                out = []
                for model, cur, data in todo:
                    holdout = [max(1, int(len(s) * self.config.holdout_fraction)) for s in data]
                    train = [s[:-h] for s, h in zip(data, holdout, strict=True)]
                    cfg = self._config(model, LOAD, cur)
                    try:
                        result = self._train(model, train, cfg)
                    except TrainingError as exc:
                        out.append(
                            self._record(Decision(model, False, "training_error", task=LOAD))
                        )
                        log.warning("load refit of %s failed: %s", model, exc)
                        continue
                    out.append(
                        self.consider(model, result.forecaster, data, holdout, result, task=LOAD)
                    )
                return out
            finally:
                schedule.finished()
                schedule.set_cold(self._cold(LOAD))

    def _config(self, model: str, task: str, cur: Loaded[Forecaster] | None) -> TrainConfig:
        """``model``'s training config for ``task``: the serving network's window, horizon and
        architecture (so a refit is comparable), then the config's settings."""
        c = self.config
        spec = getattr(cur.forecaster, "spec", None) if cur is not None else None
        serving = dict(spec.params) if spec is not None else {}
        own = (c.load_params if task == LOAD else c.params).get(model, {})
        if cur is not None:
            seq_len = cur.forecaster.seq_len
        else:  # a first version
            seq_len = c.load_seq_len if task == LOAD else c.seq_len
        fields: dict[str, Any] = {}
        if task == LOAD:
            fields["horizon"] = cur.forecaster.horizon if cur is not None else c.load_horizon
        return TrainConfig.for_model(
            model,
            task=task,
            params={**serving, **own},
            seq_len=seq_len,
            epochs=c.epochs,
            batch_size=c.batch_size,
            patience=c.patience,
            device=resolve_device(c.device),
            seed=c.seed + self.schedules[task].rounds,
            **fields,
        )

    def _train(self, model: str, train: list[np.ndarray], cfg: TrainConfig) -> TrainResult:
        try:
            result = self._fit(train, cfg)
        except RuntimeError as exc:
            if not is_cuda_oom(exc):
                raise
            smaller = max(8, cfg.batch_size // 2)
            (log.warning if not self._oom_logged else log.debug)(
                "CUDA out of memory refitting %s: retrying on cpu with batch %d%s",
                model,
                smaller,
                "" if self._oom_logged else " (logged once; counted in reqcast_model_swaps_total)",
            )
            self._oom_logged = True
            self.metrics.swaps.labels(model, "retried", "cuda_oom").inc()
            result = self._fit(train, replace(cfg, device="cpu", batch_size=smaller))
        self.metrics.training_duration.labels(model, result.device).observe(result.duration_s)
        self.metrics.training_device.labels(model).info({"device": result.device})
        result.forecaster.to("cpu")  # serving runs where the slot's models run
        return result

    def _fit(self, train: list[np.ndarray], cfg: TrainConfig) -> TrainResult:
        """Train here, or in the worker's child process when the config isolates training."""
        if not self.config.isolate:
            return train_forecaster(train, cfg, progress=False)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init,
                initargs=(self.config.child_threads,),
            )
        try:
            return self._pool.submit(_fit_in_child, train, cfg).result()
        except BrokenProcessPool as exc:
            self._pool = None
            raise TrainingError(f"the training process died: {exc}") from exc

    def consider(
        self,
        model: str,
        challenger: Forecaster,
        series: list[np.ndarray],
        holdout: list[int],
        result: TrainResult | None = None,
        task: str = NEXT_REQUEST,
    ) -> Decision:
        """Guard ``challenger`` against ``task``'s serving model; on acceptance save, swap and
        publish."""
        slot = (self.load_slots if task == LOAD else self.slots)[model]
        champion = slot.current()
        decision = judge(
            model,
            challenger,
            champion.forecaster if champion else None,
            series,
            holdout,
            self.config.tolerance,
            task=task,
        )
        if decision.accepted:
            version = max(next_version(self.config.model_dir, model, task), slot.version + 1)
            extra: dict[str, Any] = {"guard": decision.__dict__}
            if result is not None:
                extra.update(result.metadata())
            if task == LOAD:
                extra["load"] = {
                    "bin_s": self.config.load_bin_s,
                    "horizon_bins": challenger.horizon,
                }
            info = save_artifact(
                cast(NeuralForecaster, challenger),
                self.config.model_dir,
                preset="refit",
                task=task,
                version=version,
                extra=extra,
            )
            # the model-dir watcher may have installed this very artifact first: still ours
            if slot.offer(challenger, version, info.meta) or slot.version == version:
                self.metrics.model_version.labels(model, task).set(version)
                self.metrics.last_swap.labels(model).set(time.time())
                if self.publish is not None:
                    try:
                        self.publish(info)
                    except Exception as exc:  # the local swap stands; others catch up from the dir
                        log.warning("publishing %s failed: %s", info.path.name, exc)
            else:
                decision = Decision(
                    model,
                    False,
                    "stale_version",
                    decision.challenger_score,
                    decision.champion_score,
                    task=task,
                    challenger_mae=decision.challenger_mae,
                    holdout_rows=decision.holdout_rows,
                )
        return self._record(decision)

    def _record(self, decision: Decision) -> Decision:
        self.decisions.append(decision)
        result = "accepted" if decision.accepted else "rejected"
        self.metrics.swaps.labels(decision.model, result, decision.reason).inc()
        # a challenger scoring worse is the guard doing its job, not a warning
        expected = decision.accepted or decision.reason == "worse"
        (log.info if expected else log.warning)("refit %s", decision.describe())
        return decision
