"""``reqcast plot``: PNG plots of forecasts, benchmark errors and training curves.

``--kind forecast`` reads ``--forecasts`` (``reqcast run`` output) and draws the
actual values from ``--data-path``, or, without it, from the synthetic trace that
``reqcast run`` makes by default, regenerated from ``--synthetic-rows`` and ``--seed``
(the rows are run's ``--events`` plus ``--train-rows``) and used only when the
forecasts' event times are found in it. ``error`` reads ``--bench-json`` (``bench
accuracy --json``), ``training`` reads ``--model-dir`` (default: ``out/models``, where
``reqcast run`` keeps its models, else ``models``, where ``reqcast train`` writes).
``all`` draws each whose input is there, with a note for those whose default input is
missing; an input named explicitly must exist. The written paths are printed, one per
line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from predictor.errors import ConfigError, InputError
from stream.cliutil import add_flag, add_trace_flags, load_from_args
from stream.summary import DEFAULT_FORECASTS

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("forecast", "error", "training", "all")
#: where --model-dir is looked for when not given: reqcast run's, then reqcast train's
DEFAULT_MODEL_DIRS = ("out/models", "models")
#: the rows and seed of the synthetic trace of a default ``reqcast run`` (--events 20000
#: plus --train-rows 5000, --seed 0)
RUN_SYNTHETIC_ROWS = 25_000


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--kind", default="all", choices=list(KINDS), help="which plots to draw")
    add_flag(p, "--out", default="out/plots", help="directory for the PNG files")
    add_flag(
        p,
        "--forecasts",
        help=f"forecasts JSON Lines from reqcast run (default {DEFAULT_FORECASTS})",
    )
    add_flag(p, "--bench-json", help="results of reqcast bench accuracy --json")
    add_flag(
        p,
        "--model-dir",
        help=f"model artifacts (default: {' if there, else '.join(DEFAULT_MODEL_DIRS)})",
    )
    add_trace_flags(p, required=True)
    add_flag(
        p,
        "--synthetic-rows",
        type=int,
        default=RUN_SYNTHETIC_ROWS,
        help="without --data-path: rows of the synthetic trace reqcast run replayed "
        "(its --events plus --train-rows), regenerated for the actual values",
    )
    add_flag(p, "--seed", type=int, default=0, help="without --data-path: that run's --seed")
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
                forecasts = args.forecasts or DEFAULT_FORECASTS
                plots.read_forecasts(forecasts)  # a missing file is named before any trace work
                trace = _trace(args, forecasts)
                written += plots.plot_forecasts(forecasts, out, trace, args.horizon, args.last)
            elif kind == "error":
                if not args.bench_json:
                    if args.kind == "all":
                        _note(
                            "no error-by-horizon plot: it draws an accuracy benchmark's "
                            "results (reqcast bench accuracy --json FILE, then --bench-json FILE)"
                        )
                        continue
                    raise InputError("--bench-json is required for the error plot")
                written.append(plots.plot_error_by_horizon(args.bench_json, out))
            else:
                written.append(plots.plot_training(_model_dir(args), out))
        except InputError as exc:
            explicit = {
                "forecast": args.forecasts,
                "error": args.bench_json,
                "training": args.model_dir,
            }[kind]
            if args.kind != "all" or explicit:
                raise
            _note(f"no {kind} plot: {exc}")
    if not written:
        raise InputError("nothing to plot: pass --forecasts, --bench-json or --model-dir")
    for path in written:
        print(path)
    return 0


def _note(text: str) -> None:
    """An informational line on stderr (not an error: the command goes on)."""
    print(f"reqcast plot: note: {text}", file=sys.stderr)


def _model_dir(args: argparse.Namespace) -> str:
    if args.model_dir:
        return str(args.model_dir)
    return next((d for d in DEFAULT_MODEL_DIRS if Path(d).is_dir()), DEFAULT_MODEL_DIRS[0])


def _trace(args: argparse.Namespace, forecasts: str) -> pd.DataFrame | None:
    """The actual values: the trace named by ``--data-path``; without it, the synthetic
    trace of ``--synthetic-rows`` and ``--seed`` if the forecasts were made on it; else None."""
    from stream import plots

    if args.data_path:
        df, _, _ = load_from_args(args)
        return df
    df, _, source = load_from_args(args, synth_rows=args.synthetic_rows, synth_seed=args.seed)
    if plots.trace_matches(forecasts, df):
        _note(f"actual values from the {source}, regenerated as reqcast run made it")
        return df
    _note(
        f"no actual values: {forecasts} was not made on the {source}; pass --data-path, "
        "or --synthetic-rows (run's --events plus --train-rows) and --seed as run had them"
    )
    return None
