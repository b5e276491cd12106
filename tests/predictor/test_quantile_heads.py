"""The quantile outputs of a network: where they start, and that each keeps its role."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from predictor.artifacts import WEIGHTS, load_artifact, save_artifact
from predictor.features import Scaler, to_log
from predictor.models.neural import (
    NeuralForecaster,
    NeuralSpec,
    build_member,
    initial_offsets,
    lower_median,
)
from trainer.train import TrainConfig, train_forecaster

#: a load network's level as one 30-bin median blended towards the 30-bin mean (the
#: load networks' settings before ``level_windows``; artifacts may still carry them)
MIX_30 = {"level_len": 30, "level_mix": True, "learning_rate": 3e-4}


@pytest.mark.parametrize("arch", ["lstm", "dlinear"])
def test_an_untrained_network_forecasts_the_level_inside_an_interval(arch: str) -> None:
    torch.manual_seed(0)
    spec = NeuralSpec(arch, seq_len=24, horizon=5, params={"level_len": 10})
    x = torch.randn(16, 24, 3)
    with torch.no_grad():
        out = build_member(spec)(x)  # [B, H, C, Q]
    level = lower_median(x[:, -10:, :]).unsqueeze(-1)  # [B, 1, C, 1]
    offsets = initial_offsets(spec.quantiles)
    assert offsets[0] < 0 < offsets[2] and offsets[1] == 0
    torch.testing.assert_close(out, (level + offsets).expand_as(out))


def _unsorted(module: torch.nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The network's quantile outputs before they are sorted."""
    with monkeypatch.context() as m:
        m.setattr(torch, "sort", lambda y, dim=-1: SimpleNamespace(values=y))
        with torch.no_grad():
            return module(x).numpy()


@pytest.mark.parametrize("arch", ["lstm", "dlinear"])
def test_quantile_outputs_keep_their_roles_while_training(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each output row stays the 10th, 50th or 90th percentile for every window, so the sort
    that guards against crossing has nothing to reorder. Were the rows to start equal, the
    sort would assign their roles window by window and training would tangle them (a row
    the median for some windows and a bound for others)."""
    rng = np.random.default_rng(3)
    t = np.arange(3_000)
    rate = 20 + 15 * np.sin(2 * np.pi * t / 300)
    counts = rng.poisson(rate)
    series = np.stack([counts, counts * rng.lognormal(5, 1, len(t)), counts * 30.0], axis=1)
    cfg = TrainConfig(arch, seq_len=32, horizon=6, epochs=6, patience=6, device="cpu")
    fc = train_forecaster([series], cfg, progress=False).forecaster
    windows = np.stack([series[i - 32 : i] for i in range(32, len(series), 7)])
    q = _unsorted(fc.module, torch.from_numpy(fc._scaled(windows)), monkeypatch)
    in_order = (q[..., 0] <= q[..., 1]) & (q[..., 1] <= q[..., 2])
    assert in_order.mean() > 0.99


def test_the_level_mix_blends_the_window_median_towards_its_mean(tmp_path: Path) -> None:
    """Untrained, a load network's level is the median of its last ``level_len`` steps;
    its mix weights move that level per channel towards their mean, and an artifact
    brings the learned weights back."""
    torch.manual_seed(0)
    spec = NeuralSpec("dlinear", seq_len=24, horizon=2, params={"level_len": 10, "level_mix": True})
    member = build_member(spec)
    x = torch.randn(8, 24, 3) ** 2  # skewed: mean and median apart
    median = lower_median(x[:, -10:, :])
    mean = x[:, -10:, :].mean(dim=1, keepdim=True)

    def median_row(module: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return module(x)[..., 1]  # [B, H, C]: the level, the network being untrained

    torch.testing.assert_close(median_row(member), median.expand(8, 2, 3))
    with torch.no_grad():
        member.mix.copy_(torch.tensor([0.0, 0.5, 1.0]))
    expected = torch.cat(
        [median[..., :1], (median + mean)[..., 1:2] / 2, mean[..., 2:]], dim=-1
    ).expand(8, 2, 3)
    torch.testing.assert_close(median_row(member), expected)

    raw = np.random.default_rng(0).gamma(1.0, 50.0, size=(64, 3))
    fc = NeuralForecaster(spec, member, Scaler.fit(to_log(raw)))
    loaded, _ = load_artifact(save_artifact(fc, tmp_path, preset="cpu").path)
    assert loaded.module.mix.tolist() == [0.0, 0.5, 1.0]
    windows = np.random.default_rng(2).gamma(1.0, 50.0, size=(5, 24, 3))
    np.testing.assert_allclose(loaded.predict(windows).point, fc.predict(windows).point)


def test_a_level_mix_needs_the_median() -> None:
    from predictor.errors import ConfigError
    from predictor.models.neural import WindowNorm

    with pytest.raises(ConfigError, match="median"):
        WindowNorm(torch.nn.Identity(), "mean", mix_channels=3)


def test_a_raw_value_mean_level_is_the_moving_mean_baseline(tmp_path: Path) -> None:
    """With ``level_mean: raw`` and the mix at 1, an untrained load network forecasts
    exactly what the 30-bin moving mean forecasts, in raw units, at every horizon (the
    mean of the log values, the other ``level_mean``, sits well below it on skewed load);
    an artifact rebuilds the level from its scaler."""
    from predictor.models.baselines import RollingMean

    rng = np.random.default_rng(4)
    history = rng.gamma(0.5, 200.0, size=(500, 3))  # skewed, some bins near 0
    scaler = Scaler.fit(to_log(history))
    windows = rng.gamma(0.5, 200.0, size=(6, 48, 3))
    baseline = RollingMean(30, horizon=4).predict(windows).point  # [B, H, C]

    def level_forecast(level_mean: str) -> tuple[NeuralForecaster, np.ndarray]:
        spec = NeuralSpec("dlinear", 48, 4, params={**MIX_30, "level_mean": level_mean})
        fc = NeuralForecaster(spec, build_member(spec, scaler), scaler)
        with torch.no_grad():
            fc.module.mix.fill_(1.0)
        return fc, fc.predict(windows).point

    fc, raw_level = level_forecast("raw")
    np.testing.assert_allclose(raw_level, baseline, rtol=1e-4)
    _, log_level = level_forecast("log")
    assert (log_level < 0.9 * baseline).mean() > 0.9

    info = save_artifact(fc, tmp_path, preset="cpu")
    loaded, _ = load_artifact(info.path)
    np.testing.assert_allclose(loaded.predict(windows).point, raw_level)
    # the level's scale is in the weights: a reader without this level refuses them
    log_spec = NeuralSpec("dlinear", 48, 4, params={**MIX_30, "level_mean": "log"})
    old_reader = build_member(log_spec)
    state = torch.load(info.path / WEIGHTS, weights_only=True)
    assert {"log_mean", "log_std"} <= set(state)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        old_reader.load_state_dict(state, strict=True)


def test_a_raw_value_mean_level_neither_overflows_nor_runs_without_its_scaler() -> None:
    from predictor.errors import ConfigError

    spec = NeuralSpec(
        "lstm", 16, 2, params={"level_len": 8, "level_mix": True, "level_mean": "raw"}
    )
    with pytest.raises(ConfigError, match="scaler"):
        build_member(spec)
    with pytest.raises(ConfigError, match="level_mean"):
        build_member(NeuralSpec("lstm", 16, 2, params={"level_mix": True, "level_mean": "sum"}))
    scaler = Scaler((1.0, 1.0, 1.0), (0.5, 0.5, 0.5))
    member = build_member(spec, scaler)
    with torch.no_grad():
        member.mix.fill_(1.0)
        out = member(torch.full((2, 16, 3), 400.0))  # log1p values near 200: exp overflows
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 1], torch.full((2, 2, 3), 400.0))


def test_a_level_over_several_windows_starts_half_on_the_longest_median(tmp_path: Path) -> None:
    """With ``level_windows`` an untrained load network forecasts a fixed mix of each
    window's median and mean (half the weight on the longest window's median, the rest
    even), its learned weights move the level per channel, and an artifact brings them back."""
    torch.manual_seed(0)
    spec = NeuralSpec("dlinear", seq_len=24, horizon=2, params={"level_windows": [2, 10]})
    member = build_member(spec)
    x = torch.randn(8, 24, 3) ** 2
    cands = [
        lower_median(x[:, -2:, :]),
        x[:, -2:, :].mean(dim=1, keepdim=True),
        lower_median(x[:, -10:, :]),
        x[:, -10:, :].mean(dim=1, keepdim=True),
    ]
    start = (cands[0] + cands[1] + cands[3]) / 6 + cands[2] / 2

    def median_row(module: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return module(x)[..., 1]

    torch.testing.assert_close(median_row(member), start.expand(8, 2, 3))
    with torch.no_grad():
        member.level_logits.copy_(torch.tensor([[50.0, 0, 0, 0], [0, 50.0, 0, 0], [0, 0, 0, 50.0]]))
    expected = torch.cat([cands[0][..., :1], cands[1][..., 1:2], cands[3][..., 2:]], dim=-1)
    torch.testing.assert_close(median_row(member), expected.expand(8, 2, 3))

    raw = np.random.default_rng(0).gamma(1.0, 50.0, size=(64, 3))
    fc = NeuralForecaster(spec, member, Scaler.fit(to_log(raw)))
    loaded, _ = load_artifact(save_artifact(fc, tmp_path, preset="cpu").path)
    torch.testing.assert_close(loaded.module.level_logits, member.level_logits)


def test_level_weights_train_fast_and_without_weight_decay() -> None:
    """The level weights are in the fast group with no weight decay: decay would pull
    them back to an even mix, away from what the data choose."""
    from trainer.train import MIX_LR_FACTOR, _param_groups, params_for_load

    spec = NeuralSpec("lstm", seq_len=32, horizon=1, params=params_for_load("lstm"))
    module = build_member(spec, Scaler.fit(to_log(np.ones((4, 3)))))
    cfg = TrainConfig(model="lstm", seq_len=32, params=params_for_load("lstm"))
    groups = _param_groups(module, cfg)
    fast = [g for g in groups if g.get("weight_decay") == 0.0]
    assert len(fast) == 1 and fast[0]["lr"] == pytest.approx(groups[0]["lr"] * MIX_LR_FACTOR)
    assert any(p is module.level_logits for p in fast[0]["params"])
