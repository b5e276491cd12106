"""Periodic refits in a background worker that never blocks forecasting.

The serving loop hands every valid event to :meth:`RefitWorker.observe`, which
only appends to a bounded per-stream buffer. Every ``every_events`` events
and/or ``every_s`` seconds the worker thread snapshots the buffer, holds out
the most recent slice, trains each model on the rest, asks the guard
(:mod:`trainer.guard`) whether the challenger is no worse than the serving
model on the held-out slice, and if so saves it as a new version (atomically),
installs it in the model slot (an atomic reference swap between micro-batches)
and hands it to ``publish`` (the compacted model topic). A CUDA out-of-memory
error retries on the CPU with half the batch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from predictor.artifacts import ArtifactInfo, next_version, save_artifact
from predictor.background import BackgroundWorker
from predictor.errors import TrainingError
from predictor.events import RequestEvent
from predictor.models.base import Forecaster
from predictor.models.neural import NeuralForecaster
from predictor.slot import ModelSlot
from predictor.tasks import NEXT_REQUEST
from trainer.device import is_cuda_oom, resolve_device
from trainer.guard import Decision, judge
from trainer.train import TrainConfig, TrainResult, train_forecaster

log = logging.getLogger(__name__)


class RefitMetrics(Protocol):
    """What the worker reports to (``stream.metrics.Metrics`` provides it)."""

    swaps: Any
    last_swap: Any
    training_duration: Any
    training_device: Any
    model_version: Any


@dataclass(frozen=True)
class RefitConfig:
    model_dir: str | Path
    models: tuple[str, ...] = ("lstm", "dlinear")
    every_events: int | None = 10_000
    every_s: float | None = 600.0
    window_events: int = 20_000
    holdout_fraction: float = 0.1
    min_events: int = 2_000
    seq_len: int = 64
    epochs: int = 10
    batch_size: int = 64
    patience: int = 3
    device: str = "auto"
    tolerance: float = 0.0
    stream_key: str = "model"
    seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: train in a child process at lower priority, so training never holds the serving
    #: process's interpreter lock or starves its threads (the CLI turns this on)
    isolate: bool = False
    child_threads: int = 1


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


class RecentEvents:
    """Thread-safe bounded buffer of recent raw events per stream."""

    def __init__(self, capacity: int, stream_key: str = "model") -> None:
        self.capacity, self.stream_key = capacity, stream_key
        self._lock = threading.Lock()
        self._streams: dict[str, deque[tuple[float, int, int]]] = {}
        self.total = 0

    def add(self, events: Iterable[RequestEvent]) -> int:
        n = 0
        with self._lock:
            for ev in events:
                key = ev.stream_key(self.stream_key)
                buf = self._streams.get(key)
                if buf is None:
                    buf = self._streams[key] = deque(maxlen=self.capacity)
                buf.append((ev.timestamp_s, ev.request_tokens, ev.response_tokens))
                n += 1
            self.total += n
        return n

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._streams.values())

    def snapshot(self) -> dict[str, np.ndarray]:
        """Raw per-request matrices ``[N, 3]`` per stream (the most recent ``capacity`` each)."""
        from predictor.features import request_matrix

        with self._lock:
            copies = {k: np.array(list(v), dtype=np.float64) for k, v in self._streams.items() if v}
        return {k: request_matrix(a[:, 0], a[:, 1], a[:, 2]) for k, a in copies.items()}


class RefitWorker(BackgroundWorker):
    """Retrains on a schedule in a daemon thread; swaps in challengers the guard accepts."""

    def __init__(
        self,
        config: RefitConfig,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: RefitMetrics,
        publish: Callable[[ArtifactInfo], None] | None = None,
        max_refits: int | None = None,
    ) -> None:
        super().__init__("refit", stop_timeout_s=30.0)
        self.config, self.slots, self.metrics, self.publish = config, slots, metrics, publish
        #: the scheduled loop ends after this many refits (``reqcast trainer --max-refits``)
        self.max_refits = max_refits
        self.buffer = RecentEvents(config.window_events, config.stream_key)
        self.decisions: list[Decision] = []
        self.refits = 0
        self._since = 0
        self._last = time.monotonic()
        self._due = threading.Event()
        self._busy = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    # called from the serving loop: cheap, never blocks on training
    def observe(self, events: Iterable[RequestEvent]) -> None:
        self._since += self.buffer.add(events)
        every = self.config.every_events
        if every and self._since >= every and len(self.buffer) >= self.config.min_events:
            self._due.set()

    def stop(self, timeout_s: float | None = None) -> None:
        """End the scheduled loop (waiting up to ``timeout_s``, 30 s by default) and the
        training process, if any. :attr:`finished` says when the loop has ended (stopped,
        or ``max_refits`` done)."""
        super().stop(timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _wake(self) -> None:
        self._due.set()

    def _loop(self) -> None:
        every_s = self.config.every_s
        while not self._stop.is_set():
            timeout = None if not every_s else max(0.0, self._last + every_s - time.monotonic())
            self._due.wait(timeout)
            if self._stop.is_set() or (self.max_refits and self.refits >= self.max_refits):
                return
            self._due.clear()
            if len(self.buffer) < self.config.min_events:
                self._last = time.monotonic()
                continue
            try:
                self.refit_once()
            except Exception:  # a failed refit must never take the service down
                log.exception("refit failed; the serving models stay")

    def refit_once(self) -> list[Decision]:
        """Train every model on the buffer now and apply the guard; returns the decisions."""
        with self._busy:
            self._since, self._last = 0, time.monotonic()
            self.refits += 1
            series = self.buffer.snapshot()
            names = list(series)
            data = [series[k] for k in names]
            holdout = [max(1, int(len(s) * self.config.holdout_fraction)) for s in data]
            train = [s[:-h] for s, h in zip(data, holdout, strict=True)]
            out = []
            for model in self.config.models:
                try:
                    result = self._train(model, train)
                except TrainingError as exc:
                    out.append(self._record(Decision(model, False, "training_error")))
                    log.warning("refit of %s failed: %s", model, exc)
                    continue
                out.append(self.consider(model, result.forecaster, data, holdout, result))
            return out

    def _train(self, model: str, train: list[np.ndarray]) -> TrainResult:
        c = self.config
        cfg = TrainConfig.for_model(
            model,
            seq_len=self._seq_len(model),
            epochs=c.epochs,
            batch_size=c.batch_size,
            patience=c.patience,
            device=resolve_device(c.device),
            seed=c.seed + self.refits,
            params=self._params(model),
        )
        try:
            result = self._fit(train, cfg)
        except RuntimeError as exc:
            if not is_cuda_oom(exc):
                raise
            smaller = max(8, cfg.batch_size // 2)
            log.warning(
                "CUDA out of memory refitting %s: retrying on cpu with batch %d", model, smaller
            )
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

    def _params(self, model: str) -> dict[str, Any]:
        """The serving network's architecture (so a refit is comparable), then the config's."""
        cur = self.slots[model].current() if model in self.slots else None
        spec = getattr(cur.forecaster, "spec", None) if cur is not None else None
        serving = dict(spec.params) if spec is not None else {}
        return {**serving, **self.config.params.get(model, {})}

    def _seq_len(self, model: str) -> int:
        cur = self.slots[model].current() if model in self.slots else None
        return cur.forecaster.seq_len if cur is not None else self.config.seq_len

    def consider(
        self,
        model: str,
        challenger: Forecaster,
        series: list[np.ndarray],
        holdout: list[int],
        result: TrainResult | None = None,
    ) -> Decision:
        """Guard ``challenger`` against the serving model; on acceptance save, swap and publish."""
        slot = self.slots[model]
        champion = slot.current()
        decision = judge(
            model,
            challenger,
            champion.forecaster if champion else None,
            series,
            holdout,
            self.config.tolerance,
        )
        if decision.accepted:
            version = max(next_version(self.config.model_dir, model), slot.version + 1)
            extra: dict[str, Any] = {"guard": decision.__dict__}
            if result is not None:
                extra.update(result.metadata())
            info = save_artifact(
                cast(NeuralForecaster, challenger),
                self.config.model_dir,
                preset="refit",
                version=version,
                extra=extra,
            )
            # the model-dir watcher may have installed this very artifact first: still ours
            if slot.offer(challenger, version, info.meta) or slot.version == version:
                self.metrics.model_version.labels(model, NEXT_REQUEST).set(version)
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
                )
        return self._record(decision)

    def _record(self, decision: Decision) -> Decision:
        self.decisions.append(decision)
        result = "accepted" if decision.accepted else "rejected"
        self.metrics.swaps.labels(decision.model, result, decision.reason).inc()
        (log.info if decision.accepted else log.warning)("refit %s", decision.describe())
        return decision
