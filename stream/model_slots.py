"""The service's model slots: reading the newest artifacts into them from the model dir,
installing newer versions, and reporting which version serves."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from predictor.artifacts import load_latest
from predictor.errors import ModelLoadError
from predictor.models.base import Forecaster
from predictor.slot import ModelSlot
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.metrics import Metrics

log = logging.getLogger(__name__)

#: how log lines name a task
TASK_LABELS = {NEXT_REQUEST: "next-request", LOAD: "load"}

#: per service (its metrics), the artifact directories already rejected
_rejected: weakref.WeakKeyDictionary[Metrics, set[str]] = weakref.WeakKeyDictionary()
_rejected_lock = threading.Lock()


def reject_artifact(
    metrics: Metrics, model: str, path: Path, why: str, logger: logging.Logger = log
) -> bool:
    """Count and log (to ``logger``) an unusable artifact directory, once per service however
    many times start-up and the model-dir watchers come across it; False if it was already."""
    with _rejected_lock:
        seen = _rejected.setdefault(metrics, set())
        if str(path) in seen:
            return False
        seen.add(str(path))
    metrics.swaps.labels(model, "rejected", "load_error").inc()
    logger.error("rejected model %s: %s", path.name, why)
    return True


def read_slots(
    model_dir: str | Path,
    models: Sequence[str],
    metrics: Metrics,
    device: str = "cpu",
    task: str = NEXT_REQUEST,
    missing_level: int | None = None,
) -> dict[str, ModelSlot[Forecaster]]:
    """One slot per model, filled with the newest loadable artifact of ``task`` where there is
    one; unusable ones (a bad ``meta.json``, corrupt weights) are rejected on the way.

    A model without one is logged at ``missing_level``: by default a warning for next-request
    models and information for load models (optional); ``reqcast run``, about to train first
    models, passes ``logging.INFO``."""
    if missing_level is None:
        missing_level = logging.WARNING if task == NEXT_REQUEST else logging.INFO
    slots: dict[str, ModelSlot[Forecaster]] = {}
    for name in models:
        slot: ModelSlot[Forecaster] = ModelSlot(name)

        def invalid(path: Path, named: str | None, why: str, name: str = name) -> None:
            reject_artifact(metrics, name if named == name else "unknown", path, why)

        try:
            fc, meta = load_latest(model_dir, name, task=task, device=device, on_invalid=invalid)
        except ModelLoadError as exc:
            log.log(missing_level, "%s (%s): %s", name, task, exc)
        else:
            where = Path(model_dir) / str(meta.get("name", ""))
            install(slot, fc, meta, metrics, reason="startup", where=where)
        slots[name] = slot
    return slots


def install(
    slot: ModelSlot[Forecaster],
    forecaster: Forecaster,
    meta: dict[str, object],
    metrics: Metrics,
    reason: str = "newer",
    where: str | Path | None = None,
) -> bool:
    """Offer a loaded model to ``slot``; export its version when it is taken. The log line
    names the task (a next-request and a load model of one name have versions of their own)
    and the artifact folder ``where`` it came from (else the artifact's name)."""
    version = int(meta.get("version", 0))  # type: ignore[call-overload]
    if not slot.offer(forecaster, version, meta):
        return False
    task = str(meta.get("task", NEXT_REQUEST))
    metrics.model_version.labels(slot.name, task).set(version)
    metrics.model_info.labels(slot.name).info(
        {
            "artifact": str(meta.get("name", "")),
            "version": str(version),
            "created_at": str(meta.get("created_at", "")),
        }
    )
    log.info(
        "serving %s version %d for %s (%s, %s)",
        slot.name,
        version,
        TASK_LABELS.get(task, task),
        where if where is not None else meta.get("name"),
        reason,
    )
    return True


def have_models(slots: dict[str, ModelSlot[Forecaster]]) -> bool:
    return any(s.current() is not None for s in slots.values())
