"""The walk-forward accuracy benchmark: scoring, pooling, verdict and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError, TrainingError
from predictor.features import QUANTITIES
from predictor.models import LastValue, Prediction, default_baselines
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from trainer.backtest import (
    NEXT_REQUEST,
    BacktestConfig,
    next_request_backtest,
    ratio_interval,
    score,
    split_streams,
    to_markdown,
    verdict,
    walk_forward,
)

SERIES = np.array(
    [[1.0, 10.0, 5.0], [3.0, 20.0, 5.0], [2.0, 5.0, 7.0], [6.0, 30.0, 1.0], [4.0, 25.0, 2.0]]
)


def _score_last_value(streams: list[tuple[np.ndarray, int]]) -> dict[str, dict]:
    pred, actual = walk_forward(LastValue(), streams)
    rows = score(pred, actual, QUANTITIES, task=NEXT_REQUEST, model="last_value", kind="baseline")
    return {r["target"]: r for r in rows}


def test_last_value_mae_by_hand() -> None:
    # cut 2: forecasts after rows 1, 2, 3 target rows 2, 3, 4 and repeat the row they follow
    rows = _score_last_value([(SERIES, 2)])
    assert rows["gap_s"]["mae"] == pytest.approx((1 + 4 + 2) / 3)
    assert rows["request_tokens"]["mae"] == pytest.approx((15 + 25 + 5) / 3)
    assert rows["response_tokens"]["mae"] == pytest.approx((2 + 6 + 1) / 3)
    assert all(r["n"] == 3 and r["horizon"] == 1 for r in rows.values())


def test_streams_pool_by_count() -> None:
    other = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [9.0, 1.0, 1.0]])
    rows = _score_last_value([(SERIES, 2), (other, 2)])
    # four absolute gap errors in all: 1, 4, 2 from SERIES and 8 from the other stream
    assert rows["gap_s"]["mae"] == pytest.approx((1 + 4 + 2 + 8) / 4)
    assert rows["gap_s"]["n"] == 4


def test_score_multi_horizon_skips_missing_outcomes() -> None:
    point = np.zeros((3, 2, 1))
    pred = Prediction(point, point - 1, point + 1)
    actual = np.array([[[0.5], [2.0]], [[-3.0], [0.0]], [[1.0], [np.nan]]])
    rows = score(pred, actual, ["load"], task="load", model="m", kind="model")
    h1, h2 = rows
    assert (h1["horizon"], h1["n"], h1["mae"], h1["coverage"]) == (1, 3, 1.5, pytest.approx(2 / 3))
    assert (h2["horizon"], h2["n"], h2["mae"], h2["coverage"]) == (2, 2, 1.0, 0.5)
    assert score(pred, actual, ["load"], [2], task="load", model="m", kind="model") == [h2]


def test_verdict_and_markdown_group_by_horizon() -> None:
    def row(model: str, kind: str, h: int, mae: float) -> dict:
        return {
            "task": "load",
            "target": "x",
            "horizon": h,
            "model": model,
            "kind": kind,
            "mae": mae,
            "coverage": 0.8,
            "n": 10,
        }

    results = [
        row("lstm", "model", 1, 2.0),
        row("a", "baseline", 1, 4.0),
        row("b", "baseline", 1, 3.0),
        row("lstm", "model", 5, 6.0),
        row("a", "baseline", 5, 5.0),
    ]
    v = verdict(results)
    assert [
        (x["horizon"], x["best_baseline"], x["ratio"], x["beats_best_baseline"]) for x in v
    ] == [
        (1, "b", pytest.approx(2 / 3), True),
        (5, "a", pytest.approx(1.2), False),
    ]
    md = to_markdown({"results": results, "verdict": v})
    assert "### load, horizon 1" in md and "### load, horizon 5" in md
    assert "| b | baseline | 3 * |" in md and "LOSES to a" in md


def test_ratio_interval_is_a_paired_block_bootstrap() -> None:
    rng = np.random.default_rng(1)
    base = rng.exponential(1.0, 3000)
    # the same errors: every resample gives 1
    assert ratio_interval(base, base.copy(), block=6) == [1.0, 1.0]
    # uniformly 5 % better: the pairing cancels the shared noise, 1 is far outside
    lo, hi = ratio_interval(0.95 * base, base)
    assert lo == pytest.approx(0.95) and hi == pytest.approx(0.95)
    # as good, but independent: the interval spans 1 and is wider for fewer origins
    other = rng.exponential(1.0, 3000)
    wide, narrow = ratio_interval(other[:300], base[:300]), ratio_interval(other, base)
    assert wide is not None and narrow is not None
    assert wide[0] < 1 < wide[1] and narrow[0] < 1 < narrow[1]
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])
    # a missing outcome (NaN) in either series drops that origin from both
    with_nan = np.append(base, np.nan)
    assert ratio_interval(with_nan, with_nan, block=6) == [1.0, 1.0]
    one_sided = np.append(0.95 * base, 7.0)
    assert ratio_interval(one_sided, with_nan) == ratio_interval(0.95 * base, base)
    # too few blocks, or a zero baseline: None
    assert ratio_interval(base[:50], base[:50], block=30) is None
    assert ratio_interval(base[:100], np.zeros(100)) is None
    with pytest.raises(ValueError, match="paired"):
        ratio_interval(base, base[:10])


def test_ratio_interval_holds_the_true_ratio_about_as_often_as_it_says() -> None:
    """Model and baseline errors from one distribution (true ratio 1), serially correlated:
    the 90 % interval holds 1 for most of 200 series, and not for all of them (a far too
    wide interval would); a model 30 % worse is told apart almost always."""
    rng = np.random.default_rng(5)

    def correlated(n: int) -> np.ndarray:
        noise = rng.standard_normal(n + 20)
        return np.abs(np.convolve(noise, np.ones(5) / 5, mode="valid")[:n])

    held, told_apart = 0, 0
    for k in range(200):
        a, b = correlated(1000), correlated(1000)
        lo, hi = ratio_interval(a, b, block=5, seed=k)
        held += lo <= 1.0 <= hi
        lo, hi = ratio_interval(1.3 * a, b, block=5, seed=k)
        told_apart += lo > 1.0
    assert 0.8 <= held / 200 < 0.98
    assert told_apart / 200 > 0.95


def test_verdict_intervals_need_both_error_series() -> None:
    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, 500)
    results = [
        {"task": "load", "target": "x", "horizon": 1, "model": m, "kind": k, "mae": mae, "n": 500}
        for m, k, mae in [("lstm", "model", 0.9 * base.mean()), ("a", "baseline", base.mean())]
    ]
    (v,) = verdict(results, {("lstm", "x", 1): 0.9 * base, ("a", "x", 1): base})
    assert v["ratio"] == pytest.approx(0.9) and v["ratio_interval"] == [0.9, 0.9]
    (v,) = verdict(results, {("lstm", "x", 1): 0.9 * base})
    assert "ratio_interval" not in v


def test_next_request_backtest_shape(tmp_path: Path) -> None:
    path = write_trace(synthesize(300, seed=3), tmp_path / "t.csv")
    df, _ = load_trace(path)
    cfg = BacktestConfig(seq_len=8, epochs=2, batch_size=32)
    report = next_request_backtest(df, cfg)
    assert set(report) == {"task_config", "results", "verdict"}
    tc = report["task_config"]
    assert tc["rows"] == 300 and tc["seq_len"] == 8 and tc["train_fraction"] == 0.6
    expected_n = sum(len(s) - cut for s, cut in split_streams(df, "model", 0.6).values())
    assert tc["forecasts"] == expected_n > 0
    names = [*cfg.models, *(b.name for b in default_baselines())]
    keys = {"task", "target", "horizon", "model", "kind", "mae", "coverage", "n"}
    got = {(r["model"], r["target"]) for r in report["results"]}
    assert got == {(m, t) for m in names for t in QUANTITIES}
    assert len(report["results"]) == len(names) * len(QUANTITIES)
    for r in report["results"]:
        assert set(r) == keys and r["task"] == NEXT_REQUEST and r["horizon"] == 1
        assert r["n"] == expected_n and 0.0 <= r["coverage"] <= 1.0 and r["mae"] >= 0
        assert r["kind"] == ("model" if r["model"] in cfg.models else "baseline")
    assert {(v["model"], v["target"]) for v in report["verdict"]} == {
        (m, t) for m in cfg.models for t in QUANTITIES
    }
    md = to_markdown(report)
    assert all(f"| {name} |" in md for name in names)


def test_config_and_data_errors() -> None:
    with pytest.raises(ConfigError):
        BacktestConfig(train_fraction=1.0)
    with pytest.raises(ConfigError):
        BacktestConfig(models=("arima",))
    df = pd.DataFrame({"timestamp_s": np.arange(30.0), "request_tokens": 1, "response_tokens": 1})
    with pytest.raises(TrainingError, match="too few rows"):
        next_request_backtest(df, BacktestConfig(seq_len=64, stream_key="none"))
