"""The next-request walk-forward: pooling over streams, the shape of its report, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError, TrainingError
from predictor.features import QUANTITIES
from predictor.models import LastValue, default_baselines
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from trainer.evaluation.next_request import (
    NEXT_REQUEST,
    BacktestConfig,
    next_request_backtest,
    split_streams,
    walk_forward,
)
from trainer.evaluation.report import to_markdown
from trainer.evaluation.stats import score

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


def test_the_ensemble_row_is_scored_on_the_same_forecasts(tmp_path: Path) -> None:
    path = write_trace(synthesize(300, seed=3), tmp_path / "t.csv")
    df, _ = load_trace(path)
    cfg = BacktestConfig(seq_len=8, epochs=1, batch_size=32, aggregate=True)
    report = next_request_backtest(df, cfg)
    rows = {(r["model"], r["target"]): r for r in report["results"]}
    experts = [*cfg.models, *(b.name for b in default_baselines())]
    for q in QUANTITIES:
        ens = rows[("ensemble", q)]
        assert ens["kind"] == "ensemble" and ens["n"] == report["task_config"]["forecasts"]
        maes = [rows[(m, q)]["mae"] for m in experts]
        # a convex combination of the experts: within their range (log1p-space weights)
        assert min(maes) * 0.5 <= ens["mae"] <= max(maes) and 0.0 <= ens["coverage"] <= 1.0
    assert all(v["model"] != "ensemble" for v in report["verdict"])  # not a trained model
    assert "- **ensemble** (every expert aggregated online)" in to_markdown(report)
