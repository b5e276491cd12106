"""``reqcast bench stream``: end to end on the test broker with a tiny event count
(behaviour: every figure is there and positive, not speed), and its flag checks."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
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
    # the serve side is `reqcast serve` with its defaults: the refit worker runs beside it
    assert "RefitWorker" in report["serve"]["workers"]
    assert report["config"]["serve"]["refit"]["every_s"] == 600.0
    assert report["config"]["serve"]["load"] is not None
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


def _bench_args(*flags: str) -> argparse.Namespace:
    from stream.bench import throughput

    p = argparse.ArgumentParser()
    throughput.add_parser(p)
    return p.parse_args(["--bootstrap-servers", "127.0.0.1:1", *flags])


def test_bench_serve_side_runs_with_serve_defaults() -> None:
    """The serve side is `reqcast serve` with its default flags: refit worker on (time-based,
    600 s, training in a child process), load task on, a model topic and the model-dir
    watcher, history on assignment; only what the bench must set differs."""
    from stream.bench.throughput_serve import parse_serve, serve_argv

    args, settings = parse_serve(serve_argv(_bench_args(), "/tmp/m", "bench-models"))
    refit = settings.workers.refit
    assert refit is not None and refit.every_s == 600.0 and refit.isolate
    assert refit.every_events is None and refit.load_every_s == 600.0
    assert settings.load.enabled and settings.load.horizons == (1, 6, 30)
    assert settings.workers.model_topic == "bench-models"
    assert settings.workers.watch_model_dir_s == 5.0
    assert settings.serve.history_records == 20_000 and settings.serve.publish_best
    assert args.model_dir == "/tmp/m" and args.models == ["lstm", "dlinear"]


def test_bench_serve_side_flags_pass_through() -> None:
    from stream.bench.throughput_serve import OLD_SERVE_ARGS, parse_serve, serve_argv

    argv = serve_argv(_bench_args("--no-refit", "--no-load"), "/tmp/m", "t")
    _, settings = parse_serve(argv)
    assert settings.workers.refit is None and not settings.load.enabled
    argv = serve_argv(_bench_args("--serve-args", OLD_SERVE_ARGS), "/tmp/m", "t")
    _, old = parse_serve(argv)
    assert old.workers.refit is None and not old.load.enabled
    assert old.workers.model_topic == "" and old.workers.watch_model_dir_s == 0
    assert old.serve.history_records == 0
    argv = serve_argv(_bench_args("--serve-args", "--refit-every-s 60"), "/tmp/m", "t")
    refit = parse_serve(argv)[1].workers.refit
    assert refit is not None and refit.every_s == 60.0


def test_bench_stream_bad_serve_args_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "stream", "--bootstrap-servers", "127.0.0.1:1"]
    assert main([*argv, "--serve-args", "--refit-every-s -1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reqcast bench: error:") and "--refit-every-s" in err[-1]
    assert main([*argv, "--serve-args=--no-such-flag"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reqcast bench: error:") and "--no-such-flag" in err[-1]


def test_trace_rate_compresses_the_clock_keeping_gaps_in_proportion() -> None:
    from stream.bench.throughput_setup import event_chunks, make_events

    own = make_events(2_000, seed=3)
    fast = make_events(2_000, seed=3, trace_rate=1000.0)
    span = fast[-1].timestamp_s - fast[0].timestamp_s
    assert span == pytest.approx(1999 / 1000.0)
    assert own[-1].timestamp_s - own[0].timestamp_s > 100 * span  # the week's own clock is slow
    gaps_own = np.diff([e.timestamp_s for e in own])
    gaps_fast = np.diff([e.timestamp_s for e in fast])
    np.testing.assert_allclose(gaps_fast, gaps_own * (span / gaps_own.sum()), rtol=1e-6, atol=1e-9)
    assert [e.request_tokens for e in fast] == [e.request_tokens for e in own]
    chunked = [e.timestamp_s for e in event_chunks(3_000, seed=1, chunk=1_000, trace_rate=500.0)]
    assert np.all(np.diff(chunked) >= 0) and chunked[-1] < 3_000 / 500.0 * 1.5
