"""``reqcast bench swap``: the gap analysis on made-up timelines, and a tiny real run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stream.bench.swap_analysis import RefitSpan, analyse
from stream.cli import main
from trainer.guard import Decision

OUT = "forecasts"


def _batch(offsets: range, versions: dict[str, int]) -> list[tuple[str, bytes | None, bytes]]:
    return [
        (
            OUT,
            b"s",
            json.dumps(
                {"model": m, "model_version": v, "source": {"partition": 0, "offset": o}}
            ).encode(),
        )
        for o in offsets
        for m, v in versions.items()
    ]


def _service(valid: int) -> Any:
    return SimpleNamespace(stats=SimpleNamespace(events=valid, valid=valid, invalid=0))


def test_gaps_inside_and_outside_swap_windows() -> None:
    # a delivery every 10 ms, two events each; one 25 ms gap while a refit runs and a
    # 50 ms gap outside any refit; lstm swaps to version 2 at t = 0.5005 s
    times, t = [], 0.0
    for i in range(100):
        t += {40: 0.025, 80: 0.050}.get(i, 0.010)
        times.append(t)
    deliveries = []
    for i, at in enumerate(times):
        version = 2 if at > 0.5005 else 1
        deliveries.append((at, _batch(range(2 * i, 2 * i + 2), {"lstm": version, "dlinear": 1})))
    span = RefitSpan(start=0.30, end=0.60, swaps=[0.5005])
    span.decisions = [Decision("lstm", True, "no_worse"), Decision("dlinear", False, "worse")]
    unfinished = RefitSpan(start=0.95)  # still running when the stream ended
    report = analyse(deliveries, [span, unfinished], _service(200), OUT, ["lstm", "dlinear"])
    assert report["median_gap_ms"] == pytest.approx(10.0)
    assert report["max_gap_ms_during_swaps"] == pytest.approx(25.0)
    assert report["max_gap_ms_outside_refits"] == pytest.approx(50.0)
    assert report["max_gap_ms_at_swap"] == pytest.approx(10.0)
    assert report["max_over_median"] == pytest.approx(2.5)
    assert report["meets_target"] is True
    assert (report["refits"], report["swaps"], report["rejected"]) == (2, 1, 1)
    assert len(report["windows"]) == 1  # the unfinished refit has no window
    assert report["events_without_forecast"] == {"lstm": 0, "dlinear": 0}
    assert report["duplicate_forecasts"] == 0
    assert report["version_steps_backwards"] == {"lstm": 0, "dlinear": 0}
    assert report["versions_seen"] == {"lstm": [1, 2], "dlinear": [1]}


def test_missing_duplicate_and_backward_forecasts_are_counted() -> None:
    deliveries = [
        (0.01, _batch(range(0, 2), {"lstm": 2, "dlinear": 1})),
        (0.02, _batch(range(2, 4), {"lstm": 1})),  # dlinear missing, lstm went back
        (0.03, _batch(range(3, 4), {"lstm": 1})),  # a duplicate
    ]
    report = analyse(deliveries, [], _service(4), OUT, ["lstm", "dlinear"])
    assert report["events_without_forecast"] == {"lstm": 0, "dlinear": 2}
    assert report["duplicate_forecasts"] == 1
    assert report["version_steps_backwards"] == {"lstm": 1, "dlinear": 0}
    assert report["max_gap_ms_during_swaps"] is None and report["meets_target"] is False


def test_bench_swap_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "swap.json"
    argv = [
        "bench",
        "swap",
        "--models",
        "dlinear",
        "--events",
        "2500",
        "--rate",
        "2500",
        "--head-rows",
        "1500",
        "--seq-len",
        "16",
        "--first-epochs",
        "1",
        "--refit-every-events",
        "600",
        "--refit-window",
        "600",
        "--refit-epochs",
        "1",
        "--refit-events",
        "1500",
        "--epochs",
        "1",
        "--full-seq-len",
        "16",
        "--no-progress",
        "--skip-load",  # next-request only: a first load refit would hold the worker here
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    swap, refit = report["swap"], report["refit"]
    assert swap["events"] == swap["valid_events"] == swap["events_sent"] == 2500
    assert swap["events_without_forecast"] == {"dlinear": 0}
    assert swap["duplicate_forecasts"] == 0 and swap["version_steps_backwards"] == {"dlinear": 0}
    assert swap["refits"] >= 1 and swap["median_gap_ms"] > 0
    assert refit["models"]["dlinear"]["epochs_run"] == 1
    assert refit["models"]["dlinear"]["train_s"] > 0 and refit["events"] == 1500
    table = capsys.readouterr().out
    assert "hot-swap pause (refit mode, in process" in table and "| dlinear | " in table


def test_bench_swap_load_mode(tmp_path: Path) -> None:
    out = tmp_path / "swap.json"
    argv = ["bench", "swap", "--skip-refit", "--swap-mode", "load", "--load-every-s", "0.3"]
    argv += ["--events", "2400", "--rate", "2000", "--head-rows", "1500", "--seq-len", "16"]
    argv += ["--first-epochs", "1", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    swap = json.loads(out.read_text())["swap"]
    assert swap["swap_mode"] == "load" and "refit" not in json.loads(out.read_text())
    assert swap["swaps"] >= 2 and swap["swaps"] == 2 * swap["refits"]
    assert swap["events_without_forecast"] == {"lstm": 0, "dlinear": 0}
    assert swap["version_steps_backwards"]["lstm"] == 0
    assert max(swap["versions_seen"]["lstm"]) >= 2
    assert swap["max_gap_ms_during_swaps"] is not None


def test_bench_swap_needs_something_to_measure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "swap", "--skip-swap", "--skip-refit"]) == 2
    assert "nothing to measure" in capsys.readouterr().err


def _load_batch(stream: str, bins: range, versions: dict[str, int]) -> list[Any]:
    return [
        (
            OUT,
            stream.encode(),
            json.dumps(
                {"kind": "load", "stream": stream, "model": m, "model_version": v, "bin_start": b}
            ).encode(),
        )
        for b in bins
        for m, v in versions.items()
    ]


def test_load_swaps_are_reported_apart_from_next_request_ones() -> None:
    # a delivery every 10 ms; a load refit from 0.2 s to 0.4 s with a 40 ms gap and a swap
    # of the lstm load model to version 2 at 0.35 s; no next-request refit
    times, t = [], 0.0
    for i in range(60):
        t += 0.040 if i == 30 else 0.010
        times.append(t)
    deliveries = []
    for i, at in enumerate(times):
        v = 2 if at > 0.35 else 1
        batch = _batch(range(i, i + 1), {"lstm": 1})
        batch += _load_batch("a", range(i, i + 1), {"lstm": v})
        batch += _load_batch("b", range(i, i + 1), {"lstm": v})
        deliveries.append((at, batch))
    span = RefitSpan(start=0.2, end=0.4, swaps=[0.35], task="load")
    span.decisions = [Decision("lstm", True, "no_worse", task="load")]
    report = analyse(deliveries, [span], _service(60), OUT, ["lstm"])
    # the next-request figures: no refit of theirs, every event forecast
    assert (report["refits"], report["swaps"]) == (0, 0)
    assert report["max_gap_ms_during_swaps"] is None
    assert report["forecasts_per_model"] == {"lstm": 60}  # load forecasts not counted here
    assert report["max_gap_ms_outside_refits"] == pytest.approx(10.0)  # the 40 ms is inside
    load = report["load"]
    assert (load["refits"], load["swaps"], load["rejected"]) == (1, 1, 0)
    assert load["max_gap_ms_during_swaps"] == pytest.approx(40.0)
    assert load["max_over_median"] == pytest.approx(4.0) and load["meets_target"] is False
    assert load["forecasts_per_model"] == {"lstm": 120}
    assert load["versions_seen"] == {"lstm": [1, 2]}
    # stream b's first bins (version 1) follow stream a's last (version 2): not a step back
    assert load["version_steps_backwards"] == {"lstm": 0}
    assert load["windows"][0]["decisions"] == ["load lstm: accepted (no_worse)"]


def test_bench_swap_reports_load_swaps_and_load_refit_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "swap.json"
    argv = ["bench", "swap", "--models", "dlinear", "--events", "2000", "--rate", "500"]
    argv += ["--head-rows", "1500", "--seq-len", "16", "--first-epochs", "1"]
    argv += ["--refit-every-events", "600", "--refit-window", "600", "--refit-epochs", "1"]
    argv += ["--refit-in-process", "--refit-events", "1500", "--epochs", "1"]
    argv += ["--full-seq-len", "16", "--no-progress", "--json", str(out)]
    # 10 s bins: the head's ~530 bins make first load versions at once
    argv += ["--bin-s", "10", "--load-horizon", "6", "--load-refit-every-s", "0.5"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    load = report["swap"]["load"]
    assert load["refits"] >= 1 and load["swaps"] >= 1
    assert load["windows"][0]["refit_s"] > 0 and load["windows"][0]["swaps"] == 1
    assert 1 in load["versions_seen"]["dlinear"] and load["forecasts_per_model"]["dlinear"] > 0
    assert load["version_steps_backwards"]["dlinear"] == 0
    assert report["swap"]["load_models"]["final_versions"]["dlinear"] >= 1
    assert report["swap"]["events_without_forecast"] == {"dlinear": 0}
    timed = report["refit"]["load"]
    assert timed["bin_s"] == 10 and timed["bins"] > 0
    assert timed["models"]["dlinear"]["refit_s"] > 0 and timed["models"]["dlinear"]["swapped"]
    assert timed["models"]["dlinear"]["train_s"] > 0
    table = capsys.readouterr().out
    assert "load model swaps (10.0 s bins" in table and "| load model | refit (s) |" in table
