"""``reqcast train`` and ``reqcast predict`` in-process through :func:`stream.cli.main`,
and the :class:`~predictor.request_predictor.RequestPredictor` API on the saved models."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from predictor.request_predictor import RequestPredictor
from stream.cli import main

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BURST1 = DATA / "burstgpt" / "BurstGPT_1_first400.csv"
QUICK = ["--preset", "cpu", "--epochs", "2", "--seq-len", "16", "--no-progress", "--json"]
QUANTITIES = ("gap_s", "request_tokens", "response_tokens")


def _without_reqcast_env(mp: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            mp.delenv(name)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_reqcast_env(monkeypatch)


def _run(argv: Sequence[str]) -> tuple[int, str, str]:
    """``main(argv)`` with its output captured, for module-scoped fixtures (no capsys there)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def burst_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both models trained once on the 400-row BurstGPT sample; the run's summary and dir."""
    model_dir = tmp_path_factory.mktemp("burst_models")
    with pytest.MonkeyPatch.context() as mp:
        _without_reqcast_env(mp)
        rc, out, err = _run(
            ["train", "--data-path", str(BURST1), *QUICK, "--model-dir", str(model_dir)]
        )
    yield {"rc": rc, "summary": json.loads(out) if out else None, "err": err, "dir": model_dir}


def _check_forecast(p: dict[str, Any], last_ts: float) -> None:
    assert "error" not in p, p
    assert p["timestamp"] > last_ts
    assert p["timestamp"] == pytest.approx(last_ts + p["gap_s"])
    for q in (*QUANTITIES, "timestamp"):
        lo, hi = p["interval"][q]
        assert lo <= p[q] <= hi, q
    assert p["request_tokens"] >= 0 and p["response_tokens"] >= 0
    assert 0.0 <= p["confidence"] <= 1.0
    assert p["nominal_coverage"] == pytest.approx(0.8)
    assert p["model_version"] == 1 and p["warm"] is True


# --- train ---------------------------------------------------------------------------------


def test_train_on_a_synthetic_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", *QUICK, "--synthetic-rows", "1500", "--model-dir", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "Traceback" not in captured.err

    assert len(list(tmp_path.glob("cpu_lstm_*"))) == 1
    assert len(list(tmp_path.glob("cpu_dlinear_*"))) == 1
    assert summary["preset"] == "cpu" and summary["device"] == "cpu"
    assert summary["source"].startswith("synthetic")
    assert summary["records_read"] == 1500 and summary["records_sampled"] == 1500
    assert summary["trained"] == "2/2"
    assert set(summary["models"]) == {"lstm", "dlinear"}
    for name, m in summary["models"].items():
        assert "error" not in m, m
        assert Path(m["artifact"]).name.startswith(f"cpu_{name}_")
        assert m["version"] == 1 and 1 <= m["epochs_run"] <= 2
        assert len(m["validation"]["mae"]) == 3
    test = summary["test_prediction"]
    assert set(test["predictions"]) == {"lstm", "dlinear"}
    for p in test["predictions"].values():
        _check_forecast(p, test["last_timestamp"])


def test_train_on_burstgpt(burst_models: dict[str, Any]) -> None:
    assert burst_models["rc"] == 0, burst_models["err"]
    summary = burst_models["summary"]
    assert summary["records_read"] == 400 and summary["records_sampled"] == 400
    assert summary["trained"] == "2/2"
    assert set(summary["streams"]) == {"ChatGPT", "GPT-4"}
    assert sum(summary["streams"].values()) == 400
    assert summary["source"] == str(BURST1)
    names = sorted(p.name.rsplit("_", 2)[0] for p in burst_models["dir"].iterdir())
    assert names == ["cpu_dlinear", "cpu_lstm"]
    test = summary["test_prediction"]
    for p in test["predictions"].values():
        _check_forecast(p, test["last_timestamp"])


def test_train_when_a_stream_is_too_short_for_a_training_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # seq_len 70: the 80-row GPT-4 stream passes the row filter but its first 80 % (64 rows)
    # hold no training window; it must add none, not crash (a ValueError traceback before)
    argv = ["train", "--data-path", str(BURST1), *QUICK, "--model-dir", str(tmp_path)]
    assert main([*argv, "--seq-len", "70", "--epochs", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trained"] == "2/2" and summary["streams"]["GPT-4"] == 80


# --- predict -------------------------------------------------------------------------------


def test_predict_json(burst_models: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model-dir", str(burst_models["dir"]), "--data-path", str(BURST1)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    last_ts = float(pd.read_csv(BURST1)["Timestamp"].max())
    assert result["last_timestamp"] == last_ts and result["rows"] == 400
    assert set(result["predictions"]) == {"lstm", "dlinear"}
    for name, p in result["predictions"].items():
        _check_forecast(p, last_ts)
        assert p["artifact"].startswith(f"cpu_{name}_")


def test_predict_text(burst_models: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model-dir", str(burst_models["dir"]), "--data-path", str(BURST1)]
    assert main([*argv, "--stream", "GPT-4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("next request after t=")
    assert "  lstm     v1 at t=" in out and "  dlinear  v1 at t=" in out


def test_request_predictor_on_a_raw_burstgpt_frame(burst_models: dict[str, Any]) -> None:
    df = pd.read_csv(BURST1)
    result = RequestPredictor(model_dir=burst_models["dir"]).predict_next_request(df)
    assert result["rows"] == 400
    assert result["last_timestamp"] == float(df["Timestamp"].max())
    assert set(result["predictions"]) == {"lstm", "dlinear"}
    for p in result["predictions"].values():
        _check_forecast(p, result["last_timestamp"])
    gpt4 = RequestPredictor(model_dir=burst_models["dir"]).predict_next_request(df, stream="GPT-4")
    assert gpt4["rows"] == int((df["Model"] == "GPT-4").sum())


def test_a_missing_model_is_an_error_entry(
    burst_models: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (lstm,) = burst_models["dir"].glob("cpu_lstm_*")
    shutil.copytree(lstm, tmp_path / lstm.name)
    df = pd.read_csv(BURST1)
    result = RequestPredictor(model_dir=tmp_path).predict_next_request(df)
    assert set(result["predictions"]) == {"lstm", "dlinear"}
    _check_forecast(result["predictions"]["lstm"], result["last_timestamp"])
    assert set(result["predictions"]["dlinear"]) == {"error"}
    assert "no dlinear artifact" in result["predictions"]["dlinear"]["error"]

    # the command still answers with what it has; with no model at all it exits 1
    assert (
        main(["predict", "--model-dir", str(tmp_path), "--data-path", str(BURST1), "--json"]) == 0
    )
    assert "error" in json.loads(capsys.readouterr().out)["predictions"]["dlinear"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder (a missing one is an error of its own, see below)
    assert main(["predict", "--model-dir", str(empty), "--data-path", str(BURST1), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert all("error" in p for p in result["predictions"].values())


# --- errors: one line on stderr, exit status 2, no traceback --------------------------------


def _no_token_columns(tmp_path: Path) -> Path:
    out = tmp_path / "no_tokens.csv"
    pd.read_csv(BURST1)[["Timestamp", "Model"]].to_csv(out, index=False)
    return out


ERRORS = {
    "missing file": (lambda d: ["--data-path", str(d / "nope.csv")], "not found"),
    "missing columns": (
        lambda d: ["--data-path", str(_no_token_columns(d))],
        "missing required column(s) request_tokens, response_tokens",
    ),
    "too few rows": (
        lambda d: ["--data-path", str(BURST1), "--seq-len", "500"],
        "too few rows to train",
    ),
    "unknown model": (
        lambda d: ["--data-path", str(BURST1), "--models", "lstm", "foo"],
        "unknown model 'foo'",
    ),
    "no cuda": (lambda d: ["--data-path", str(BURST1), "--device", "cuda"], "no CUDA device"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_train_errors_are_one_line(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU machine, even on a GPU
    extra, expected = ERRORS[case]
    model_dir = tmp_path / "models"
    argv = ["train", *QUICK, "--model-dir", str(model_dir), *extra(tmp_path)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("reqcast train: error:")
    assert expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not model_dir.exists() or not any(model_dir.iterdir())


# --- predict: streams, missing folders, closed pipes ------------------------------------------


def test_predict_says_when_it_merges_streams(
    burst_models: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", "--model-dir", str(burst_models["dir"]), "--data-path", str(BURST1)]
    assert main([*argv, "--json"]) == 0
    err = capsys.readouterr().err
    (note,) = [line for line in err.splitlines() if "merged" in line]
    assert "ChatGPT (320 rows)" in note and "GPT-4 (80 rows)" in note and "--stream" in note
    # one stream chosen: nothing merged, no note
    assert main([*argv, "--stream", "GPT-4", "--json"]) == 0
    assert "merged" not in capsys.readouterr().err


def test_predict_an_unknown_stream_lists_the_streams_there_are(
    burst_models: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["predict", "--model-dir", str(burst_models["dir"]), "--data-path", str(BURST1)]
    assert main([*argv, "--stream", "Foo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'Foo'" in err and "ChatGPT" in err and "GPT-4" in err


def test_predict_a_missing_model_folder_says_how_to_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent"
    assert main(["predict", "--model-dir", str(missing), "--data-path", str(BURST1)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1
    assert "does not exist" in err and str(missing) in err and "reqcast train" in err


def test_predict_into_a_closed_pipe_exits_quietly(burst_models: dict[str, Any]) -> None:
    """``reqcast predict --json | head -1``: the reader goes away; no BrokenPipeError traceback."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    env["PYTHONPATH"] = str(root)
    argv = ["predict", "--model-dir", str(burst_models["dir"]), "--data-path", str(BURST1)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.cli", *argv, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=root,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a shell reports it
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception" not in err
