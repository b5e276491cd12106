"""Reading the trace a command was pointed at (or a synthetic one), from parsed flags."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from predictor.synth import synthesize, write_trace
from predictor.traces import LoadReport, load_trace


def load_from_args(
    args: argparse.Namespace,
    synth_rows: int = 20_000,
    synth_seed: int = 0,
    synth_rate_scale: float = 1.0,
) -> tuple[pd.DataFrame, LoadReport, str]:
    """The cleaned trace named by ``--data-path`` (or a synthetic BurstGPT-like one) and its report.

    ``synth_rate_scale`` multiplies the synthetic trace's mean rate.
    """
    path = getattr(args, "data_path", None)
    if path:
        df, report = load_trace(
            path,
            columns=getattr(args, "columns", None),
            time_unit=getattr(args, "time_unit", "auto"),
            drop_failed=bool(getattr(args, "drop_failed", False)),
        )
        return df, report, str(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synthetic.csv"
        write_trace(synthesize(synth_rows, seed=synth_seed, rate_scale=synth_rate_scale), out)
        df, report = load_trace(out, drop_failed=bool(getattr(args, "drop_failed", False)))
    scale = f", rate x{synth_rate_scale:g}" if synth_rate_scale != 1.0 else ""
    return (
        df,
        report,
        f"synthetic BurstGPT-like trace ({synth_rows:,} rows, seed {synth_seed}{scale})",
    )
