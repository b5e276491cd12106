"""``bench accuracy --task load --suite``: the traces run, the table renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictor.load import LOAD_QUANTITIES
from stream.cli import main
from trainer.evaluation.load import LoadBacktestConfig
from trainer.evaluation.suite import SuiteTrace, run_suite, suite_markdown, suite_traces

TINY = {"seq_len": 12, "epochs": 2, "batch_size": 32, "device": "cpu", "ets": False}


def test_suite_runs_each_trace_and_renders_one_table(tmp_path: Path) -> None:
    traces = [SuiteTrace("tiny", 60.0, rows=8000), SuiteTrace("gone", 10.0, path="nope.csv")]
    suite = run_suite(tmp_path, LoadBacktestConfig(**TINY), traces=traces)  # type: ignore[arg-type]
    suite = json.loads(json.dumps(suite))  # the --json output is strict JSON
    tiny, gone = suite["traces"]
    assert "not there" in gone["skipped"] and "ensemble" not in gone
    assert tiny["bins"] > 0 and "skipped" not in tiny and suite["config"]["horizons"] == [1, 6, 30]
    ratios = tiny["ensemble"]["ratios"]
    assert {(r["target"], r["horizon"]) for r in ratios} == {
        (q, h) for q in LOAD_QUANTITIES for h in (1, 6, 30)
    }
    md = suite_markdown(suite)
    lines = [line for line in md.splitlines() if line.startswith("| tiny | 60 s |")]
    assert len(lines) == 9
    for r in ratios:
        row = f"| tiny | 60 s | {r['target']} | {r['horizon']} | {r['ratio']:.3f} |"
        assert any(line.startswith(row) for line in lines)
        assert any(f"| {r['best_expert']} | {r['coverage']:.3f} |" in line for line in lines)
    assert "/9 cells at or below 1.00x" in md and "- gone: skipped (" in md


def test_suite_covers_the_dev_traces_and_synthetic_variants() -> None:
    names = [t.name for t in suite_traces()]
    assert names[0] == "azure_code" and "synth_week" in names
    assert {"synth_bursty", "synth_regimes", "synth_drift"} <= set(names)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "next_request"], "add --task load"),
        (["--task", "load", "--data-path", "x.csv"], "leave out --data-path"),
    ],
)
def test_suite_flag_misuse_is_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "accuracy", "--suite", *extra]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_bin_180_on_a_small_synthetic_trace(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = ["bench", "accuracy", "--task", "load", "--bin-s", "180", "--horizons", "1", "6"]
    argv += ["--synthetic-rows", "6000", "--no-ets", "--seq-len", "12", "--epochs", "2"]
    assert main([*argv, "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task_config"]["bin_s"] == 180.0
    assert {r["model"] for r in report["results"] if r["kind"] == "peer"} == {
        "kalman",
        "kalman_log1p",
        "arima",
    }
    assert len(report["ensemble"]["ratios"]) == 6


def test_cli_bin_180_too_short_for_the_horizon_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bench", "accuracy", "--task", "load", "--bin-s", "180", "--synthetic-rows", "2000"]
    assert main([*argv, "--no-ets", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "too few to score" in err and "--horizons up to" in err and "\n" not in err
