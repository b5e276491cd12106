"""``reqcast bench stream``: end to end on the test broker with a tiny event count
(behaviour: every figure is there and positive, not speed), and its flag checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stream.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.kafka
def test_bench_stream_reports_every_figure(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    models = tmp_path / "models"  # empty: the bench trains tiny models first
    argv = ["bench", "stream", "--bootstrap-servers", kafka_bootstrap, "--events", "500"]
    argv += ["--rate", "2000", "--torch-threads", "1"]  # one thread: the broker shares the cores
    argv += ["--model-dir", str(models), "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert {"config", "produce", "echo", "serve", "ratios", "targets"} <= set(report)
    assert report["config"]["events"] == 500 and report["config"]["rate_events_per_s"] == 2000
    assert set(report["config"]["models"]) == {"lstm", "dlinear"}
    assert all(m["trained_by_bench"] for m in report["config"]["models"].values())
    assert report["produce"]["events"] == 500
    for name in ("echo", "serve"):
        pipe = report[name]
        tp, lat = pipe["throughput"], pipe["latency"]
        assert tp["events"] == 500 and lat["events"] == 500
        for value in (
            tp["events_per_s"],
            tp["outputs_per_s"],
            tp["elapsed_s"],
            pipe["peak_rss_mb"],
        ):
            assert _positive(value)
        for key in ("p50_ms", "p99_ms", "mean_ms", "max_ms"):
            assert _positive(lat[key])
        assert lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["matched"] == lat["outputs"] == tp["outputs"]
        assert tp["time_share"] and all(v >= 0 for v in tp["time_share"].values())
    assert report["echo"]["outputs_per_event"] == 1
    assert report["serve"]["outputs_per_event"] >= 2  # a forecast per model (and maybe "best")
    for key in ("throughput", "p50", "p99", "peak_rss"):
        assert _positive(report["ratios"][key])
    assert set(report["targets"]) == {"throughput_ratio", "p99_ratio"}
    assert isinstance(report["targets"]["throughput_ratio"]["met"], bool)
    table = capsys.readouterr().out
    assert "throughput events/s" in table and "latency p99 ms" in table and "peak RSS MB" in table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--events", "0"], "--events"),
        (["--rate", "-5"], "--rate"),
        (["--partitions", "5"], "--partitions"),
        (["--memory-check", "--memory-baseline", "10", "--memory-events", "10"], "baseline"),
    ],
)
def test_bench_stream_bad_flags_are_one_line(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "stream", "--bootstrap-servers", "127.0.0.1:1", *flags]
    assert main(argv) == 2  # refused before any broker is contacted
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reqcast bench: error:") and message in err[-1]
