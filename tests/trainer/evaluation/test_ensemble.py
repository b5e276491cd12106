"""The load walk-forward's peer and ensemble rows, the ratios and the Poisson floor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError
from predictor.load import LOAD_QUANTITIES
from predictor.models import ets as ets_module
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from trainer.evaluation.ensemble import loo_centred_mean, poisson_abs_dev, poisson_floor
from trainer.evaluation.load import LoadBacktestConfig, load_backtest
from trainer.evaluation.report import load_markdown

TINY = {"bin_s": 60.0, "seq_len": 12, "epochs": 2, "batch_size": 32, "device": "cpu"}
PEERS = ["kalman", "kalman_log1p", "arima"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_trace(synthesize(4000, seed=2), tmp_path_factory.mktemp("t") / "t.csv")
    df, _ = load_trace(path)
    return df


def test_peers_and_ensemble_rows_in_the_json(
    trace: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ets_module, "available", lambda: False)
    cfg = LoadBacktestConfig(horizons=(1, 6), **TINY)  # type: ignore[arg-type]
    report = json.loads(json.dumps(load_backtest(trace, cfg)))  # strict JSON round trip
    rows = report["results"]
    kinds = {r["model"]: r["kind"] for r in rows}
    assert all(kinds[p] == "peer" for p in PEERS)
    assert kinds["ensemble"] == "model"
    assert report["task_config"]["peers"] == PEERS
    cells = {(q, h) for q in LOAD_QUANTITIES for h in (1, 6)}
    assert {(r["target"], r["horizon"]) for r in rows if r["model"] == "ensemble"} == cells
    ens = report["ensemble"]
    assert "BOA" in ens["aggregation"] and ens["poisson_floor_mae"] > 0
    assert {(r["target"], r["horizon"]) for r in ens["ratios"]} == cells
    for r in ens["ratios"]:
        experts = [
            x
            for x in rows
            if (x["target"], x["horizon"]) == (r["target"], r["horizon"])
            and x["model"] not in ("best", "ensemble")
        ]
        best = min(experts, key=lambda x: x["mae"])
        assert r["best_expert"] == best["model"] and r["best_expert_kind"] == best["kind"]
        assert r["ratio"] == pytest.approx(r["ensemble_mae"] / best["mae"])
        assert 0 <= r["coverage"] <= 1
        if r["target"] == "requests_per_s":
            assert r["floor_ratio"] == pytest.approx(ens["poisson_floor_mae"] / best["mae"])
        else:
            assert "floor_ratio" not in r
    md = load_markdown(report)
    assert "### Ensemble vs the best single expert" in md and "| ensemble | model |" in md
    for r in ens["ratios"]:
        assert f"| {r['target']} | {r['horizon']} | {r['ratio']:.3f} |" in md
    # the published ensemble is within reach of the best expert, not an outlier
    assert all(r["ratio"] < 1.5 for r in ens["ratios"])


def test_no_peers_no_ensemble(trace: pd.DataFrame) -> None:
    cfg = LoadBacktestConfig(horizons=(1,), peers=(), aggregate=False, ets=False, **TINY)  # type: ignore[arg-type]
    report = load_backtest(trace, cfg)
    assert "ensemble" not in report
    assert not {"ensemble", *PEERS} & {r["model"] for r in report["results"]}


def test_bin_180_on_a_small_trace(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = write_trace(synthesize(6000, seed=3), tmp_path_factory.mktemp("s") / "s.csv")
    df, _ = load_trace(path)
    cfg = LoadBacktestConfig(horizons=(1, 6), ets=False, **{**TINY, "bin_s": 180.0})  # type: ignore[arg-type]
    report = load_backtest(df, cfg)
    assert report["task_config"]["bin_s"] == 180.0
    assert {r["horizon"] for r in report["ensemble"]["ratios"]} == {1, 6}
    too_far = LoadBacktestConfig(  # a test period of 25 bins cannot score 10 forecasts at 30
        horizons=(1, 30), train_fraction=0.9, ets=False, **{**TINY, "bin_s": 180.0}
    )  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"too few to score .* horizon 30.*--horizons up to"):
        load_backtest(df, too_far)


def test_unknown_peer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown peer"):
        LoadBacktestConfig(peers=("nope",))


def test_poisson_floor_by_hand() -> None:
    # E|N - 1| for N ~ Poisson(1) is 2/e; E|N - 4| for Poisson(4) is 2 e^-4 4^5 / 4!
    assert poisson_abs_dev(np.array([1.0, 4.0])) == pytest.approx(
        [2 / np.e, 2 * np.exp(-4) * 4**5 / 24], rel=1e-9
    )
    rng = np.random.default_rng(0)
    draws = rng.poisson(7.5, 200_000)
    assert poisson_abs_dev(np.array([7.5]))[0] == pytest.approx(
        np.abs(draws - np.median(draws)).mean(), rel=0.01
    )
    # a constant 12 requests per 10 s bin: the leave-one-out rate is exactly 12
    series = np.full((100, 3), 1.2)
    assert loo_centred_mean(series[:, 0] * 10, 5) == pytest.approx(12.0)
    floor = poisson_floor({"s": (series, 60)}, 10.0)
    assert floor == pytest.approx(poisson_abs_dev(np.array([12.0]))[0] / 10.0)
