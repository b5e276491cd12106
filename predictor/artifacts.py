"""Model artifacts: weights that load without unpickling code, plus JSON metadata.

An artifact is a directory ``<model_dir>/<preset>_<model>_<YYYYmmdd_HHMMSS>/``
holding ``weights.pt`` (a ``state_dict`` of tensors, read back with
``torch.load(..., weights_only=True)``) and ``meta.json`` (kind, hyper-parameters,
scaler, interval calibration, training span and fingerprint, validation metrics,
version, creation time, and the SHA-256 of the weights). It is written to a
temporary directory and renamed into place, so readers never see half of one.

Metadata is checked by :func:`~predictor.artifact_meta.validate_meta` before anything is
built from it, and the weights file's size and archive before it is read: a directory
or model-topic message that fails is refused with a :class:`ModelLoadError`, never
another exception, and never after allocating what its spec asks for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from predictor.artifact_meta import (
    FORMAT,
    MAX_META_BYTES,
    MAX_WEIGHTS_BYTES,
    artifact_header,
    validate_meta,
)
from predictor.errors import ModelLoadError, TrainingError
from predictor.features import Scaler
from predictor.models.neural import NeuralForecaster, build_module

__all__ = [
    "FORMAT",
    "META",
    "WEIGHTS",
    "ArtifactInfo",
    "OnInvalid",
    "list_artifacts",
    "load_artifact",
    "load_latest",
    "next_version",
    "read_meta",
    "save_artifact",
    "validate_meta",
]

log = logging.getLogger(__name__)

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


#: told of each artifact directory that cannot be used: ``(path, model, why)``, the model
#: being ``None`` where its metadata does not say
OnInvalid = Callable[[Path, "str | None", str], None]


def read_meta(path: Path) -> Any:
    """The JSON in a ``meta.json`` of at most :data:`MAX_META_BYTES`; any problem is a
    :class:`ModelLoadError` (a missing file stays a :class:`FileNotFoundError`)."""
    size = path.stat().st_size
    if size > MAX_META_BYTES:
        raise ModelLoadError(f"{META} of {size} bytes is larger than {MAX_META_BYTES}")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise ModelLoadError(f"{META} is not JSON ({type(exc).__name__})") from exc


def _claims(meta: Any, model: str | None, task: str | None) -> tuple[bool, str | None]:
    """Whether unusable metadata may be an artifact of ``model`` and ``task``, and which
    model it names (if it names one)."""
    if not isinstance(meta, dict):
        return True, None
    named, said = meta.get("model"), meta.get("task", "next_request")
    named = named if isinstance(named, str) else None
    mine = (model is None or named in (None, model)) and (
        task is None or not isinstance(said, str) or said == task
    )
    return mine, named


def list_artifacts(
    model_dir: str | Path,
    model: str | None = None,
    task: str | None = None,
    on_invalid: OnInvalid | None = None,
) -> list[ArtifactInfo]:
    """Usable artifacts in ``model_dir``, oldest version first. Directories whose
    ``meta.json`` is unreadable or fails :func:`validate_meta` are skipped; those that may
    be of ``model`` and ``task`` are reported to ``on_invalid``."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if not child.is_dir() or not _NAME.match(child.name) or not (child / META).is_file():
            continue
        meta: Any = None
        try:
            meta = read_meta(child / META)
            validate_meta(meta)
            name, version, kind = artifact_header(meta)
        except (OSError, ModelLoadError) as exc:
            mine, named = _claims(meta, model, task)
            if on_invalid is not None and mine:
                on_invalid(child, named, str(exc))
            continue
        info = ArtifactInfo(child, name, version, kind, meta)
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
            **_finite_or_null(json.loads(json.dumps(extra or {}, default=_json_default))),
        }
        text = json.dumps(meta, indent=2, default=_json_default)
        try:
            validate_meta(json.loads(text))
        except ModelLoadError as exc:  # every reader would refuse it
            raise TrainingError(f"{forecaster.name}: not saved: {exc}") from exc
        (tmp / META).write_text(text)
        os.rename(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ArtifactInfo(root / name, forecaster.name, version, task, meta)


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite number replaced by ``None``: JSON has no NaN, and the
    records this applies to (training history, guard scores) say "no value" with it."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


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
        try:
            meta = read_meta(path / META)
            spec = validate_meta(meta)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        size = (path / WEIGHTS).stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise ModelLoadError(f"{path}: weights of {size} bytes exceed {MAX_WEIGHTS_BYTES}")
        if _sha256(path / WEIGHTS) != meta["weights_sha256"]:
            raise ModelLoadError(f"{path}: weights do not match their checksum (corrupt file)")
        _check_archive(path / WEIGHTS)
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


def _check_archive(path: Path) -> None:
    """The weights are a zip archive (what ``torch.save`` writes) whose members unpack to at
    most :data:`MAX_WEIGHTS_BYTES`: a small compressed file cannot expand without bound."""
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(member.file_size for member in archive.infolist())
    if unpacked > MAX_WEIGHTS_BYTES:
        raise ModelLoadError(
            f"{path.parent}: weights unpack to {unpacked} bytes, more than {MAX_WEIGHTS_BYTES}"
        )


def load_latest(
    model_dir: str | Path,
    model: str,
    task: str = "next_request",
    device: str = "cpu",
    on_invalid: OnInvalid | None = None,
) -> tuple[NeuralForecaster, dict[str, Any]]:
    """The newest version of ``model`` that loads; raises :class:`ModelLoadError` if none does.
    Artifacts skipped on the way are reported to ``on_invalid``, else logged as warnings."""
    errors: list[str] = []

    def skipped(path: Path, named: str | None, why: str) -> None:
        errors.append(why)
        if on_invalid is not None:
            on_invalid(path, named, why)
        else:
            log.warning("skipping artifact: %s", why)

    candidates = list_artifacts(model_dir, model, task, on_invalid=skipped)
    for info in reversed(candidates):
        try:
            return load_artifact(info.path, device)
        except ModelLoadError as exc:
            skipped(info.path, info.model, str(exc))
    if errors:
        raise ModelLoadError(f"no loadable {model} artifact in {model_dir}: {errors[0]}")
    raise ModelLoadError(f"no {model} artifact in {model_dir}")
