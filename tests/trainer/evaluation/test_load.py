"""The load walk-forward benchmark: shape, persistence by hand, online calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError
from predictor.load import LOAD_QUANTITIES
from predictor.models import LastValue, Prediction
from predictor.models import ets as ets_module
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from trainer.evaluation.load import (
    LOAD,
    LoadBacktestConfig,
    evaluate,
    load_backtest,
    load_baselines,
    outcomes,
    served_best,
    split_load,
    walk,
    walk_errors,
)
from trainer.evaluation.report import load_markdown

TINY = {"bin_s": 60.0, "seq_len": 12, "epochs": 2, "batch_size": 32, "device": "cpu"}
BASELINES = ["last_value", "mean_6", "mean_30", "median_30", "ewma_0.3"]
KEYS = {
    "task",
    "target",
    "horizon",
    "model",
    "kind",
    "mae",
    "smape",
    "coverage",
    "coverage_raw",
    "n",
}


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_trace(synthesize(4000, seed=2), tmp_path_factory.mktemp("t") / "t.csv")
    df, _ = load_trace(path)
    return df


def _trace_of_counts(counts: list[int], bin_s: float = 60.0) -> pd.DataFrame:
    """``counts[b]`` requests in bin ``b``, each with 10 request and 2 response tokens."""
    ts = [b * bin_s + i for b, c in enumerate(counts) for i in range(c)]
    return pd.DataFrame({"timestamp_s": ts, "request_tokens": 10.0, "response_tokens": 2.0})


def test_load_backtest_shape(trace: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ets_module, "available", lambda: False)
    cfg = LoadBacktestConfig(horizons=(1, 6), peers=(), aggregate=False, **TINY)  # type: ignore[arg-type]
    report = load_backtest(trace, cfg)
    assert set(report) == {"task_config", "results", "verdict"}
    tc = report["task_config"]
    assert tc["task"] == LOAD and tc["horizons"] == [1, 6] and tc["stream_key"] == "none"
    assert tc["baselines"] == BASELINES
    assert any("statsforecast is not installed" in n for n in tc["notes"])
    (stream,) = tc["streams"].values()
    assert stream["forecasts"] == tc["forecasts"] == stream["bins"] - stream["train_bins"] > 0
    served = ("lstm", "dlinear", "best")
    names = [*served, *BASELINES]
    got = {(r["model"], r["target"], r["horizon"]) for r in report["results"]}
    assert got == {(m, q, h) for m in names for q in LOAD_QUANTITIES for h in (1, 6)}
    assert len(report["results"]) == len(got)
    for r in report["results"]:
        assert set(r) == KEYS and r["task"] == LOAD
        assert r["kind"] == ("model" if r["model"] in served else "baseline")
        assert r["n"] == tc["forecasts"] - r["horizon"] + 1
        assert r["mae"] >= 0 and 0 <= r["smape"] <= 2 and 0 <= r["coverage"] <= 1
    assert {(v["model"], v["target"], v["horizon"]) for v in report["verdict"]} == {
        (m, q, h) for m in served for q in LOAD_QUANTITIES for h in (1, 6)
    }
    for v in report["verdict"]:  # each ratio has its bootstrap interval
        lo, hi = v["ratio_interval"]
        assert 0 <= lo <= hi
    md = load_markdown(report)
    assert "### load, horizon 1" in md and "### load, horizon 6" in md
    assert "90% interval" in md
    assert all(f"| {name} |" in md for name in names) and "sMAPE" in md


def test_walk_errors_are_the_scored_errors(trace: pd.DataFrame) -> None:
    """The errors the ratio intervals resample are those the MAE is the mean of."""
    cfg = LoadBacktestConfig(horizons=(1, 6), **TINY)  # type: ignore[arg-type]
    streams = split_load(trace, cfg)
    for fc in load_baselines(cfg.horizon):
        rows = evaluate(fc, streams, cfg)
        errors = walk_errors(fc.name, walk(fc, streams, cfg), cfg)
        for r in rows:
            err = errors[(fc.name, r["target"], r["horizon"])]
            assert np.count_nonzero(~np.isnan(err)) == r["n"]
            assert np.nanmean(err) == pytest.approx(r["mae"])


def test_persistence_mae_and_smape_by_hand() -> None:
    df = _trace_of_counts([1, 3, 2, 6, 4, 0, 5])
    cfg = LoadBacktestConfig(train_fraction=0.5, horizons=(1, 2), stream_key="none")
    streams = split_load(df, cfg)
    assert [cut for _, cut in streams.values()] == [3]
    rows = {(r["target"], r["horizon"]): r for r in evaluate(LastValue(2), streams, cfg)}
    # origins 2..5 forecast the count of the bin they follow: 2, 6, 4, 0
    # horizon 1 targets 6, 4, 0, 5; horizon 2 (origins 2..4) targets 4, 0, 5
    h1, h2 = rows[("requests_per_s", 1)], rows[("requests_per_s", 2)]
    assert h1["n"] == 4 and h1["mae"] == pytest.approx((4 + 2 + 4 + 5) / 4 / 60)
    assert h2["n"] == 3 and h2["mae"] == pytest.approx((2 + 6 + 1) / 3 / 60)
    assert h1["smape"] == pytest.approx((8 / 8 + 4 / 10 + 8 / 4 + 10 / 5) / 4)
    assert rows[("request_tokens_per_s", 1)]["mae"] == pytest.approx(10 * h1["mae"])
    assert rows[("response_tokens_per_s", 2)]["mae"] == pytest.approx(2 * h2["mae"])


def test_outcomes_stop_at_the_end() -> None:
    s = np.arange(5.0)[:, None].repeat(3, axis=1)
    out = outcomes(s, 2, 3)  # origins 2 and 3
    assert out.shape == (2, 3, 3)
    assert out[0, :2, 0].tolist() == [3.0, 4.0] and out[1, 0, 0] == 4.0
    assert np.isnan(out[0, 2]).all() and np.isnan(out[1, 1:]).all()


class _Fixed:
    """A flat forecast of the window mean with an interval ``factor`` times as wide as 0."""

    kind = "baseline"

    def __init__(self, name: str, lo_factor: float, hi_factor: float) -> None:
        self.name, self.lo_factor, self.hi_factor = name, lo_factor, hi_factor
        self.seq_len, self.horizon, self.channels = 20, 1, 3

    def predict(self, windows: np.ndarray) -> Prediction:
        point = windows.mean(axis=1, keepdims=True)  # [B, 1, C]
        return Prediction(point, point * self.lo_factor, point * self.hi_factor)


@pytest.mark.parametrize(("lo", "hi"), [(1.0, 1.0), (0.0, 20.0)], ids=["too-narrow", "too-wide"])
def test_online_calibration_moves_coverage_toward_nominal(lo: float, hi: float) -> None:
    rng = np.random.default_rng(0)
    series = np.exp(rng.normal(1.0, 0.5, size=(2500, 3)))  # stationary, continuous
    cfg = LoadBacktestConfig(horizons=(1,), stream_key="none")
    rows = evaluate(_Fixed("fixed", lo, hi), {"all": (series, 500)}, cfg)
    for r in rows:
        raw, cal = r["coverage_raw"], r["coverage"]
        assert abs(cal - 0.8) < abs(raw - 0.8) - 0.1, r
        assert abs(cal - 0.8) < 0.05, r


def test_baselines_forecast_every_horizon() -> None:
    w = np.ones((2, 40, 3))
    for b in load_baselines(horizon=5):
        assert b.predict(w).point.shape == (2, 5, 3)


def test_ets_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("statsforecast")
    rng = np.random.default_rng(1)
    series = np.exp(rng.normal(1.0, 0.3, size=(200, 3)))
    cfg = LoadBacktestConfig(horizons=(1, 3), stream_key="none")
    fc = ets_module.AutoETS(3, 3, seq_len=100, refit_every=40)
    rows = evaluate(fc, {"all": (series, 150)}, cfg)
    assert {(r["model"], r["horizon"]) for r in rows} == {("auto_ets", 1), ("auto_ets", 3)}
    assert all(r["mae"] is not None and np.isfinite(r["mae"]) for r in rows)
    # refits and forward runs see bins up to the origin only
    base = fc.rolling_predict(series, 150)
    changed = series.copy()
    changed[171:] *= 50.0
    again = fc.rolling_predict(changed, 150)
    np.testing.assert_array_equal(base.point[:21], again.point[:21])
    assert not np.array_equal(base.point[21:], again.point[21:])


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="horizons"):
        LoadBacktestConfig(horizons=(0, 6))
    with pytest.raises(ConfigError, match="bin size"):
        LoadBacktestConfig(bin_s=0)
    with pytest.raises(ConfigError, match="stream key"):
        LoadBacktestConfig(stream_key="region")
    assert LoadBacktestConfig(horizons=(30, 1, 6, 6)).horizons == (1, 6, 30)
    with pytest.raises(ConfigError, match="no stream"):
        load_backtest(_trace_of_counts([1]), LoadBacktestConfig())


def test_served_best_follows_the_lower_rolling_error() -> None:
    """``best`` as the service publishes it: the first model until each model has
    LOAD_BEST_MIN_COUNT matured forecasts, then per quantity and horizon the one whose
    recent forecasts erred less; A is exact for the first 100 origins and B after them
    (B's rolling error, all of the run here, falls below A's after about 200)."""
    n, horizon = 400, 2
    series = np.tile(np.arange(n, dtype=np.float64)[:, None], (1, 3))  # bin t holds t
    start = 10
    truth = outcomes(series, start, horizon)[: n - 1 - start]  # [T, H, 3]
    truth = np.nan_to_num(truth)
    half = 100
    a, b = truth + 5.0, truth + 5.0
    a[:half] = truth[:half]  # A exact early, B exact late
    b[half:] = truth[half:]
    walked = {
        name: [(series, start, Prediction(p, p - 1, p + 1), Prediction(p, p - 1, p + 1))]
        for name, p in (("a", a), ("b", b))
    }
    cfg = LoadBacktestConfig(horizons=(1, 2), **TINY)  # type: ignore[arg-type]
    ((s, first, best, published),) = served_best(walked, cfg)
    assert s is series and first == start and published is best
    assert np.array_equal(best.point[: half + 1], a[: half + 1])  # first, then the lower error
    assert np.array_equal(best.point[-150:], b[-150:])  # B's rolling error is the lower by then
    # every published value is one of the models' (never a blend)
    assert np.all((best.point == a.astype(float)) | (best.point == b))
    assert np.all((best.lower == best.point - 1) & (best.upper == best.point + 1))
