"""The synthetic trace reproduces the published BurstGPT characteristics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError
from predictor.synth import COLUMNS, synthesize, write_trace
from predictor.traces import load_trace

DAY_S = 86_400


@pytest.fixture(scope="module")
def trace() -> pd.DataFrame:
    return synthesize(100_000, seed=7)


def test_schema_and_determinism(trace: pd.DataFrame) -> None:
    assert tuple(trace.columns) == COLUMNS
    assert trace["Timestamp"].dtype == np.int64
    assert trace["Timestamp"].is_monotonic_increasing
    assert (trace["Total tokens"] == trace["Request tokens"] + trace["Response tokens"]).all()
    assert synthesize(2_000, seed=3).equals(synthesize(2_000, seed=3))
    assert not synthesize(2_000, seed=3).equals(synthesize(2_000, seed=4))
    assert len(synthesize(0)) == 0


def test_rate_and_span(trace: pd.DataFrame) -> None:
    ts = trace["Timestamp"].to_numpy()
    days = (ts[-1] - ts[0]) / DAY_S
    assert 3.0 <= days <= 5.0  # 100k rows at ~0.27 requests/s
    fast = synthesize(700_000, seed=1, rate_scale=4.0)["Timestamp"].to_numpy()
    assert fast[-1] > 7 * DAY_S
    week_rate = np.count_nonzero(fast < 7 * DAY_S) / (7 * DAY_S)  # over whole cycles
    assert week_rate == pytest.approx(4 * 0.27, rel=0.05)
    late = synthesize(100, seed=1, start_s=10 * DAY_S)["Timestamp"].to_numpy()
    assert late[0] >= 10 * DAY_S


def test_bursty_arrivals(trace: pd.DataFrame) -> None:
    gaps = np.diff(trace["Timestamp"].to_numpy()).astype(float)
    assert gaps.std() / gaps.mean() > 1.0


def test_daily_cycle(trace: pd.DataFrame) -> None:
    hours = (trace["Timestamp"].to_numpy() % DAY_S) // 3600
    per_hour = np.bincount(hours, minlength=24)
    assert abs(int(per_hour.argmax()) - 14) <= 1
    assert abs(int(per_hour.argmin()) - 7) <= 1
    assert per_hour.max() / per_hour.min() > 3


def test_weekly_cycle() -> None:
    ts = synthesize(300_000, seed=2)["Timestamp"].to_numpy()  # about 13 days
    day = ts // DAY_S
    per_day = np.bincount(day)[:13]
    weekday = (np.arange(13) % 7) < 5
    assert per_day[~weekday].mean() < 0.9 * per_day[weekday].mean()


def test_mixes(trace: pd.DataFrame) -> None:
    model = trace["Model"].value_counts(normalize=True)
    assert model["ChatGPT"] == pytest.approx(0.85, abs=0.02)
    assert model["GPT-4"] == pytest.approx(0.15, abs=0.02)
    log = trace["Log Type"].value_counts(normalize=True)
    assert log["API log"] == pytest.approx(0.90, abs=0.02)
    assert log["Conversation log"] == pytest.approx(0.10, abs=0.02)


def test_token_shapes(trace: pd.DataFrame) -> None:
    ok = trace[trace["Response tokens"] > 0]
    req = ok["Request tokens"].to_numpy()
    assert np.percentile(req, 99) / np.median(req) > 5  # long tail
    chat = ok.loc[ok["Model"] == "ChatGPT", "Response tokens"].to_numpy()
    hist, _ = np.histogram(np.log(chat), bins=30)
    peaks = [i for i in range(1, 29) if hist[i] >= hist[i - 1] and hist[i] >= hist[i + 1]]
    big = [i for i in peaks if hist[i] > 0.2 * hist.max()]
    assert len(big) >= 2  # bimodal
    lo, hi = big[0], big[-1]
    assert hi - lo >= 5 and hist[lo:hi].min() < 0.5 * min(hist[lo], hist[hi])


def test_failures(trace: pd.DataFrame) -> None:
    failed = trace["Response tokens"] == 0
    assert failed.mean() == pytest.approx(0.018, abs=0.004)
    both = failed & (trace["Request tokens"] == 0)
    assert 0 < both.sum() < failed.sum()


def test_write_and_load(tmp_path: Path) -> None:
    df = synthesize(500, seed=5)
    for name in ("t.csv", "t.jsonl"):
        path = write_trace(df, tmp_path / "sub" / name)
        loaded, report = load_trace(path)
        assert report.rows_read == 500 and report.rows_kept + report.dropped["duplicate"] == 500
        assert loaded["timestamp_s"].iloc[0] == float(df["Timestamp"].iloc[0])
    assert pd.read_csv(tmp_path / "sub" / "t.csv").equals(df)


def test_bad_arguments() -> None:
    for rows, rate_scale, start_s in ((-1, 1.0, 0.0), (5, 0.0, 0.0), (5, 1.0, -1.0)):
        with pytest.raises(ConfigError):
            synthesize(rows, rate_scale=rate_scale, start_s=start_s)
