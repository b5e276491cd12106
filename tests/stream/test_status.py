"""The live status line of ``reqcast run``, its printer thread and its end-of-run tables."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from predictor.scoring import RollingScores
from stream.status import StatusPrinter, load_table, status_line, summary_table


def _state(**over: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "events": 12_345,
        "events_per_s": 2_000.4,
        "invalid": 1_002,
        "versions": {"lstm": 3, "dlinear": 0},
        "mae": {
            "lstm": {"gap_s": 0.123456, "request_tokens": 250.0, "response_tokens": None},
            "dlinear": {"gap_s": None, "request_tokens": None, "response_tokens": None},
        },
        "coverage": {"lstm": 0.8, "dlinear": None},
    }
    state.update(over)
    return state


def test_the_status_line_has_the_counts_and_each_models_scores() -> None:
    line = status_line(_state())
    head, lstm, dlinear = line.split(" | ")
    assert head.split() == ["12,345", "events", "2,000/s", "invalid", "1,002"]
    assert lstm == "lstm v3 MAE gap 0.123s req 250 cov 80%"  # three significant digits
    assert dlinear == "dlinear (no model)"  # version 0: nothing serves yet


def test_a_model_not_scored_yet_shows_dashes() -> None:
    line = status_line(_state(versions={"lstm": 1}, mae={}, coverage={}))
    assert line.endswith(" | lstm v1 MAE gap -s req - cov -")


def test_the_printer_prints_the_state_it_reads_every_interval() -> None:
    out = io.StringIO()
    reads: list[int] = []

    def get_state() -> dict[str, Any]:
        reads.append(1)
        return _state()

    printer = StatusPrinter(get_state, interval_s=0.01, out=out)
    printer.start()
    deadline = time.monotonic() + 10
    while len(reads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    printer.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and set(lines) == {status_line(_state())}
    assert printer.finished


def test_an_interval_of_zero_prints_nothing_and_starts_no_thread() -> None:
    out = io.StringIO()
    printer = StatusPrinter(lambda: _state(), interval_s=0, out=out)
    printer.start()
    time.sleep(0.05)
    printer.stop()
    assert out.getvalue() == "" and not printer.finished  # never started


def test_the_summary_lists_models_with_scores_only() -> None:
    table = summary_table(_state()).splitlines()
    assert table[0].split() == [
        "model",
        "version",
        "gap_s",
        "MAE",
        "request_tokens",
        "MAE",
        "response_tokens",
        "MAE",
        "coverage",
    ]
    assert len(table) == 2  # dlinear has no score: no row
    assert table[1].split() == ["lstm", "3", "0.123", "250", "-", "80%"]


def test_the_load_table_has_a_column_pair_per_horizon() -> None:
    scores = RollingScores()
    scores.add("lstm", "requests_per_s@1", np.array([0.5, 1.5]), np.array([True, False]))
    table = load_table(scores, ["lstm", "dlinear"], [1, 6]).splitlines()
    assert table[0].split() == ["model", "h=1", "MAE", "cov", "h=6", "MAE", "cov"]
    assert table[1].split() == ["lstm", "1", "50%", "-", "-"]
    assert table[2].split() == ["dlinear", "-", "-", "-", "-"]
