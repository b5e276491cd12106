"""``reqcast inspect`` and ``reqcast synth`` run in-process through :func:`stream.cli.main`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from predictor.synth import synthesize
from stream.cli import main

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BURST1 = DATA / "burstgpt" / "BurstGPT_1_first400.csv"
AZURE = DATA / "azure-2023" / "AzureLLMInferenceTrace_code.csv"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def test_inspect_json_on_burstgpt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--data-path", str(BURST1), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_read"] == 400 and report["rows_kept"] == 400
    assert report["zero_token_rows"] == 17
    assert report["rows_read"] == report["rows_kept"] + sum(report["dropped"].values())


def test_inspect_table_and_drop_failed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(BURST1), "--drop-failed"]) == 0
    out = capsys.readouterr().out
    assert "rows read        400" in out and "rows kept        383" in out
    assert "zero_tokens 17" in out and "ChatGPT" in out


def test_inspect_azure_with_columns(capsys: pytest.CaptureFixture[str]) -> None:
    cols = "timestamp=TIMESTAMP,request_tokens=ContextTokens,response_tokens=GeneratedTokens"
    assert main(["inspect", "--data-path", str(AZURE), "--columns", cols, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_kept"] == 8819 and report["time_unit"] == "datetime"


def test_inspect_reads_env_fallback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQCAST_DATA_PATH", str(BURST1))
    assert main(["inspect", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_read"] == 400


def test_synth_writes_a_trace_inspect_can_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synth.csv"
    assert main(["synth", "--rows", "3000", "--seed", "4", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "3,000 rows" in line and str(out) in line and "\n" not in line
    assert main(["inspect", "--data-path", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_read"] == 3000
    assert set(report["by_model"]) == {"ChatGPT", "GPT-4"}
    jsonl = tmp_path / "synth.jsonl"
    assert main(["synth", "--rows", "200", "--out", str(jsonl), "--rate-scale", "2"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(jsonl), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_read"] == 200


def test_synth_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "regimes.csv"
    argv = ["synth", "--rows", "500", "--seed", "2", "--out", str(out), "--variant", "regimes"]
    assert main(argv) == 0
    assert "variant regimes" in capsys.readouterr().out
    assert pd.read_csv(out).equals(synthesize(500, seed=2, variant="regimes"))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["inspect", "--data-path", "no/such/trace.csv"],
            "trace file not found: no/such/trace.csv",
        ),
        (["inspect"], "no trace file given"),
        (["inspect", str(BURST1), "--columns", "when=x"], "unknown field 'when'"),
        (["synth", "--rows", "10"], "--out"),
        (["synth", "--rows", "10", "--out", "x.csv", "--rate-scale", "0"], "rate scale"),
        (["synth", "--rows", "10", "--out", "x.csv", "--variant", "fast"], "variant must be one"),
        (["serve", "--torch-threads", "-1"], "--torch-threads must be 0 or more"),
        (["run", "--torch-threads", "-1"], "--torch-threads must be 0 or more"),
        (["serve", "--history-records", "-5"], "--history-records must be 0 or more"),
        (["train", "--task", "load", "--ensemble", "0"], "--ensemble must be at least 1"),
        (["train", "--ensemble", "3"], "--ensemble is for load models"),
        (["bench", "accuracy", "--task", "load", "--ensemble", "0"], "ensemble must be at least 1"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"reqcast {argv[0]}: error:") and fragment in err
    assert "\n" not in err and "Traceback" not in err
