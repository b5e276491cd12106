"""The synthetic trace reproduces the published BurstGPT characteristics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError
from predictor.synth import COLUMNS, VARIANTS, synthesize, write_trace
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


# --- variants whose level moves within minutes ---------------------------------------

#: sha256 of ``synthesize(3000, seed=5).to_csv(index=False)`` before variants existed
WEEK_SHA256 = "83daeb9cb3ab030d8d7011bd2802e788bc8e67a92dafe4f57c91a9fda9a18442"


def test_week_variant_is_the_unchanged_default() -> None:
    week = synthesize(3000, seed=5, variant="week")
    assert week.equals(synthesize(3000, seed=5))
    digest = hashlib.sha256(week.to_csv(index=False).encode()).hexdigest()
    assert digest == WEEK_SHA256


def _counts(variant: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Requests per 10 s, 60 s and 300 s of a ~1.5 h trace at about 3-4 requests/s, from
    noon (where the daily cycle is flat)."""
    ts = synthesize(20_000, seed=seed, rate_scale=10, start_s=12 * 3600, variant=variant)[
        "Timestamp"
    ].to_numpy()
    return tuple(np.bincount((ts - ts[0]) // w)[:-1].astype(float) for w in (10, 60, 300))


def _jumps_2x(per_minute: np.ndarray) -> float:
    """Share of minute boundaries across which the rate halves or doubles."""
    return float((np.abs(np.diff(np.log(np.maximum(per_minute, 1.0)))) > np.log(2.0)).mean())


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {v: _counts(v) for v in VARIANTS}


def test_week_moves_slowly(counts: dict[str, tuple[np.ndarray, ...]]) -> None:
    ten, minute, five = counts["week"]
    assert ten.var() / ten.mean() < 6.0  # near Poisson-Gamma noise over 10 s
    assert _jumps_2x(minute) < 0.02
    assert np.log(five).std() < 0.25


def test_bursty_has_bursts(counts: dict[str, tuple[np.ndarray, ...]]) -> None:
    ten, minute, _ = counts["bursty"]
    assert ten.var() / ten.mean() > 30.0  # over-dispersed 10 s counts: the bursts
    assert np.quantile(ten, 0.99) > 4.0 * np.median(ten)
    assert _jumps_2x(minute) > 0.2


def test_regimes_shift_the_rate(counts: dict[str, tuple[np.ndarray, ...]]) -> None:
    _, minute, five = counts["regimes"]
    assert _jumps_2x(minute) > 0.1  # the rate changes by more than 2x at changepoints
    assert np.log(np.maximum(five, 1.0)).std() > 0.4
    # but stays put within a regime: most minutes are within 2x of the one before
    assert _jumps_2x(minute) < 0.5


def test_drift_wanders(counts: dict[str, tuple[np.ndarray, ...]]) -> None:
    _, minute, five = counts["drift"]
    assert np.log(np.maximum(five, 1.0)).std() > 0.4
    log_minute = np.log(np.maximum(minute, 1.0))
    assert np.corrcoef(log_minute[:-1], log_minute[1:])[0, 1] > 0.6  # it wanders, not jitters


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_variants_keep_the_schema_rate_and_determinism(variant: str) -> None:
    df = synthesize(30_000, seed=3, variant=variant)
    assert tuple(df.columns) == COLUMNS and df["Timestamp"].is_monotonic_increasing
    assert df.equals(synthesize(30_000, seed=3, variant=variant))
    assert not df.equals(synthesize(30_000, seed=3))
    ts = df["Timestamp"].to_numpy()
    assert 0.5 * 0.27 < len(ts) / (ts[-1] - ts[0]) < 2.0 * 0.27
    assert len(synthesize(0, variant=variant)) == 0


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ConfigError, match="variant"):
        synthesize(10, variant="weekly")
