"""``reqcast predict``: the next request after the tail of a trace, from the saved models.

Without ``--stream`` every row of the trace forms one sequence (the streams are merged),
and when the trace holds several streams a one-line note on stderr says so and lists
them. ``--stream NAME`` forecasts that stream alone, as serving and ``reqcast train``'s
test prediction do (train's follows the stream of the trace's last request).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from predictor.errors import ConfigError, InputError
from predictor.request_predictor import RequestPredictor
from stream.cliutil import add_flag, add_trace_flags, load_from_args


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(
        p,
        "--model-dir",
        default="models",
        help="where the artifacts are (reqcast train writes models/, reqcast run out/models)",
    )
    add_trace_flags(p, required=True)
    add_flag(
        p,
        "--stream",
        help="forecast only this stream (a model name such as ChatGPT), as serving does; "
        "without it all rows form one sequence and a note on stderr lists the streams merged",
    )
    add_flag(p, "--models", nargs="+", default=["lstm", "dlinear"], help="models to use")
    add_flag(p, "--json", action="store_true", help="print JSON")


def _streams(df: pd.DataFrame) -> dict[str, int]:
    """Rows per stream (the ``model`` column), most rows first; empty without one."""
    if "model" not in df.columns:
        return {}
    return {str(k): int(v) for k, v in df["model"].dropna().value_counts().items()}


def _listed(streams: dict[str, int]) -> str:
    return ", ".join(f"{name} ({rows:,} rows)" for name, rows in streams.items())


def run(args: argparse.Namespace) -> int:
    if not args.data_path:
        raise ConfigError("--data-path is required")
    if not Path(args.model_dir).is_dir():
        raise InputError(
            f"model folder {args.model_dir!r} does not exist: train models first, e.g. "
            f"`reqcast train --preset cpu --data-path {args.data_path} --model-dir "
            f"{args.model_dir}` (reqcast run keeps its models in out/models)"
        )
    df, _, _ = load_from_args(args)
    streams = _streams(df)
    if args.stream is not None and args.stream not in streams:
        there = _listed(streams) if streams else "none (the trace has no model column)"
        raise InputError(f"no stream {args.stream!r} in {args.data_path}; streams there: {there}")
    if args.stream is None and len(streams) > 1:
        last = str(df["model"].dropna().iloc[-1])
        print(
            f"reqcast predict: note: {len(streams)} streams merged into one sequence: "
            f"{_listed(streams)}; --stream NAME forecasts one alone, as serving does "
            f"(reqcast train's test prediction used --stream {last}, the last request's)",
            file=sys.stderr,
        )
    result = RequestPredictor(args.model_dir, models=args.models).predict_next_request(
        df.rename(columns={"timestamp_s": "timestamp"}), stream=args.stream
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"next request after t={result['last_timestamp']:.3f}s ({result['rows']:,} rows):")
        for name, p in result["predictions"].items():
            if "error" in p:
                print(f"  {name:8s} error: {p['error']}")
                continue
            iv = p["interval"]
            print(
                f"  {name:8s} v{p['model_version']} at t={p['timestamp']:.3f}s "
                f"[{iv['timestamp'][0]:.3f}, {iv['timestamp'][1]:.3f}]  request "
                f"{p['request_tokens']:.0f} [{iv['request_tokens'][0]:.0f}, {iv['request_tokens'][1]:.0f}]"
                f"  response {p['response_tokens']:.0f} [{iv['response_tokens'][0]:.0f}, "
                f"{iv['response_tokens'][1]:.0f}]  confidence {p['confidence']:.2f}"
                + ("" if p["warm"] else "  (window not full)")
            )
    errors = [p for p in result["predictions"].values() if "error" in p]
    return 1 if len(errors) == len(result["predictions"]) else 0
