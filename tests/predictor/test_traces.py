"""Trace loading and cleaning, on the real shared traces and on small hand-made files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from predictor.errors import ConfigError, InputError
from predictor.events import RequestEvent
from predictor.traces import (
    DROP_REASONS,
    FRAME_COLUMNS,
    LoadReport,
    fingerprint,
    iter_events,
    load_trace,
    parse_columns,
    sample_contiguous,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BURST1 = DATA / "burstgpt" / "BurstGPT_1_first400.csv"
BURST3 = DATA / "burstgpt" / "BurstGPT_3_first400.csv"
AZURE = DATA / "azure-2023" / "AzureLLMInferenceTrace_code.csv"
AZURE_COLUMNS = "timestamp=TIMESTAMP,request_tokens=ContextTokens,response_tokens=GeneratedTokens"
HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def _csv(tmp_path: Path, body: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def _reconciles(report: LoadReport) -> None:
    d = report.to_dict()
    assert d["rows_read"] == d["rows_kept"] + sum(d["dropped"].values())
    assert set(d["dropped"]) == set(DROP_REASONS)


def test_burstgpt1_counts_ties_and_types() -> None:
    df, report = load_trace(BURST1)
    assert report.rows_read == 400 and report.rows_kept == 400
    assert report.zero_token_rows == 17 and report.failed_rows == 17
    assert sum(report.dropped.values()) == 0 and report.reordered == 0
    assert report.by_model == {"ChatGPT": 320, "GPT-4": 80}
    assert report.by_log_type == {"Conversation log": 398, "API log": 2}
    assert report.time_unit == "s" and report.span_start_s == 5.0
    _reconciles(report)
    assert tuple(df.columns) == FRAME_COLUMNS
    assert df["timestamp_s"].dtype == np.float64
    assert df["request_tokens"].dtype == np.int64 and df["response_tokens"].dtype == np.int64
    assert df["model"].dtype == object and df["session_id"].isna().all()
    gaps = np.diff(df["timestamp_s"].to_numpy())
    assert (gaps >= 0).all() and int((gaps == 0).sum()) == 4  # whole-second ties are real
    raw = pd.read_csv(BURST1)
    assert df["request_tokens"].tolist() == raw["Request tokens"].tolist()  # file order kept


def test_burstgpt3_read_by_name_with_sessions() -> None:
    df, report = load_trace(BURST3)
    assert report.rows_read == 400 and report.rows_kept == 400
    assert report.columns["session_id"] == "Session ID"
    assert report.zero_token_rows == 1
    assert df["session_id"].notna().sum() == 394 and df["session_id"].nunique() == 135
    raw = pd.read_csv(BURST3)
    assert df["request_tokens"].tolist() == raw["Request tokens"].tolist()
    assert df["timestamp_s"].iloc[0] == 19440110.0 and df["model"].iloc[0] == "GPT-4"


def test_azure_with_column_mapping_and_datetimes() -> None:
    df, report = load_trace(AZURE, columns=AZURE_COLUMNS)
    assert report.rows_read == 8819 and report.rows_kept == 8819
    assert report.time_unit == "datetime"
    assert report.by_model == {} and df["model"].isna().all()
    assert 55 * 60 < report.span_s < 59 * 60
    ts = df["timestamp_s"].to_numpy()
    assert ts[0] == pytest.approx(pd.Timestamp("2023-11-16 18:17:03.97996", tz="UTC").timestamp())
    assert ts[1] - ts[0] == pytest.approx(0.052, abs=1e-5)  # sub-second resolution kept
    assert np.count_nonzero(ts % 1) > 8000
    assert df["request_tokens"].iloc[0] == 4808 and df["response_tokens"].iloc[0] == 10
    same, _ = load_trace(AZURE, columns=parse_columns(AZURE_COLUMNS), time_unit="datetime")
    assert same.equals(df)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    df, _ = load_trace(BURST3)
    path = tmp_path / "trace.jsonl"
    with path.open("w") as fh:
        for event in iter_events(df):
            fh.write(json.dumps(event.to_dict()) + "\n")
    back, report = load_trace(path)
    assert report.rows_kept == 400 and report.columns["timestamp"] == "timestamp"
    pd.testing.assert_frame_equal(back, df)
    assert fingerprint(back) == fingerprint(df)
    sniffed = tmp_path / "trace.data"  # no telling suffix: the content says JSON
    sniffed.write_text(path.read_text())
    assert load_trace(sniffed)[0].equals(df)


def test_out_of_order_rows_are_counted_and_stable_sorted(tmp_path: Path) -> None:
    body = "10,A,1,1,2,x\n20,B,2,2,4,x\n5,C,3,3,6,x\n20,D,4,4,8,x\n15,E,5,5,10,x\n30,F,6,6,12,x\n"
    df, report = load_trace(_csv(tmp_path, body))
    assert report.reordered == 2 and report.rows_kept == 6
    assert df["model"].tolist() == ["C", "A", "E", "B", "D", "F"]  # B before D: stable


def test_drop_reasons_counted(tmp_path: Path) -> None:
    body = (
        "1,A,10,5,15,x\n"
        "1,A,10,5,15,x\n"  # duplicate
        "2,A,,5,5,x\n"  # missing value
        "3,A,abc,5,5,x\n"  # non-numeric
        "oops,A,1,5,6,x\n"  # non-numeric timestamp
        "4,A,10.5,5,5,x\n"  # not a whole number
        "5,A,-1,5,4,x\n"  # negative
        "6,A,0,0,0,x\n"  # zero tokens: kept by default
        "7,A,99999999999,1,1,x\n"  # absurd
        "8,,20,5,25,\n"  # optional fields may be empty
    )
    df, report = load_trace(_csv(tmp_path, body))
    assert report.rows_read == 10
    assert report.dropped == {
        "missing_value": 1,
        "non_numeric": 3,
        "negative_tokens": 1,
        "absurd_tokens": 1,
        "zero_tokens": 0,
        "duplicate": 1,
    }
    assert report.rows_kept == 3 and report.zero_token_rows == 1
    assert df["timestamp_s"].tolist() == [1.0, 6.0, 8.0]
    assert df["model"].tolist() == ["A", "A", None] and df["log_type"].iloc[2] is None
    _reconciles(report)


def test_drop_failed(tmp_path: Path) -> None:
    body = "1,A,10,5,15,x\n2,A,0,0,0,x\n3,A,7,0,7,x\n4,A,8,3,11,x\n"
    _, report = load_trace(_csv(tmp_path, body))
    assert report.rows_kept == 4 and report.zero_token_rows == 1 and report.failed_rows == 2
    df, report = load_trace(_csv(tmp_path, body), drop_failed=True)
    assert report.dropped["zero_tokens"] == 2 and report.rows_kept == 2
    assert report.zero_token_rows == 1  # describes the file, whatever the option
    assert df["timestamp_s"].tolist() == [1.0, 4.0]
    _reconciles(report)


def test_time_units(tmp_path: Path) -> None:
    ms = tmp_path / "ms.csv"
    ms.write_text(
        "timestamp,request_tokens,response_tokens\n1700000000500,1,2\n1700000001000,3,4\n"
    )
    df, report = load_trace(ms)
    assert report.time_unit == "ms" and df["timestamp_s"].tolist() == [1700000000.5, 1700000001.0]
    df, report = load_trace(ms, time_unit="s")
    assert df["timestamp_s"].iloc[0] == 1700000000500.0
    with pytest.raises(InputError, match="--time-unit"):
        load_trace(ms, time_unit="datetime")
    with pytest.raises(ConfigError, match="time unit"):
        load_trace(ms, time_unit="hours")


def test_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"trace file not found: .*nope\.csv"):
        load_trace(tmp_path / "nope.csv")
    other = tmp_path / "other.csv"
    other.write_text("when,in,out\n1,2,3\n")
    with pytest.raises(InputError) as err:
        load_trace(other)
    msg = str(err.value)
    assert "timestamp, request_tokens, response_tokens" in msg
    assert "found: when, in, out" in msg and "--columns" in msg and "\n" not in msg
    df, _ = load_trace(other, columns="timestamp=when,request_tokens=in,response_tokens=out")
    assert df.iloc[0].tolist() == [1.0, 2, 3, None, None, None]
    with pytest.raises(InputError, match="not in the file: timestamp=nope"):
        load_trace(other, columns="timestamp=nope")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_trace(tmp_path / "empty.csv")
    (tmp_path / "bad.jsonl").write_text('{"timestamp": 1}\n{oops\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        load_trace(tmp_path / "bad.jsonl")


def test_parse_columns() -> None:
    assert parse_columns(" timestamp = T , model=M ") == {"timestamp": "T", "model": "M"}
    assert parse_columns("") == {}
    for bad in ("tokens=x", "timestamp", "timestamp=a,timestamp=b", "=x"):
        with pytest.raises(ConfigError):
            parse_columns(bad)
    with pytest.raises(ConfigError, match="unknown field 'time'"):
        load_trace("whatever.csv", columns={"time": "x"})


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"timestamp_s": np.arange(n, dtype=float), "request_tokens": 1, "response_tokens": 2}
    )


def test_sample_contiguous() -> None:
    df = _frame(100)
    recent = sample_contiguous(df, 10)
    assert recent["timestamp_s"].tolist() == list(np.arange(90.0, 100.0))
    a = sample_contiguous(df, 10, mode="random", seed=3)
    b = sample_contiguous(df, 10, mode="random", seed=3)
    assert a.equals(b) and list(a.index) == list(range(10))
    assert np.all(np.diff(a["timestamp_s"].to_numpy()) == 1.0)  # one contiguous block
    starts = {sample_contiguous(df, 10, "random", s)["timestamp_s"].iloc[0] for s in range(20)}
    assert len(starts) > 1
    assert len(sample_contiguous(df, None)) == 100 and len(sample_contiguous(df, 500)) == 100
    with pytest.raises(ConfigError):
        sample_contiguous(df, 0)
    with pytest.raises(ConfigError):
        sample_contiguous(df, 5, mode="rows")


def test_iter_events_and_fingerprint() -> None:
    df = _frame(3)
    events = list(iter_events(df))
    assert events[1] == RequestEvent(1.0, 1, 2)
    assert type(events[1].request_tokens) is int and type(events[1].timestamp_s) is float
    changed = df.copy()
    changed.loc[2, "response_tokens"] = 3
    assert fingerprint(df) == fingerprint(df.copy()) != fingerprint(changed)
