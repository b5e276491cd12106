"""The drift check's log lines: a warning the first time a model version drifts, then INFO
(a refit that waits for data re-arms the check every round)."""

from __future__ import annotations

import logging

import pytest

from predictor.drift import Drift
from stream.tasks.drift import DriftWatch


class _Policy:
    enabled = True
    quantities = ("q",)

    def __init__(self, drifts: list[Drift | None]) -> None:
        self.drifts = drifts

    def check(self) -> Drift | None:
        return self.drifts.pop(0)


def _drift(version: int) -> Drift:
    return Drift("lstm", version, "q", 3.0, 1.0, 1.5, 30)


def test_a_version_warns_once_then_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    requested: list[str] = []
    policy = _Policy([_drift(1), None, _drift(1), _drift(2)])
    watch = DriftWatch("load", policy, {}, requested.append)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="stream.tasks.drift"):
        for _ in range(4):
            watch.check()
    assert requested == ["load", "load", "load"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert "lstm v2" in caplog.records[-1].getMessage()
