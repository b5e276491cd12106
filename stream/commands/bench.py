"""``reqcast bench``: benchmarks that write their figures to files.

``bench accuracy`` is the walk-forward accuracy of LSTM and DLinear against the
baselines (:mod:`trainer.backtest`). ``bench stream`` (streaming throughput and
latency) lives in :mod:`stream.bench_stream`, which provides ``add_parser(p)``
and ``run(args)`` like a command module; it is registered when it imports.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path
from typing import Any

from predictor.errors import ConfigError
from stream.cliutil import add_flag, add_trace_flags
from stream.commands._trace import load_from_args
from trainer.backtest import BacktestConfig, next_request_backtest, to_markdown
from trainer.device import DEVICES

log = logging.getLogger(__name__)

#: the module that provides ``reqcast bench stream``
STREAM_MODULE = "stream.bench_stream"


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    sub.required = True
    acc = sub.add_parser(
        "accuracy",
        help="walk-forward next-request accuracy of the models against the baselines",
        description="Train on the first part of each stream, then forecast every later "
        "request from the rows before it; MAE and interval coverage per quantity.",
    )
    add_accuracy_flags(acc)
    acc.set_defaults(_bench_run=run_accuracy)
    _add_stream(sub)


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)


def _add_stream(sub: Any) -> None:
    """Register ``bench stream`` from :data:`STREAM_MODULE` when it is there."""
    try:
        module = importlib.import_module(STREAM_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == STREAM_MODULE:
            return  # not written yet: no ``bench stream``
        reason = str(exc)
    except ImportError as exc:
        reason = str(exc)
    else:
        p = sub.add_parser(
            "stream", help="streaming throughput and latency against a bare Kafka echo"
        )
        module.add_parser(p)
        p.set_defaults(_bench_run=module.run)
        return
    # present but broken: keep ``bench accuracy`` usable and say why ``bench stream`` is not
    p = sub.add_parser("stream", help=f"unavailable: {reason}")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def unavailable(_: argparse.Namespace) -> int:
        raise ConfigError(f"bench stream is unavailable: {reason}")

    p.set_defaults(_bench_run=unavailable)


def add_accuracy_flags(p: argparse.ArgumentParser) -> None:
    add_trace_flags(p)
    d = BacktestConfig()
    add_flag(
        p,
        "--train-fraction",
        type=float,
        default=d.train_fraction,
        help="leading share of each stream that trains the models; the rest is forecast",
    )
    add_flag(p, "--models", nargs="+", default=list(d.models), help="models to train")
    add_flag(p, "--seq-len", type=int, default=d.seq_len, help="requests in each input window")
    add_flag(p, "--epochs", type=int, default=d.epochs, help="maximum epochs (early stopping)")
    add_flag(p, "--batch-size", type=int, default=d.batch_size, help="training batch size")
    add_flag(
        p,
        "--stream-key",
        default=d.stream_key,
        choices=["model", "none"],
        help="one sequence per model, or one for all",
    )
    add_flag(p, "--seed", type=int, default=d.seed, help="random seed (training, synthetic trace)")
    add_flag(p, "--device", default=d.device, choices=list(DEVICES), help="training device")
    add_flag(
        p,
        "--synthetic-rows",
        type=int,
        default=20_000,
        help="rows of the synthetic trace used without --data-path",
    )
    # output paths take no environment fallback: REQCAST_JSON is ``train --json``'s switch
    add_flag(p, "--json", help="write the results as JSON to this file", env=False)
    add_flag(p, "--markdown", help="also write the markdown table to this file", env=False)
    add_flag(p, "--no-progress", action="store_true", help="no progress bars")


def run_accuracy(args: argparse.Namespace) -> int:
    cfg = BacktestConfig(
        models=tuple(args.models),
        train_fraction=args.train_fraction,
        seq_len=args.seq_len,
        epochs=args.epochs,
        batch_size=args.batch_size,
        stream_key=args.stream_key,
        seed=args.seed,
        device=args.device,
    )
    df, load, source = load_from_args(args, synth_rows=args.synthetic_rows, synth_seed=args.seed)
    log.info("bench accuracy: %s, %d rows", source, len(df))
    report = next_request_backtest(df, cfg, progress=not args.no_progress)
    report["task_config"] = {
        "data_path": args.data_path,
        "source": source,
        "rows_read": load.rows_read,
        "columns": load.columns,
        "time_unit": load.time_unit,
        "drop_failed": bool(args.drop_failed),
        **report["task_config"],
    }
    table = to_markdown(report)
    print(table, end="")
    if args.json:
        _write(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, table)
    return 0


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
