"""``reqcast predict``: the next request after the tail of a trace, from the saved models."""

from __future__ import annotations

import argparse
import json

from predictor.request_predictor import RequestPredictor
from stream.cliutil import add_flag, add_trace_flags, load_from_args


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--model-dir", default="models", help="where the artifacts are")
    add_trace_flags(p, required=True)
    add_flag(p, "--stream", help="forecast only this stream (a model name such as ChatGPT)")
    add_flag(p, "--models", nargs="+", default=["lstm", "dlinear"], help="models to use")
    add_flag(p, "--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from predictor.errors import ConfigError

    if not args.data_path:
        raise ConfigError("--data-path is required")
    df, _, _ = load_from_args(args)
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
