"""One contract for every forecaster: LSTM, DLinear and each baseline.

Every forecaster must give ``[B, H, C]`` forecasts with ``lower <= point <= upper``,
finite values, the same output for the same seed, and a forecast at ``t`` that
never depends on rows after ``t``. Trained networks must also survive a save/load
round trip unchanged. DLinear's decomposition has its own checks at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.artifacts import load_artifact, save_artifact
from predictor.features import request_matrix
from predictor.models import (
    EWMA,
    Forecaster,
    LastValue,
    NeuralForecaster,
    Prediction,
    RollingMean,
    RollingMedian,
    ets,
    rolling_predict,
)
from predictor.models.dlinear import DLinear, MovingAverage, SeriesDecomposition
from predictor.synth import synthesize
from trainer.train import TrainConfig, train_forecaster

SEQ_LEN = 12
C = 3


@cache
def _series(rows: int = 400, seed: int = 3) -> np.ndarray:
    """A raw synthetic request series ``[rows, 3]`` (gap, request tokens, response tokens)."""
    df = synthesize(rows, seed=seed)
    return request_matrix(
        df["Timestamp"].to_numpy(),
        df["Request tokens"].to_numpy(),
        df["Response tokens"].to_numpy(),
    )


_PARAMS = {"lstm": {"hidden_size": 8, "num_layers": 1}, "dlinear": {"kernel_size": 5}}


def _train(arch: str, horizon: int, seed: int) -> NeuralForecaster:
    """A briefly trained network (2 epochs of a tiny model on 400 synthetic requests)."""
    cfg = TrainConfig(
        model=arch,
        seq_len=SEQ_LEN,
        horizon=horizon,
        epochs=2,
        batch_size=32,
        learning_rate=1e-2,
        device="cpu",
        seed=seed,
        params=_PARAMS[arch],
    )
    return train_forecaster([_series()], cfg, progress=False).forecaster


#: the same, trained once per argument set; callers must not mutate what it returns
_trained = cache(_train)


def _neural(arch: str) -> Callable[[int, int], Forecaster]:
    return lambda horizon, seed: _trained(arch, horizon, seed)


#: name -> factory(horizon, seed); baselines have no randomness, so they ignore the seed
FACTORIES: dict[str, Callable[[int, int], Forecaster]] = {
    "lstm": _neural("lstm"),
    "dlinear": _neural("dlinear"),
    "last_value": lambda h, seed: LastValue(horizon=h, channels=C, seq_len=SEQ_LEN),
    "rolling_mean": lambda h, seed: RollingMean(k=SEQ_LEN, horizon=h, channels=C),
    "rolling_median": lambda h, seed: RollingMedian(k=SEQ_LEN, horizon=h, channels=C),
    "ewma": lambda h, seed: EWMA(alpha=0.3, seq_len=SEQ_LEN, horizon=h, channels=C),
}
if ets.available():  # the optional ``ets`` extra
    FACTORIES["auto_ets"] = lambda h, seed: ets.AutoETS(horizon=h, channels=C, seq_len=SEQ_LEN)
NEURAL = ("lstm", "dlinear")
HORIZONS = (1, 3)


def _windows(batch: int = 5, seed: int = 0) -> np.ndarray:
    """Raw windows ``[B, L, C]`` cut from the synthetic series at random places."""
    series = _series()
    starts = np.random.default_rng(seed).integers(0, len(series) - SEQ_LEN, size=batch)
    return np.stack([series[s : s + SEQ_LEN] for s in starts])


def _assert_same(a: Prediction, b: Prediction, rows: int | None = None, msg: str = "") -> None:
    """Point and bounds identical (in the first ``rows`` rows, when given)."""
    for part in ("point", "lower", "upper"):
        x, y = getattr(a, part), getattr(b, part)
        np.testing.assert_array_equal(x[:rows], y[:rows], err_msg=f"{part} {msg}")


@pytest.fixture(params=sorted(FACTORIES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def factory(name: str) -> Callable[[int, int], Forecaster]:
    return FACTORIES[name]


@pytest.mark.parametrize("horizon", HORIZONS)
def test_shapes_follow_batch_horizon_channels(
    factory: Callable[[int, int], Forecaster], horizon: int
) -> None:
    fc = factory(horizon, 0)
    assert isinstance(fc, Forecaster)
    assert (fc.seq_len, fc.horizon, fc.channels) == (SEQ_LEN, horizon, C)
    assert fc.kind in ("model", "baseline") and fc.name
    pred = fc.predict(_windows(batch=5))
    for part in (pred.point, pred.lower, pred.upper):
        assert part.shape == (5, horizon, C)
    assert len(pred) == 5


@pytest.mark.parametrize("horizon", HORIZONS)
def test_interval_contains_point_and_is_finite(
    factory: Callable[[int, int], Forecaster], horizon: int
) -> None:
    pred = factory(horizon, 0).predict(_windows(batch=16, seed=1))
    for part in (pred.point, pred.lower, pred.upper):
        assert np.isfinite(part).all()
    assert (pred.lower <= pred.point).all()
    assert (pred.point <= pred.upper).all()
    assert (pred.lower >= 0).all()  # gaps and token counts are never negative


def test_finite_on_extreme_windows(factory: Callable[[int, int], Forecaster]) -> None:
    zeros = np.zeros((1, SEQ_LEN, C))
    huge = np.full((1, SEQ_LEN, C), 1e6)
    pred = factory(1, 0).predict(np.concatenate([zeros, huge]))
    for part in (pred.point, pred.lower, pred.upper):
        assert np.isfinite(part).all()


def test_same_seed_same_output(name: str, factory: Callable[[int, int], Forecaster]) -> None:
    # networks are trained twice from scratch; baselines are simply built twice
    build = (lambda h, seed: _train(name, h, seed)) if name in NEURAL else factory
    windows = _windows(batch=8, seed=2)
    first = build(1, 7).predict(windows)
    second = build(1, 7).predict(windows)
    _assert_same(first, second)


@pytest.mark.parametrize("arch", NEURAL)
def test_seed_matters_for_networks(arch: str) -> None:
    windows = _windows(batch=8, seed=2)
    a = _trained(arch, 1, 7).predict(windows).point
    b = _trained(arch, 1, 8).predict(windows).point
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("arch", NEURAL)
def test_save_load_round_trip(arch: str, horizon: int, tmp_path: Path) -> None:
    fc = _trained(arch, horizon, 0)
    info = save_artifact(fc, tmp_path, preset="test")
    loaded, meta = load_artifact(info.path)

    windows = _windows(batch=8, seed=4)
    before, after = fc.predict(windows), loaded.predict(windows)
    _assert_same(before, after)
    assert loaded.spec == fc.spec
    assert loaded.scaler == fc.scaler
    assert loaded.confidence == fc.confidence

    on_disk = json.loads((info.path / "meta.json").read_text())
    assert on_disk == meta
    for key in ("kind", "spec", "scaler", "calibration", "version", "created_at", "weights_sha256"):
        assert key in on_disk, key
    assert on_disk["kind"] == "model" and on_disk["model"] == arch
    assert on_disk["spec"]["arch"] == arch and on_disk["spec"]["horizon"] == horizon
    assert np.asarray(on_disk["calibration"]).shape == (horizon, C)
    assert on_disk["version"] == 1
    assert len(on_disk["weights_sha256"]) == 64


@pytest.mark.parametrize("horizon", HORIZONS)
def test_no_look_ahead(factory: Callable[[int, int], Forecaster], horizon: int) -> None:
    fc = factory(horizon, 0)
    series = _series()[:120].copy()
    # small batches so that changed rows share a batch with the forecasts that must not see them
    base = rolling_predict(fc, series, batch_size=7)
    assert base.point.shape == (len(series), horizon, C)
    rng = np.random.default_rng(5)
    for t in (0, 5, SEQ_LEN - 1, 40, len(series) - 2):
        changed = series.copy()
        changed[t + 1 :] = rng.uniform(0, 1e5, size=changed[t + 1 :].shape)
        pred = rolling_predict(fc, changed, batch_size=7)
        _assert_same(base, pred, rows=t + 1, msg=f"of the forecast at t={t}")
        assert not np.array_equal(base.point[t + 1 :], pred.point[t + 1 :])


def test_rolling_predict_start_and_empty(factory: Callable[[int, int], Forecaster]) -> None:
    fc = factory(1, 0)
    series = _series()[:30]
    full = rolling_predict(fc, series)
    tail = rolling_predict(fc, series, start=20)
    np.testing.assert_array_equal(full.point[20:], tail.point)
    empty = rolling_predict(fc, series, start=len(series))
    assert empty.point.shape == (0, 1, C)


# --- DLinear internals ---------------------------------------------------------------


@pytest.mark.parametrize("kernel", [0, 2, 4, 24])
def test_dlinear_refuses_even_kernel(kernel: int) -> None:
    with pytest.raises(ValueError, match="odd"):
        MovingAverage(kernel)


def test_dlinear_clamps_kernel_to_an_odd_width_within_the_window() -> None:
    assert (
        DLinear(
            seq_len=8, horizon=1, channels=C, kernel_size=25
        ).decomposition.moving_avg.kernel_size
        == 7
    )
    assert (
        DLinear(
            seq_len=9, horizon=1, channels=C, kernel_size=25
        ).decomposition.moving_avg.kernel_size
        == 9
    )


def test_moving_average_of_constant_is_the_input() -> None:
    x = torch.full((2, 10, C), 3.5)
    trend = MovingAverage(5)(x)
    assert trend.shape == x.shape
    torch.testing.assert_close(trend, x)
    seasonal, trend = SeriesDecomposition(5)(x)
    torch.testing.assert_close(seasonal, torch.zeros_like(x))


def test_moving_average_replicates_edges() -> None:
    # kernel 3 pads one copy of each end: [1, 1, 2, 3, 4, 10, 10]
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0]).reshape(1, 5, 1)
    trend = MovingAverage(3)(x).flatten()
    expected = torch.tensor([4 / 3, 2.0, 3.0, 17 / 3, 8.0])
    torch.testing.assert_close(trend, expected)
    # kernel 5 pads two copies: [1, 1, 1, 2, 3, 4, 10, 10, 10]
    trend5 = MovingAverage(5)(x).flatten()
    torch.testing.assert_close(trend5, torch.tensor([8 / 5, 11 / 5, 4.0, 29 / 5, 37 / 5]))
    seasonal, trend = SeriesDecomposition(3)(x)
    torch.testing.assert_close(seasonal + trend, x)


def test_dlinear_individual_has_one_head_pair_per_channel() -> None:
    shared = DLinear(seq_len=8, horizon=2, channels=C, n_quantiles=3, kernel_size=3)
    assert len(shared.seasonal) == len(shared.trend) == 1
    model = DLinear(seq_len=8, horizon=2, channels=C, n_quantiles=3, kernel_size=3, individual=True)
    assert len(model.seasonal) == len(model.trend) == C
    with torch.no_grad():
        for head in [*model.seasonal, *model.trend]:
            head.weight.zero_()
            head.bias.zero_()
        model.seasonal[1].bias.fill_(2.0)  # only channel 1's heads say anything
        model.trend[1].bias.fill_(0.5)
        y = model(torch.randn(4, 8, C))  # [B, H, C, Q]
    assert y.shape == (4, 2, C, 3)
    torch.testing.assert_close(y[:, :, 1, :], torch.full((4, 2, 3), 2.5))
    torch.testing.assert_close(y[:, :, [0, 2], :], torch.zeros(4, 2, 2, 3))


def test_dlinear_shared_head_treats_channels_alike() -> None:
    torch.manual_seed(0)
    model = DLinear(seq_len=8, horizon=2, channels=C, n_quantiles=3, kernel_size=3)
    x = torch.randn(4, 8, C)
    perm = [2, 0, 1]
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :, perm]), model(x)[:, :, perm, :])
