"""``reqcast synth``: write a synthetic BurstGPT-like trace (CSV, or JSONL by suffix)."""

from __future__ import annotations

import argparse

from predictor.errors import ConfigError
from predictor.synth import VARIANTS, synthesize, write_trace
from stream.cliutil import add_flag


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--rows", type=int, default=100_000, help="number of requests")
    add_flag(p, "--seed", type=int, default=0, help="random seed (same seed, same trace)")
    add_flag(p, "--out", help="file to write: CSV, or JSON lines if it ends in .jsonl")
    add_flag(
        p,
        "--rate-scale",
        type=float,
        default=1.0,
        help="multiply the mean rate of 0.27 requests/s by this",
    )
    add_flag(
        p,
        "--variant",
        default="week",
        help=f"rate profile, one of {', '.join(VARIANTS)}: the daily and weekly cycles alone "
        "(week), or with on-off bursts (bursty), rate shifts every few minutes (regimes) "
        "or a rate that wanders within minutes (drift)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.out:
        raise ConfigError("no output file given: pass --out FILE")
    df = synthesize(args.rows, seed=args.seed, rate_scale=args.rate_scale, variant=args.variant)
    out = write_trace(df, args.out)
    ts = df["Timestamp"]
    span = float(ts.iloc[-1] - ts.iloc[0]) if len(df) else 0.0
    rate = f"{len(df) / span:.3f} requests/s" if span > 0 else "n/a"
    print(
        f"wrote {len(df):,} rows spanning {span:,.0f} s ({span / 86_400:.2f} days), "
        f"mean rate {rate}, variant {args.variant}, to {out}"
    )
    return 0
