"""``reqcast bench accuracy`` (and the ``bench stream`` hook) in-process through :func:`stream.cli.main`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from stream.bench import throughput
from stream.cli import main

BURST1 = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "burstgpt"
    / "BurstGPT_1_first400.csv"
)
TINY = ["--seq-len", "8", "--epochs", "2", "--batch-size", "32", "--no-progress"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def test_bench_accuracy_writes_json_and_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, md = tmp_path / "acc.json", tmp_path / "acc.md"
    argv = ["bench", "accuracy", "--data-path", str(BURST1), *TINY]
    assert main([*argv, "--json", str(out), "--markdown", str(md)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"task_config", "results", "verdict"}
    tc = report["task_config"]
    assert tc["data_path"] == str(BURST1) and tc["rows"] == 400
    assert (tc["seq_len"], tc["epochs"], tc["seed"], tc["train_fraction"]) == (8, 2, 0, 0.6)
    assert set(tc["streams"]) == {"ChatGPT", "GPT-4"}
    models = {r["model"] for r in report["results"] if r["kind"] == "model"}
    assert models == {"lstm", "dlinear"}
    assert "last_value" in {r["model"] for r in report["results"] if r["kind"] == "baseline"}
    for r in report["results"]:
        assert r["task"] == "next_request" and r["horizon"] == 1
        assert r["target"] in ("gap_s", "request_tokens", "response_tokens")
        assert r["n"] == tc["forecasts"] and 0 <= r["coverage"] <= 1
    for v in report["verdict"]:
        assert v["model"] in models and isinstance(v["beats_best_baseline"], bool)
        lo, hi = v["ratio_interval"]
        assert 0 <= lo <= hi
    table = capsys.readouterr().out
    assert table == md.read_text() and "| lstm | model |" in table


def test_bench_accuracy_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "accuracy", "--data-path", str(BURST1), "--train-fraction", "1.5", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reqcast bench: error: train fraction")


def test_bench_stream_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def add_parser(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rate", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        seen.append(args.rate)
        return 0

    monkeypatch.setattr(throughput, "add_parser", add_parser)
    monkeypatch.setattr(throughput, "run", run)
    assert main(["bench", "stream", "--rate", "7"]) == 0
    assert seen == [7]


def test_bench_accuracy_load_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, md = tmp_path / "load.json", tmp_path / "load.md"
    argv = ["bench", "accuracy", "--task", "load", "--bin-s", "60", "--horizons", "1", "3"]
    argv += ["--synthetic-rows", "3000", "--rate-scale", "0.5", "--no-ets", *TINY]
    assert main([*argv, "--json", str(out), "--markdown", str(md)]) == 0
    report = json.loads(out.read_text())
    tc = report["task_config"]
    assert (tc["task"], tc["bin_s"], tc["horizons"], tc["seq_len"]) == ("load", 60.0, [1, 3], 8)
    assert tc["stream_key"] == "none" and "rate x0.5" in tc["source"]
    assert {r["horizon"] for r in report["results"]} == {1, 3}
    assert all(r["task"] == "load" and "smape" in r for r in report["results"])
    table = capsys.readouterr().out
    assert table == md.read_text() and "### load, horizon 3" in table
