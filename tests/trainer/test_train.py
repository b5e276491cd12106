"""The training loop, device choice and offline training's error handling."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from predictor.errors import ConfigError, TrainingError
from predictor.features import request_matrix, to_log
from predictor.synth import synthesize
from trainer import offline
from trainer.device import is_cuda_oom, resolve_device
from trainer.presets import PRESETS, get_preset
from trainer.train import TrainConfig, TrainResult, train_forecaster

TINY = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}


@cache
def _series(rows: int = 400, seed: int = 11) -> np.ndarray:
    df = synthesize(rows, seed=seed)
    return request_matrix(
        df["Timestamp"].to_numpy(),
        df["Request tokens"].to_numpy(),
        df["Response tokens"].to_numpy(),
    )


def _cfg(model: str = "dlinear", **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "model": model,
        "seq_len": 12,
        "epochs": 3,
        "batch_size": 32,
        "device": "cpu",
        "params": TINY.get(model, {}),
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("model", ["lstm", "dlinear"])
def test_history_and_report(model: str) -> None:
    result = train_forecaster([_series()], _cfg(model), progress=False)
    assert isinstance(result, TrainResult)
    assert len(result.history["train"]) == len(result.history["val"]) == result.epochs_run == 3
    assert all(np.isfinite(v) for v in result.history["train"] + result.history["val"])
    assert 1 <= result.best_epoch <= result.epochs_run
    assert result.best_val_loss == pytest.approx(min(result.history["val"]), abs=1e-6)
    assert result.final_train_loss == result.history["train"][-1]
    assert result.device == "cpu" and result.duration_s > 0
    assert result.n_train > 0 and result.n_val > 0
    meta = result.metadata()
    assert meta["training"]["history"] == result.history
    assert len(meta["validation"]["mae"]) == 3
    assert result.forecaster.name == model


def test_early_stopping_when_validation_stalls() -> None:
    # a zero learning rate leaves the weights (and so the validation loss) unchanged
    cfg = _cfg("dlinear", epochs=50, patience=2, learning_rate=0.0)
    result = train_forecaster([_series()], cfg, progress=False)
    assert result.epochs_run == 3 < cfg.epochs
    assert result.best_epoch == 1
    assert len(set(result.history["val"])) == 1


def test_scaler_sees_training_rows_only() -> None:
    series = _series().copy()
    series[320:, 1:] *= 50  # a very different validation period
    cfg = _cfg("dlinear", epochs=1, val_fraction=0.2)
    scaler = train_forecaster([series], cfg, progress=False).forecaster.scaler
    cut = int(len(series) * (1 - cfg.val_fraction))
    assert cut == 320
    np.testing.assert_allclose(scaler.mean, to_log(series[:cut]).mean(axis=0))
    np.testing.assert_allclose(scaler.std, to_log(series[:cut]).std(axis=0))
    assert not np.allclose(scaler.mean, to_log(series).mean(axis=0))


def test_confidence_and_calibration_shape() -> None:
    result = train_forecaster([_series()], _cfg("dlinear", horizon=2), progress=False)
    fc = result.forecaster
    assert fc.confidence is not None and 0.0 <= fc.confidence <= 1.0
    assert fc.calibration.shape == (2, 3)
    assert np.isfinite(fc.calibration).all()
    assert result.val_metrics["confidence"] == pytest.approx(fc.confidence, abs=1e-4)


def test_several_streams_train_together() -> None:
    a, b = _series(300, 1), _series(200, 2)
    result = train_forecaster([a, b], _cfg("dlinear", epochs=1), progress=False)
    cuts = [int(len(s) * 0.8) for s in (a, b)]
    expected = to_log(np.concatenate([a[: cuts[0]], b[: cuts[1]]])).mean(axis=0)
    np.testing.assert_allclose(result.forecaster.scaler.mean, expected)


def test_a_stream_too_short_for_a_training_window_adds_none() -> None:
    # 14 rows: its first 11 give no training window at seq_len 12 (this used to crash in reshape)
    long, short = _series(), _series(14, 5)
    result = train_forecaster([long, short], _cfg("dlinear", epochs=1), progress=False)
    alone = train_forecaster([long], _cfg("dlinear", epochs=1), progress=False)
    assert result.n_train == alone.n_train
    assert result.n_val == alone.n_val + 2  # its rows 13 and 14 are validation targets


def test_too_few_rows_is_a_training_error() -> None:
    # 15 rows: the first 12 train, and a window of 12 needs a 13th row as its target
    with pytest.raises(TrainingError) as info:
        train_forecaster([_series()[:15]], _cfg("dlinear"), progress=False)
    message = str(info.value)
    assert message.startswith("too few rows to train: 15 rows give 0 training")
    assert "seq_len=12" in message and "smaller --seq-len" in message
    with pytest.raises(TrainingError, match="no training rows"):
        train_forecaster([], _cfg("dlinear"), progress=False)


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'transformer'; choose from lstm, dlinear"
    ):
        train_forecaster([_series()], _cfg("transformer"), progress=False)
    with pytest.raises(ConfigError, match="unknown model 'foo'"):
        offline.check_models(["lstm", "foo"])
    assert offline.check_models(["dlinear"]) == ("dlinear",)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"--device cuda .* no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_is_cuda_oom() -> None:
    assert is_cuda_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_cuda_oom(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert not is_cuda_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_cuda_oom(ValueError("CUDA out of memory"))


def test_presets() -> None:
    assert set(PRESETS) == {"simple", "production", "cpu"}
    cpu = get_preset("cpu")
    assert (cpu.seq_len, cpu.epochs, cpu.batch_size, cpu.device) == (80, 50, 32, "cpu")
    tuned = cpu.override(seq_len=16, epochs=None)
    assert (tuned.seq_len, tuned.epochs) == (16, 50)
    with pytest.raises(ConfigError, match="unknown preset 'gpu'"):
        get_preset("gpu")


# --- offline.train_models ----------------------------------------------------------------


def _trace(rows: int = 600) -> pd.DataFrame:
    """A loaded-trace frame (canonical columns) from the synthetic generator."""
    df = synthesize(rows, seed=4)
    return pd.DataFrame(
        {
            "timestamp_s": df["Timestamp"].astype(float),
            "request_tokens": df["Request tokens"],
            "response_tokens": df["Response tokens"],
            "model": df["Model"],
        }
    )


def _preset(**kw: Any) -> Any:
    return get_preset("cpu").override(seq_len=12, epochs=2, **kw)


def test_train_models_saves_each_model(tmp_path: Path) -> None:
    report = offline.train_models(_trace(), _preset(), tmp_path, progress=False)
    assert report.trained == 2 and report.device == "cpu"
    assert set(report.streams) == {"ChatGPT", "GPT-4"} and report.rows == 600
    names = sorted(p.name.rsplit("_", 2)[0] for p in tmp_path.iterdir())
    assert names == ["cpu_dlinear", "cpu_lstm"]
    for outcome in report.outcomes:
        assert outcome.error is None and outcome.artifact is not None
        assert outcome.artifact.meta["data"]["stream_key"] == "model"
        assert "training" in outcome.artifact.meta


def test_cuda_oom_becomes_a_training_error_with_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(offline, "train_forecaster", oom)
    with pytest.raises(TrainingError) as info:
        offline.train_models(_trace(), _preset(), tmp_path, progress=False)
    message = str(info.value)
    for advice in ("--sample-size", "--batch-size", "--device cpu"):
        assert advice in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_other_runtime_errors_are_not_disguised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(offline, "train_forecaster", broken)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        offline.train_models(_trace(), _preset(), tmp_path, progress=False)


def test_one_model_failing_does_not_stop_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = offline.train_forecaster

    def flaky(series: Any, cfg: TrainConfig, progress: bool = True) -> TrainResult:
        if cfg.model == "lstm":
            raise TrainingError("lstm: loss became nan at epoch 1")
        return real(series, cfg, progress=progress)

    monkeypatch.setattr(offline, "train_forecaster", flaky)
    report = offline.train_models(_trace(), _preset(), tmp_path, progress=False)
    assert report.trained == 1
    by_model = {o.model: o for o in report.outcomes}
    assert by_model["lstm"].error == "lstm: loss became nan at epoch 1"
    assert by_model["dlinear"].artifact is not None


def test_train_models_with_too_few_rows(tmp_path: Path) -> None:
    # no stream reaches seq_len + 2 = 14 rows
    with pytest.raises(TrainingError, match=r"too few rows to train: 13 rows.*--seq-len"):
        offline.train_models(_trace(13), _preset(), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model", ["lstm", "dlinear"])
def test_an_ensemble_averages_networks_from_consecutive_seeds(model: str, tmp_path: Path) -> None:
    """Each member is the network a single run from its seed gives; the ensemble's
    quantiles are their mean; the artifact holds every member and loads back the same."""
    from predictor.artifacts import load_artifact, save_artifact
    from predictor.models.neural import Ensemble

    params = {**TINY.get(model, {}), "ensemble": 3}
    result = train_forecaster([_series()], _cfg(model, params=params, seed=4), progress=False)
    module = result.forecaster.module
    assert isinstance(module, Ensemble) and len(module.members) == 3
    x = torch.randn(5, 12, 3)
    alone = [  # member k is seed 4 + k trained alone
        train_forecaster([_series()], _cfg(model, seed=4 + k), progress=False).forecaster.module
        for k in (0, 2)
    ]
    with torch.no_grad():
        outs = [m(x) for m in module.members]
        assert torch.allclose(module(x), torch.stack(outs).mean(dim=0))
        assert torch.allclose(alone[0](x), outs[0], atol=1e-6)
        assert torch.allclose(alone[1](x), outs[2], atol=1e-6)
        assert not torch.allclose(outs[0], outs[1])  # the seeds differ
        q = module(x)
        assert torch.all(q[..., 1:] >= q[..., :-1])  # quantiles stay ordered
    info = save_artifact(result.forecaster, tmp_path, preset="test", task="load")
    loaded, meta = load_artifact(info.path)
    assert meta["spec"]["params"]["ensemble"] == 3
    windows = np.abs(np.random.default_rng(0).normal(100, 30, size=(4, 12, 3)))
    np.testing.assert_allclose(
        loaded.predict(windows).point, result.forecaster.predict(windows).point, rtol=1e-6
    )


def test_an_ensemble_needs_one_network_or_more() -> None:
    with pytest.raises(ConfigError, match="ensemble must be at least 1"):
        train_forecaster([_series()], _cfg(params={"ensemble": 0}), progress=False)


def test_the_level_blend_learns_faster_than_the_network() -> None:
    """Every parameter is optimised once; a load network's blend weights at
    MIX_LR_FACTOR times the learning rate and without weight decay, the rest as configured;
    a network without a blend has one group."""
    from predictor.features import Scaler
    from predictor.models.neural import NeuralSpec, build_module
    from trainer.train import MIX_LR_FACTOR, _param_groups

    cfg = TrainConfig("lstm", learning_rate=2e-3, weight_decay=0.05)
    blend = {"level_len": 8, "level_mix": True, "level_mean": "raw", "ensemble": 2}
    spec = NeuralSpec("lstm", seq_len=16, horizon=3, params=blend)
    module = build_module(spec, Scaler((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    groups = _param_groups(module, cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in module.parameters())
    net, mix = groups
    assert net["lr"] == 2e-3 and "weight_decay" not in net
    assert mix["lr"] == pytest.approx(2e-3 * MIX_LR_FACTOR) and mix["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in mix["params"]] == [(3,), (3,)]  # one per ensemble member
    plain = build_module(NeuralSpec("dlinear", seq_len=16, horizon=3))
    assert len(_param_groups(plain, cfg)) == 1


def test_a_network_may_carry_its_learning_rate() -> None:
    """Load DLinear trains at its own rate, which its spec (and so its artifact) records;
    a rate set on the run wins."""
    from trainer.train import DEFAULT_LEARNING_RATE, learning_rate, params_for_load

    dl, lstm = params_for_load("dlinear"), params_for_load("lstm")
    assert learning_rate(TrainConfig("dlinear", params=dl)) == 3e-4
    assert learning_rate(TrainConfig("lstm", params=lstm)) == DEFAULT_LEARNING_RATE
    assert learning_rate(TrainConfig("dlinear")) == DEFAULT_LEARNING_RATE
    assert learning_rate(TrainConfig("dlinear", learning_rate=5e-3, params=dl)) == 5e-3
    result = train_forecaster([_series()], _cfg("dlinear", epochs=1, params=dl), progress=False)
    assert result.forecaster.spec.params["learning_rate"] == 3e-4


def test_one_builder_applies_each_tasks_network_settings() -> None:
    """``TrainConfig.for_model``: load networks get their load settings (ensemble too),
    next-request networks none; ``params`` and the other fields go on top."""
    from trainer.train import params_for_load

    cfg = TrainConfig.for_model("dlinear", task="load", ensemble=3, seq_len=48, horizon=30)
    assert cfg.params == params_for_load("dlinear", 3) and cfg.params["ensemble"] == 3
    assert (cfg.model, cfg.seq_len, cfg.horizon, cfg.epochs) == ("dlinear", 48, 30, 100)
    assert TrainConfig.for_model("lstm", task="load").params == params_for_load("lstm")
    assert TrainConfig.for_model("lstm", epochs=3) == TrainConfig("lstm", epochs=3)
    own = TrainConfig.for_model("dlinear", task="load", params={"learning_rate": 1e-2})
    assert own.params == {**params_for_load("dlinear"), "learning_rate": 1e-2}
    with pytest.raises(ValueError, match="ensembles are for load"):
        TrainConfig.for_model("lstm", ensemble=2)
    with pytest.raises(ValueError, match="unknown task"):
        TrainConfig.for_model("lstm", task="weather")
