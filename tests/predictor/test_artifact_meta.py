"""Artifact metadata is checked before a model is built: finite numbers, a positive integer
version, a bounded architecture (counted from the spec, never built to find out), scaler and
calibration in range; a model directory with bad metadata is skipped, not fatal."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from predictor import artifact_meta
from predictor.artifact_meta import MAX_PARAMETERS, check_spec
from predictor.artifacts import (
    META,
    list_artifacts,
    load_artifact,
    load_latest,
    save_artifact,
    validate_meta,
)
from predictor.errors import ModelLoadError
from predictor.features import Scaler, to_log
from predictor.models import dlinear, lstm
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module, parameter_count


def _forecaster(arch: str = "lstm") -> NeuralForecaster:
    torch.manual_seed(0)
    params = {"hidden_size": 8, "num_layers": 1} if arch == "lstm" else {"kernel_size": 3}
    spec = NeuralSpec(arch, seq_len=8, horizon=2, channels=3, params=params)
    raw = np.random.default_rng(0).gamma(1.0, 50.0, size=(64, 3))
    return NeuralForecaster(spec, build_module(spec), Scaler.fit(to_log(raw)), confidence=0.8)


@pytest.fixture
def meta(tmp_path: Path) -> dict[str, Any]:
    return save_artifact(_forecaster(), tmp_path / "good", preset="cpu").meta


def _with(meta: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``meta`` with the value at a dotted ``path`` replaced."""
    out = copy.deepcopy(meta)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD = {
    "version Infinity": ("version", math.inf, "version"),
    "version NaN": ("version", math.nan, "version"),
    "version zero": ("version", 0, "version"),
    "version negative": ("version", -3, "version"),
    "version string": ("version", "7", "version"),
    "version fraction": ("version", 2.5, "version"),
    "version bool": ("version", True, "version"),
    "version huge": ("version", 2**64, "version"),
    "NaN scaler mean": ("scaler.mean.1", math.nan, "scaler.mean"),
    "infinite scaler std": ("scaler.std.0", math.inf, "scaler.std"),
    "zero scaler std": ("scaler.std.0", 0.0, "scaler.std"),
    "negative scaler std": ("scaler.std.2", -1.0, "scaler.std"),
    "huge scaler mean": ("scaler.mean.0", 1e6, "scaler.mean"),
    "short scaler": ("scaler.mean", [0.0, 1.0], "scaler.mean"),
    "scaler of strings": ("scaler.std", ["1", "1", "1"], "scaler.std"),
    "NaN calibration": ("calibration.1.2", math.nan, "calibration"),
    "huge calibration": ("calibration.0.0", 1e9, "calibration"),
    "calibration of the wrong shape": ("calibration", [[0.0, 0.0, 0.0]], "calibration"),
    "NaN confidence": ("confidence", math.nan, "confidence"),
    "confidence above 1": ("confidence", 1.5, "confidence"),
    "hidden_size 16000": ("spec.params.hidden_size", 16000, "hidden_size"),
    "hidden_size string": ("spec.params.hidden_size", "8", "hidden_size"),
    "num_layers 100": ("spec.params.num_layers", 100, "num_layers"),
    "dropout 1": ("spec.params.dropout", 1.0, "dropout"),
    "ensemble 1000": ("spec.params.ensemble", 1000, "ensemble"),
    "level_len beyond the window": ("spec.params.level_len", 9, "level_len"),
    "level window beyond the window": ("spec.params.level_windows", [3, 9], "level_windows"),
    "level windows not a list": ("spec.params.level_windows", 3, "level_windows"),
    "nine level windows": ("spec.params.level_windows", [1] * 9, "level_windows"),
    "unknown norm": ("spec.params.norm", "zscore", "norm"),
    "seq_len a million": ("spec.seq_len", 10**6, "seq_len"),
    "seq_len float": ("spec.seq_len", 8.0, "seq_len"),
    "horizon zero": ("spec.horizon", 0, "horizon"),
    "two channels": ("spec.channels", 2, "channels"),
    "unsorted quantiles": ("spec.quantiles", [0.9, 0.5, 0.1], "quantiles"),
    "quantile 1": ("spec.quantiles", [0.1, 0.5, 1.0], "quantiles"),
    "unknown arch": ("spec.arch", "transformer", "arch"),
    "spec a list": ("spec", [], "spec"),
    "model other than the arch": ("model", "dlinear", "model"),
    "NaN in the training record": ("validation", {"mae": [math.nan]}, "finite"),
    "Infinity anywhere": ("data", {"bin_s": math.inf}, "finite"),
    "nested too deep": ("data", _nested(200), "nested deeper"),
    "name with a newline": ("name", "x\nrejected model forged", "name"),
    "task unknown": ("task", "training", "task"),
    "checksum not hex": ("weights_sha256", "z" * 64, "weights_sha256"),
}


def test_a_saved_artifacts_metadata_is_valid(meta: dict[str, Any]) -> None:
    spec = validate_meta(meta)
    assert spec.arch == "lstm" and spec.params["hidden_size"] == 8


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_metadata_is_refused_naming_the_field(meta: dict[str, Any], case: str) -> None:
    path, value, says = BAD[case]
    with pytest.raises(ModelLoadError, match=says):
        validate_meta(_with(meta, path, value))


@pytest.mark.parametrize("case", ["NaN scaler mean", "NaN calibration", "version Infinity"])
def test_load_artifact_refuses_bad_metadata_whose_weights_are_fine(
    tmp_path: Path, case: str
) -> None:
    """The checksum covers only the weights: valid weights do not vouch for the metadata."""
    info = save_artifact(_forecaster(), tmp_path, preset="cpu")
    path, value, says = BAD[case]
    (info.path / META).write_text(json.dumps(_with(info.meta, path, value)))
    with pytest.raises(ModelLoadError, match=says) as err:
        load_artifact(info.path)
    assert str(info.path) in str(err.value)


SPECS = [
    ("lstm", {}),
    ("lstm", {"hidden_size": 5, "num_layers": 3}),
    ("lstm", {"hidden_size": 4, "num_layers": 1, "level_mix": True, "level_mean": "raw"}),
    ("lstm", {"hidden_size": 4, "ensemble": 3, "level_mix": True}),
    ("dlinear", {}),
    ("dlinear", {"individual": True, "kernel_size": 3, "level_mix": True}),
    ("dlinear", {"ensemble": 2, "level_mix": True, "level_mean": "raw"}),
]


@pytest.mark.parametrize(("arch", "params"), SPECS)
def test_parameter_count_is_what_building_allocates(arch: str, params: dict[str, Any]) -> None:
    spec = NeuralSpec(arch, seq_len=12, horizon=4, channels=3, params=params)
    module = build_module(spec, Scaler((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    assert parameter_count(spec) == sum(v.numel() for v in module.state_dict().values())


@pytest.mark.parametrize(
    "params",
    [
        {"hidden_size": 16000, "num_layers": 1},  # over the field's bound
        {"hidden_size": 4096, "num_layers": 8},  # each field in bounds, the whole far over
        {"hidden_size": 1024, "num_layers": 2, "ensemble": 32},
    ],
)
def test_an_oversized_spec_is_refused_without_building_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    info = save_artifact(_forecaster(), tmp_path, preset="cpu")
    meta = _with(info.meta, "spec.params", params)
    (info.path / META).write_text(json.dumps(meta))
    built: list[str] = []

    def refuse(name: str) -> Any:
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            built.append(name)
            raise AssertionError(f"{name} built")

        return init

    monkeypatch.setattr(lstm.LSTMNet, "__init__", refuse("LSTMNet"))
    monkeypatch.setattr(torch.nn.LSTM, "__init__", refuse("nn.LSTM"))
    monkeypatch.setattr(dlinear.DLinear, "__init__", refuse("DLinear"))
    with pytest.raises(ModelLoadError, match=r"hidden_size|values, more than"):
        load_artifact(info.path)
    assert built == []
    spec = NeuralSpec("lstm", seq_len=8, horizon=2, params=params)
    assert parameter_count(spec) > MAX_PARAMETERS


def test_spec_bounds_admit_what_training_writes() -> None:
    """The defaults and the load models' settings (with an ensemble) pass with room."""
    from trainer.train import params_for_load

    for arch in ("lstm", "dlinear"):
        for params in ({}, {"hidden_size": 64, "num_layers": 2}, params_for_load(arch, 5)):
            spec = NeuralSpec(arch, seq_len=100, horizon=12, params=params)
            assert check_spec(spec.to_dict()) == spec
            assert parameter_count(spec) < MAX_PARAMETERS // 10


# -- the model directory --------------------------------------------------------------------
def test_bad_meta_in_the_model_dir_is_skipped_and_reported(tmp_path: Path) -> None:
    """A ``meta.json`` with ``"version": Infinity`` made listing (and so ``serve``) raise
    OverflowError; now it is skipped, reported once per listing, and the good one serves."""
    good = save_artifact(_forecaster(), tmp_path, preset="cpu", version=1)
    bad = save_artifact(_forecaster(), tmp_path, preset="cpu", version=2)
    text = (bad.path / META).read_text().replace('"version": 2', '"version": Infinity')
    (bad.path / META).write_text(text)
    nan = save_artifact(_forecaster(), tmp_path, preset="cpu", version=3)
    (nan.path / META).write_text(json.dumps(_with(nan.meta, "scaler.mean.0", math.nan)))
    reported: list[tuple[str, str | None, str]] = []

    def on_invalid(path: Path, model: str | None, why: str) -> None:
        reported.append((path.name, model, why))

    assert [a.version for a in list_artifacts(tmp_path, "lstm", on_invalid=on_invalid)] == [1]
    assert sorted(r[0] for r in reported) == sorted([bad.path.name, nan.path.name])
    assert all(model == "lstm" for _, model, _ in reported)
    reported.clear()
    _, meta = load_latest(tmp_path, "lstm", on_invalid=on_invalid)
    assert meta["version"] == 1 and meta["name"] == good.path.name
    assert len(reported) == 2
    # an artifact of another model or task is not reported for this one
    assert list_artifacts(tmp_path, "dlinear", on_invalid=on_invalid) == []
    assert list_artifacts(tmp_path, "lstm", task="load", on_invalid=on_invalid) == []
    assert len(reported) == 2


def test_saving_writes_strict_json_and_refuses_what_readers_would(tmp_path: Path) -> None:
    """Training records may hold NaN (a guard score of a broken champion): written as null,
    so the artifact is valid; a forecaster with a NaN scaler is not written at all."""
    from predictor.errors import TrainingError

    extra = {"guard": {"champion_score": math.nan}, "training": {"history": [1.0, math.inf]}}
    info = save_artifact(_forecaster(), tmp_path, preset="cpu", extra=extra)
    text = (info.path / META).read_text()
    json.loads(text, parse_constant=_no_constant)
    assert info.meta["guard"]["champion_score"] is None
    load_artifact(info.path)
    broken = _forecaster()
    broken.scaler = Scaler((math.nan, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(TrainingError, match=r"scaler\.mean"):
        save_artifact(broken, tmp_path / "other", preset="cpu")
    assert not list((tmp_path / "other").iterdir())


def _no_constant(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def test_limits_are_consistent() -> None:
    assert artifact_meta.MAX_WEIGHTS_BYTES > 4 * artifact_meta.MAX_PARAMETERS
    assert artifact_meta.MAX_VERSION == 2**53
