"""The walk-forward report: one markdown table per task and horizon."""

from __future__ import annotations

import pytest

from trainer.evaluation.report import to_markdown
from trainer.evaluation.stats import verdict


def test_verdict_and_markdown_group_by_horizon() -> None:
    def row(model: str, kind: str, h: int, mae: float) -> dict:
        return {
            "task": "load",
            "target": "x",
            "horizon": h,
            "model": model,
            "kind": kind,
            "mae": mae,
            "coverage": 0.8,
            "n": 10,
        }

    results = [
        row("lstm", "model", 1, 2.0),
        row("a", "baseline", 1, 4.0),
        row("b", "baseline", 1, 3.0),
        row("lstm", "model", 5, 6.0),
        row("a", "baseline", 5, 5.0),
    ]
    v = verdict(results)
    assert [
        (x["horizon"], x["best_baseline"], x["ratio"], x["beats_best_baseline"]) for x in v
    ] == [
        (1, "b", pytest.approx(2 / 3), True),
        (5, "a", pytest.approx(1.2), False),
    ]
    md = to_markdown({"results": results, "verdict": v})
    assert "### load, horizon 1" in md and "### load, horizon 5" in md
    assert "| b | baseline | 3 * |" in md and "LOSES to a" in md
