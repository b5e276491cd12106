"""Model artifacts: naming, versions, listing, and refusing every kind of bad weights file."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.artifacts import (
    META,
    WEIGHTS,
    list_artifacts,
    load_artifact,
    load_latest,
    next_version,
    save_artifact,
)
from predictor.errors import ModelLoadError
from predictor.features import Scaler, to_log
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module

T0 = datetime(2024, 5, 17, 9, 30, 0, tzinfo=timezone.utc)


def _forecaster(arch: str = "dlinear", seed: int = 0) -> NeuralForecaster:
    """A small untrained network with non-zero weights and a fitted scaler."""
    torch.manual_seed(seed)
    params = (
        {"norm": "none", "kernel_size": 3}
        if arch == "dlinear"
        else {"norm": "none", "hidden_size": 8, "num_layers": 1}
    )
    spec = NeuralSpec(arch, seq_len=8, horizon=1, channels=3, params=params)
    raw = np.random.default_rng(seed).gamma(1.0, 50.0, size=(64, 3))
    return NeuralForecaster(spec, build_module(spec), Scaler.fit(to_log(raw)))


def _windows() -> np.ndarray:
    return np.random.default_rng(1).gamma(1.0, 50.0, size=(4, 8, 3))


def _save(root: Path, arch: str = "dlinear", minutes: int = 0, **kw: object) -> Path:
    return save_artifact(
        _forecaster(arch), root, preset="cpu", now=T0 + timedelta(minutes=minutes), **kw
    ).path


def _rewrite_weights(path: Path, data: bytes) -> None:
    """Replace the weights and make the checksum in the metadata match them again."""
    (path / WEIGHTS).write_bytes(data)
    meta = json.loads((path / META).read_text())
    meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (path / META).write_text(json.dumps(meta))


# --- names, versions, listing ------------------------------------------------------------


def test_versions_increase_per_model(tmp_path: Path) -> None:
    assert next_version(tmp_path, "dlinear") == 1
    assert next_version(tmp_path / "missing", "dlinear") == 1
    versions = [
        save_artifact(_forecaster(), tmp_path, preset="cpu", now=T0 + timedelta(seconds=i)).version
        for i in range(3)
    ]
    assert versions == [1, 2, 3]
    assert next_version(tmp_path, "dlinear") == 4
    assert next_version(tmp_path, "lstm") == 1  # each model counts on its own
    assert save_artifact(_forecaster("lstm"), tmp_path, preset="cpu", now=T0).version == 1


def test_names_are_preset_model_timestamp(tmp_path: Path) -> None:
    info = save_artifact(_forecaster(), tmp_path, preset="cpu", now=T0)
    assert info.path.name == "cpu_dlinear_20240517_093000"
    assert re.fullmatch(r"cpu_dlinear_\d{8}_\d{6}", info.path.name)
    assert info.meta["name"] == info.path.name
    # a second save within the same second gets a suffix instead of overwriting
    again = save_artifact(_forecaster(), tmp_path, preset="cpu", now=T0)
    assert again.path.name == "cpu_dlinear_20240517_093000-2"
    assert [a.version for a in list_artifacts(tmp_path)] == [1, 2]
    # the default clock names it after "now"
    fresh = save_artifact(_forecaster("lstm"), tmp_path, preset="production")
    assert re.fullmatch(r"production_lstm_\d{8}_\d{6}", fresh.path.name)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_list_artifacts_sorted_and_filtered(tmp_path: Path) -> None:
    for version, minutes in ((3, 0), (1, 1), (2, 2)):
        _save(tmp_path, minutes=minutes, version=version)
    _save(tmp_path, "lstm", minutes=3)
    listed = list_artifacts(tmp_path)
    assert [(a.model, a.version) for a in listed] == [
        ("dlinear", 1),
        ("lstm", 1),
        ("dlinear", 2),
        ("dlinear", 3),
    ]
    assert [a.version for a in list_artifacts(tmp_path, "dlinear")] == [1, 2, 3]
    assert list_artifacts(tmp_path, "dlinear", task="load") == []
    assert list_artifacts(tmp_path / "missing") == []


def test_list_skips_missing_or_broken_meta_and_foreign_dirs(tmp_path: Path) -> None:
    good = _save(tmp_path, minutes=0)
    no_meta = _save(tmp_path, minutes=1)
    (no_meta / META).unlink()
    bad_json = _save(tmp_path, minutes=2)
    (bad_json / META).write_text("{not json")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / META).write_text(json.dumps({"model": "dlinear", "version": 9}))
    (tmp_path / "cpu_dlinear_20240517_093500").write_text("a file, not a directory")
    assert [a.path for a in list_artifacts(tmp_path)] == [good]
    with pytest.raises(ModelLoadError, match=r"missing meta\.json"):
        load_artifact(no_meta)


# --- loading -------------------------------------------------------------------------------


def test_load_latest_takes_the_newest(tmp_path: Path) -> None:
    _save(tmp_path, minutes=0)
    newest = save_artifact(_forecaster(seed=5), tmp_path, preset="cpu", now=T0 + timedelta(1))
    fc, meta = load_latest(tmp_path, "dlinear")
    assert meta["version"] == 2 and meta["name"] == newest.path.name
    np.testing.assert_array_equal(
        fc.predict(_windows()).point, _forecaster(seed=5).predict(_windows()).point
    )


def test_load_latest_skips_a_corrupt_newest_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _save(tmp_path, minutes=0)
    newest = _save(tmp_path, minutes=1)
    data = bytearray((newest / WEIGHTS).read_bytes())
    data[-40] ^= 0xFF
    (newest / WEIGHTS).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="predictor.artifacts"):
        _, meta = load_latest(tmp_path, "dlinear")
    assert meta["version"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert newest.name in warnings[0].getMessage() and "checksum" in warnings[0].getMessage()


def test_load_latest_with_nothing_loadable(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no dlinear artifact"):
        load_latest(tmp_path, "dlinear")
    only = _save(tmp_path)
    (only / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=r"no loadable dlinear artifact.*checksum"):
        load_latest(tmp_path, "dlinear")


def test_flipped_bytes_fail_the_checksum(tmp_path: Path) -> None:
    path = _save(tmp_path)
    data = bytearray((path / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="checksum") as info:
        load_artifact(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_unreadable_weights_with_matching_checksum(tmp_path: Path, how: str) -> None:
    path = _save(tmp_path)
    data = (path / WEIGHTS).read_bytes()
    bad = {"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}
    _rewrite_weights(path, bad[how])
    with pytest.raises(ModelLoadError, match="cannot load artifact"):
        load_artifact(path)


class _Payload:
    """Unpickling this would call ``Path.touch`` on the marker: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = _save(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"net.weight": _Payload(marker)}, evil)
    assert not marker.exists()  # saving only records the call
    _rewrite_weights(path, evil.read_bytes())
    with pytest.raises(ModelLoadError, match=r"cannot load artifact \(UnpicklingError"):
        load_artifact(path)
    assert not marker.exists()
    # the payload is live: a full unpickle would have run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_pickled_callable_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"net.weight": _windows, "hook": print}, evil)
    _rewrite_weights(path, evil.read_bytes())
    with pytest.raises(ModelLoadError, match=r"cannot load artifact \(UnpicklingError"):
        load_artifact(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float) -> None:
    fc = _forecaster()
    with torch.no_grad():
        next(iter(fc.module.parameters())).view(-1)[0] = value
    info = save_artifact(fc, tmp_path, preset="cpu", now=T0)
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        load_artifact(info.path)


def test_weights_for_another_shape_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    meta = json.loads((path / META).read_text())
    meta["spec"]["seq_len"] = 16
    (path / META).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="cannot load artifact"):
        load_artifact(path)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path)
    meta = json.loads((path / META).read_text())
    meta["format"] = "something-else/9"
    (path / META).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unknown artifact format"):
        load_artifact(path)
