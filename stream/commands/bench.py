"""``reqcast bench``: benchmarks that write their figures to files.

``bench accuracy`` is the walk-forward accuracy of LSTM and DLinear against the
baselines: of the next request (``--task next_request``, the default,
:mod:`trainer.evaluation.next_request`) or of the load per time bin at several horizons
(``--task load``, :mod:`trainer.evaluation.load`). ``bench stream`` (streaming throughput and
latency) lives in :mod:`stream.bench.throughput` and ``bench swap`` (hot-swap pause and
refit time) in :mod:`stream.bench.swap`; each provides ``add_parser(p)`` and
``run(args)`` like a command module. This is the only module that imports
:mod:`stream.bench`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from predictor.errors import ConfigError
from predictor.streams import STREAM_KEYS
from predictor.tasks import LOAD, NEXT_REQUEST, TASKS
from stream.bench import swap, throughput
from stream.cliutil import add_flag, add_trace_flags, load_from_args, set_torch_threads
from trainer.device import DEVICES
from trainer.evaluation.load import KNOWN_PEERS, LoadBacktestConfig, load_backtest
from trainer.evaluation.next_request import BacktestConfig, next_request_backtest
from trainer.evaluation.report import load_markdown, to_markdown
from trainer.evaluation.suite import SUITE_EPOCHS, run_suite, suite_markdown

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK")
    sub.required = True
    acc = sub.add_parser(
        "accuracy",
        help="walk-forward accuracy (next request, or load per bin) against the baselines",
        description="Train on the first part of each stream, then forecast every later "
        "request (--task next_request) or every later bin at several horizons (--task load) "
        "from what came before it only; MAE and interval coverage per quantity (and sMAPE "
        "for load, whose intervals are calibrated online as the service does).",
    )
    add_accuracy_flags(acc)
    acc.set_defaults(_bench_run=run_accuracy)
    _add_module(
        sub, "stream", throughput, "streaming throughput and latency against a bare Kafka echo"
    )
    _add_module(sub, "swap", swap, "hot-swap pause while refitting, and refit time")


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)


def _add_module(sub: Any, name: str, module: ModuleType, help: str) -> None:
    """Register ``bench <name>``, whose flags and run come from ``module``."""
    p = sub.add_parser(name, help=help)
    module.add_parser(p)
    p.set_defaults(_bench_run=module.run)


def add_accuracy_flags(p: argparse.ArgumentParser) -> None:
    add_trace_flags(p)
    d, dl = BacktestConfig(), LoadBacktestConfig()
    add_flag(
        p,
        "--task",
        default=NEXT_REQUEST,
        choices=list(TASKS),
        help="what to forecast: the next request of each stream, or the load per time bin",
    )
    add_flag(
        p,
        "--train-fraction",
        type=float,
        default=d.train_fraction,
        help="leading share of each stream that trains the models; the rest is forecast",
    )
    add_flag(p, "--models", nargs="+", default=list(d.models), help="models to train")
    add_flag(
        p,
        "--seq-len",
        type=int,
        help=f"input window: requests (default {d.seq_len}) or bins for --task load "
        f"(default {dl.seq_len})",
    )
    add_flag(
        p,
        "--epochs",
        type=int,
        help=f"maximum epochs, early stopping (default {d.epochs}; load {dl.epochs})",
    )
    add_flag(
        p,
        "--batch-size",
        type=int,
        help=f"training batch size (default {d.batch_size}; load {dl.batch_size})",
    )
    add_flag(
        p,
        "--stream-key",
        choices=list(STREAM_KEYS),
        help=f"one sequence per model, or one for all (default {d.stream_key}; load "
        f"{dl.stream_key}: all traffic as one load series)",
    )
    add_flag(p, "--bin-s", type=float, default=dl.bin_s, help="load: bin size in seconds")
    add_flag(
        p,
        "--horizons",
        type=int,
        nargs="+",
        default=list(dl.horizons),
        help="load: horizons to score, in bins (the networks forecast up to the largest)",
    )
    add_flag(p, "--patience", type=int, default=dl.patience, help="load: early-stopping patience")
    add_flag(
        p,
        "--ensemble",
        type=int,
        default=dl.ensemble,
        help="load: networks per model, trained from consecutive seeds, quantiles averaged",
    )
    add_flag(
        p,
        "--no-ets",
        action="store_true",
        help="load: leave out the AutoETS baseline even when statsforecast is installed",
    )
    add_flag(
        p,
        "--peers",
        nargs="*",
        choices=list(KNOWN_PEERS),
        default=list(dl.peers),
        help="load: the peers scored beside the baselines (none: leave them out); the "
        "library peers sf_autoarima, sf_autoets, sf_theta and filterpy_kalman need the "
        "'stats' extra, prophet the 'prophet' extra",
    )
    add_flag(
        p,
        "--no-ensemble",
        action="store_true",
        help="leave out the ensemble row (BOA over every expert, per stream; for load also "
        "its ratios to the best expert)",
    )
    add_flag(
        p,
        "--suite",
        action="store_true",
        help="load: run every dev trace under --suite-data and the synthetic week and "
        "variants (own bin sizes, horizons 1 6 30); one table of ensemble ratios "
        f"(default --epochs {SUITE_EPOCHS})",
    )
    add_flag(
        p,
        "--suite-data",
        default="../shared/data",
        help="load --suite: the folder of the dev traces",
        env=False,
    )
    add_flag(p, "--seed", type=int, default=d.seed, help="random seed (training, synthetic trace)")
    add_flag(p, "--device", default=d.device, choices=list(DEVICES), help="training device")
    add_flag(
        p,
        "--torch-threads",
        type=int,
        help="CPU threads for torch (default: torch's own; 1 is much faster on busy shared cores)",
    )
    add_flag(
        p,
        "--synthetic-rows",
        type=int,
        default=20_000,
        help="rows of the synthetic trace used without --data-path",
    )
    add_flag(
        p,
        "--rate-scale",
        type=float,
        default=1.0,
        help="multiply the synthetic trace's mean rate (0.27 requests/s)",
    )
    # output paths take no environment fallback: REQCAST_JSON is ``train --json``'s switch
    add_flag(p, "--json", help="write the results as JSON to this file", env=False)
    add_flag(p, "--markdown", help="also write the markdown table to this file", env=False)
    add_flag(p, "--no-progress", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace) -> BacktestConfig | LoadBacktestConfig:
    """The task's config from the flags; unset flags take the task's defaults."""
    common = {
        "models": tuple(args.models),
        "train_fraction": args.train_fraction,
        "seed": args.seed,
        "device": args.device,
    }
    for flag in ("seq_len", "epochs", "batch_size", "stream_key"):
        if getattr(args, flag) is not None:
            common[flag] = getattr(args, flag)
    if args.task == LOAD:
        return LoadBacktestConfig(
            bin_s=args.bin_s,
            horizons=tuple(args.horizons),
            patience=args.patience,
            ensemble=args.ensemble,
            ets=not args.no_ets,
            peers=tuple(args.peers),
            aggregate=not args.no_ensemble,
            **common,
        )
    return BacktestConfig(aggregate=not args.no_ensemble, **common)


def run_accuracy(args: argparse.Namespace) -> int:
    if args.suite:
        return run_load_suite(args)
    cfg = _config(args)
    set_torch_threads(args.torch_threads)
    df, load, source = load_from_args(
        args,
        synth_rows=args.synthetic_rows,
        synth_seed=args.seed,
        synth_rate_scale=args.rate_scale,
    )
    log.info("bench accuracy (%s): %s, %d rows", args.task, source, len(df))
    progress = not args.no_progress
    if isinstance(cfg, LoadBacktestConfig):
        report = load_backtest(df, cfg, progress=progress)
    else:
        report = next_request_backtest(df, cfg, progress=progress)
    report["task_config"] = {
        "data_path": args.data_path,
        "source": source,
        "rows_read": load.rows_read,
        "columns": load.columns,
        "time_unit": load.time_unit,
        "drop_failed": bool(args.drop_failed),
        "torch_threads": args.torch_threads,
        **report["task_config"],
    }
    table = load_markdown(report) if args.task == LOAD else to_markdown(report)
    print(table, end="")
    if args.json:
        _write(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, table)
    return 0


def run_load_suite(args: argparse.Namespace) -> int:
    """``--suite``: the load walk-forward on every dev trace, one table of ratios."""
    if args.task != LOAD:
        raise ConfigError("--suite runs the load walk-forward: add --task load")
    if args.data_path:
        raise ConfigError("--suite reads its own traces: leave out --data-path")
    if args.no_ensemble:
        raise ConfigError("--suite tabulates the ensemble: leave out --no-ensemble")
    if args.epochs is None:
        args.epochs = SUITE_EPOCHS
    cfg = _config(args)
    assert isinstance(cfg, LoadBacktestConfig)
    set_torch_threads(args.torch_threads)
    suite = run_suite(Path(args.suite_data), cfg, progress=not args.no_progress)
    suite["config"]["torch_threads"] = args.torch_threads
    table = suite_markdown(suite)
    print(table, end="")
    if args.json:
        _write(args.json, json.dumps(suite, indent=2) + "\n")
    if args.markdown:
        _write(args.markdown, table)
    return 0


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
