"""``reqcast plot``: PNG plots of forecasts, benchmark errors and training curves.

``--kind forecast`` reads ``--forecasts`` (``reqcast run`` output; ``--data-path``
adds the actual values), ``error`` reads ``--bench-json`` (``bench accuracy
--json``), ``training`` reads ``--model-dir``. ``all`` draws each whose input is
there, skipping (with a note) those whose default input is missing; an input
named explicitly must exist. The written paths are printed, one per line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.errors import ConfigError, InputError
from stream.cliutil import add_flag, add_trace_flags, load_from_args

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("forecast", "error", "training", "all")
DEFAULT_FORECASTS = "out/forecasts.jsonl"
DEFAULT_MODEL_DIR = "models"


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--kind", default="all", choices=list(KINDS), help="which plots to draw")
    add_flag(p, "--out", default="out/plots", help="directory for the PNG files")
    add_flag(
        p,
        "--forecasts",
        help=f"forecasts JSON Lines from reqcast run (default {DEFAULT_FORECASTS})",
    )
    add_flag(p, "--bench-json", help="results of reqcast bench accuracy --json")
    add_flag(p, "--model-dir", help=f"model artifacts (default {DEFAULT_MODEL_DIR})")
    add_trace_flags(p, required=True)
    add_flag(
        p,
        "--horizon",
        type=int,
        default=1,
        help="load forecasts: which horizon (bins ahead) to plot",
    )
    add_flag(
        p,
        "--last",
        type=int,
        default=300,
        help="forecasts per model and stream to plot (the latest)",
    )


def run(args: argparse.Namespace) -> int:
    from stream import plots

    if args.horizon < 1 or args.last < 1:
        raise ConfigError("--horizon and --last must be at least 1")
    kinds = ["forecast", "error", "training"] if args.kind == "all" else [args.kind]
    out = Path(args.out)
    written: list[Path] = []
    for kind in kinds:
        try:
            if kind == "forecast":
                trace = _trace(args)
                written += plots.plot_forecasts(
                    args.forecasts or DEFAULT_FORECASTS, out, trace, args.horizon, args.last
                )
            elif kind == "error":
                if not args.bench_json:
                    raise InputError("--bench-json is required for the error plot")
                written.append(plots.plot_error_by_horizon(args.bench_json, out))
            else:
                written.append(plots.plot_training(args.model_dir or DEFAULT_MODEL_DIR, out))
        except InputError as exc:
            explicit = {
                "forecast": args.forecasts,
                "error": args.bench_json,
                "training": args.model_dir,
            }[kind]
            if args.kind != "all" or explicit:
                raise
            print(f"reqcast plot: skipping {kind}: {exc}", file=sys.stderr)
    if not written:
        raise InputError("nothing to plot: pass --forecasts, --bench-json or --model-dir")
    for path in written:
        print(path)
    return 0


def _trace(args: argparse.Namespace) -> pd.DataFrame | None:
    """The trace named by ``--data-path`` (for the actual values), or None."""
    if not args.data_path:
        return None
    df, _, _ = load_from_args(args)
    return df
