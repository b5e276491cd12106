"""The live status line of ``reqcast run`` and its end-of-run summary."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from predictor.background import PeriodicWorker
from predictor.features import QUANTITIES
from predictor.scoring import RollingScores


def status_line(state: dict[str, Any]) -> str:
    parts = [
        f"{state['events']:>8,} events  {state['events_per_s']:>7,.0f}/s  invalid {state['invalid']:,}"
    ]
    for model, version in state["versions"].items():
        mae = state["mae"].get(model, {})
        gap, req = mae.get("gap_s"), mae.get("request_tokens")
        cov = state["coverage"].get(model)
        if version == 0:
            parts.append(f"{model} (no model)")
            continue
        parts.append(
            f"{model} v{version} MAE gap {_fmt(gap)}s req {_fmt(req)} cov {_fmt(cov, pct=True)}"
        )
    return " | ".join(parts)


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if pct else f"{v:.3g}"


#: a value as the status line and the summary tables show it (``-`` for none)
fmt = _fmt


class StatusPrinter(PeriodicWorker):
    """Prints ``status_line(get_state())`` every ``interval_s`` until stopped (never when
    ``interval_s`` is 0)."""

    def __init__(self, get_state: Any, interval_s: float = 2.0, out: TextIO = sys.stderr) -> None:
        super().__init__("status", interval_s, stop_timeout_s=5.0)
        self.get_state, self.out = get_state, out

    def start(self) -> None:
        if self.interval_s > 0:
            super().start()

    def tick(self) -> None:
        print(status_line(self.get_state()), file=self.out, flush=True)


def summary_table(state: dict[str, Any]) -> str:
    """Rolling online MAE and coverage per model and quantity, as text."""
    lines = [
        f"{'model':8s} {'version':>7s} "
        + " ".join(f"{q + ' MAE':>20s}" for q in QUANTITIES)
        + f" {'coverage':>9s}"
    ]
    for model, mae in state["mae"].items():
        if not any(v is not None for v in mae.values()):
            continue
        version = state["versions"].get(model, "-")
        lines.append(
            f"{model:8s} {version!s:>7s} "
            + " ".join(f"{_fmt(mae.get(q)):>20s}" for q in QUANTITIES)
            + f" {_fmt(state['coverage'].get(model), pct=True):>9s}"
        )
    return "\n".join(lines)


def load_table(scores: RollingScores, models: list[str], horizons: list[int]) -> str:
    """Rolling MAE and coverage of requests/s load forecasts per model and horizon, as text."""
    lines = [f"{'model':8s} " + " ".join(f"{f'h={h} MAE':>10s} {'cov':>5s}" for h in horizons)]
    for model in models:
        cells = []
        for h in horizons:
            key = f"requests_per_s@{h}"
            cells.append(
                f"{_fmt(scores.mae(model, key)):>10s} {_fmt(scores.coverage(model, key), pct=True):>5s}"
            )
        lines.append(f"{model:8s} " + " ".join(cells))
    return "\n".join(lines)
