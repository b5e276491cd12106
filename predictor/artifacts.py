"""Model artifacts: weights that load without unpickling code, plus JSON metadata.

An artifact is a directory ``<model_dir>/<preset>_<model>_<YYYYmmdd_HHMMSS>/``
holding ``weights.pt`` (a ``state_dict`` of tensors, read back with
``torch.load(..., weights_only=True)``) and ``meta.json`` (kind, hyper-parameters,
scaler, interval calibration, training span and fingerprint, validation metrics,
version, creation time, and the SHA-256 of the weights). It is written to a
temporary directory and renamed into place, so readers never see half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.errors import ModelLoadError
from predictor.features import Scaler
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module

log = logging.getLogger(__name__)

FORMAT = "reqcast-model/1"
WEIGHTS = "weights.pt"
META = "meta.json"
_NAME = re.compile(
    r"^(?P<preset>[A-Za-z0-9-]+)_(?P<model>[a-z0-9]+)_(?P<stamp>\d{8}_\d{6})(-\d+)?$"
)


@dataclass(frozen=True)
class ArtifactInfo:
    """Where an artifact lives and what its metadata says."""

    path: Path
    model: str
    version: int
    task: str
    meta: dict[str, Any]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def list_artifacts(
    model_dir: str | Path, model: str | None = None, task: str | None = None
) -> list[ArtifactInfo]:
    """Readable artifacts in ``model_dir``, oldest version first; unreadable ones are skipped."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if not child.is_dir() or not _NAME.match(child.name) or not (child / META).is_file():
            continue
        try:
            meta = json.loads((child / META).read_text())
            info = ArtifactInfo(
                child,
                str(meta["model"]),
                int(meta["version"]),
                str(meta.get("task", "next_request")),
                meta,
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (model is None or info.model == model) and (task is None or info.task == task):
            out.append(info)
    return sorted(out, key=lambda a: (a.version, a.meta.get("created_at", ""), a.path.name))


def next_version(model_dir: str | Path, model: str, task: str = "next_request") -> int:
    """One more than the highest version of ``model`` in the directory (1 for the first)."""
    existing = list_artifacts(model_dir, model, task)
    return (existing[-1].version + 1) if existing else 1


def save_artifact(
    forecaster: NeuralForecaster,
    model_dir: str | Path,
    *,
    preset: str,
    task: str = "next_request",
    version: int | None = None,
    extra: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> ArtifactInfo:
    """Write ``forecaster`` as a new artifact atomically and return where it went."""
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    version = version if version is not None else next_version(root, forecaster.name, task)
    base = f"{preset}_{forecaster.name}_{now.strftime('%Y%m%d_%H%M%S')}"
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        state = {k: v.detach().cpu() for k, v in forecaster.module.state_dict().items()}
        torch.save(state, tmp / WEIGHTS)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "model": forecaster.name,
            "kind": forecaster.kind,
            "task": task,
            "version": version,
            "preset": preset,
            "created_at": now.isoformat(),
            "spec": forecaster.spec.to_dict(),
            "scaler": forecaster.scaler.to_dict(),
            "calibration": forecaster.calibration.tolist(),
            "confidence": forecaster.confidence,
            "weights_sha256": _sha256(tmp / WEIGHTS),
            **(extra or {}),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, default=_json_default))
        os.rename(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ArtifactInfo(root / name, forecaster.name, version, task, meta)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_artifact(path: str | Path, device: str = "cpu") -> tuple[NeuralForecaster, dict[str, Any]]:
    """Load one artifact directory; any problem is a :class:`ModelLoadError` naming the path."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"{path}: unknown artifact format {meta.get('format')!r}")
        if _sha256(path / WEIGHTS) != meta["weights_sha256"]:
            raise ModelLoadError(f"{path}: weights do not match their checksum (corrupt file)")
        spec = NeuralSpec.from_dict(meta["spec"])
        scaler = Scaler.from_dict(meta["scaler"])
        module = build_module(spec, scaler)
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
        calibration = np.asarray(meta["calibration"], dtype=np.float64)
        if calibration.shape != (spec.horizon, spec.channels):
            raise ModelLoadError(
                f"{path}: calibration shape {calibration.shape} does not fit the model"
            )
        if not all(torch.isfinite(t).all() for t in state.values()):
            raise ModelLoadError(f"{path}: weights contain NaN or infinite values")
        forecaster = NeuralForecaster(
            spec,
            module,
            scaler,
            calibration=calibration,
            confidence=meta.get("confidence"),
            device=device,
        )
    except ModelLoadError:
        raise
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path}: missing {Path(str(exc.filename)).name}") from exc
    except Exception as exc:  # corrupt JSON, bad pickle, wrong shapes: all the same to a caller
        raise ModelLoadError(f"{path}: cannot load artifact ({type(exc).__name__}: {exc})") from exc
    return forecaster, meta


def load_latest(
    model_dir: str | Path, model: str, task: str = "next_request", device: str = "cpu"
) -> tuple[NeuralForecaster, dict[str, Any]]:
    """The newest version of ``model`` that loads; raises :class:`ModelLoadError` if none does."""
    candidates = list_artifacts(model_dir, model, task)
    errors = []
    for info in reversed(candidates):
        try:
            return load_artifact(info.path, device)
        except ModelLoadError as exc:
            log.warning("skipping artifact: %s", exc)
            errors.append(str(exc))
    if errors:
        raise ModelLoadError(f"no loadable {model} artifact in {model_dir}: {errors[0]}")
    raise ModelLoadError(f"no {model} artifact in {model_dir}")
