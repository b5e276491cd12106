"""``reqcast bench swap``: what hot swaps cost the stream, and what a refit costs.

Two measurements, each optional:

1. **Hot-swap pause.** First models are trained on the head of a trace; the rest is
   replayed at a steady rate (2,000 events/s by default) through the serving loop
   (in process, or over Kafka with ``--bootstrap-servers``) while a
   :class:`~trainer.refit.RefitWorker` refits every ``--refit-every-events`` events and
   swaps the challengers in. The wall-clock time of every delivered forecast batch is
   recorded; the report compares the longest gap between consecutive deliveries inside
   a swap window (from a refit's start to its last swap) with the median gap over the
   whole run (target: at most 3 times), counts the swaps, and checks that every event
   has a forecast from every model and that versions never move backwards. By default
   the guard is opened wide (``--guard-tolerance``) so that every sound refit becomes a
   swap; the pause is the thing measured here, not the guard. With ``--swap-mode load``
   nothing trains in the process: a thread loads each model's artifact again every
   ``--load-every-s`` seconds and installs it as the next version, as the model-topic
   follower does when a separate ``reqcast trainer`` publishes (the deployment where
   training runs on another machine); that isolates the cost of the swap itself.
2. **Refit time.** Each model is trained on ``--refit-events`` synthetic events (the
   leading 90 % of each stream, as a refit holds the rest out for the guard) with the
   refit defaults (sequence length 64, 10 epochs, batch 64, patience 3) on the CPU, and
   the guard's held-out scoring is timed after it.

Both cover the load models too (unless ``--skip-load``): in the paced run (refit mode) the
service publishes load forecasts of ``--bin-s`` bins, the worker trains first load versions
on the head's bins at once and refits them every ``--load-refit-every-s`` seconds, and the
pauses around their swaps are reported under ``swap.load`` as the next-request ones are;
the refit time has each model's ``refit_load_once`` (training, guard, saving, swap) on the
bins of the ``--refit-events`` trace under ``refit.load``.

Figures are printed as a table and, with ``--json``, written to a file.

This module holds the flags and the run; the measurements are
:mod:`stream.bench.swap_pause` (with the gap analysis in :mod:`stream.bench.swap_analysis`)
and :mod:`stream.bench.swap_refit`, the tables :mod:`stream.bench.swap_report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any

import torch

from predictor.errors import ConfigError
from stream.bench.swap_pause import swap_pause
from stream.bench.swap_refit import REFIT_DEFAULTS, refit_time
from stream.bench.swap_report import plain, render_table
from stream.cliutil import add_flag, add_trace_flags, set_torch_threads

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Hot-swap pause while refits swap models into a paced stream, and refit time."
    add_trace_flags(p)
    add_flag(p, "--models", nargs="+", default=list(REFIT_DEFAULTS.models), help="models to refit")
    add_flag(p, "--seed", type=int, default=0, help="seed of the synthetic traces and training")
    add_flag(p, "--json", help="write the figures as JSON to this file", env=False)
    add_flag(p, "--no-progress", action="store_true", help="no progress bars")
    add_flag(
        p,
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads for serving and training (0: torch's default)",
    )
    add_flag(p, "--skip-swap", action="store_true", help="skip the hot-swap pause measurement")
    add_flag(p, "--skip-refit", action="store_true", help="skip the refit time measurement")
    g = p.add_argument_group("hot-swap pause")
    add_flag(g, "--events", type=int, default=60_000, help="events replayed while refitting")
    add_flag(g, "--rate", type=float, default=2_000.0, help="replay rate in events/s")
    add_flag(
        g, "--head-rows", type=int, default=5_000, help="rows before them that train first models"
    )
    add_flag(g, "--first-epochs", type=int, default=3, help="epochs of the first models")
    add_flag(
        g,
        "--seq-len",
        type=int,
        default=REFIT_DEFAULTS.seq_len,
        help="window length of first models",
    )
    add_flag(
        g,
        "--swap-mode",
        default="refit",
        choices=["refit", "load"],
        help="refit: a RefitWorker trains in this process and swaps its challengers in; "
        "load: a thread loads new versions from artifacts and offers them, as the "
        "model-topic follower does when a separate trainer publishes",
    )
    add_flag(
        g, "--load-every-s", type=float, default=2.0, help="seconds between versions (load mode)"
    )
    add_flag(
        g, "--refit-every-events", type=int, default=5_000, help="refit after this many events"
    )
    add_flag(
        g, "--refit-window", type=int, default=5_000, help="recent events per stream a refit uses"
    )
    add_flag(g, "--refit-epochs", type=int, default=3, help="maximum epochs of those refits")
    add_flag(
        g,
        "--guard-tolerance",
        type=float,
        default=1e9,
        help="relative margin a challenger may be worse by and still be swapped in "
        "(0: the real guard; the default forces every sound refit to swap)",
    )
    add_flag(
        g, "--train-device", default="cpu", choices=["auto", "cpu", "cuda"], help="refit device"
    )
    add_flag(g, "--batch-max", type=int, default=500, help="most events per micro-batch")
    add_flag(
        g,
        "--refit-in-process",
        action="store_true",
        help="train in a thread of the serving process instead of a child process (as serve's flag)",
    )
    add_flag(g, "--bootstrap-servers", help="serve over this Kafka cluster instead of in process")
    add_flag(
        g,
        "--load-refit-every-s",
        type=float,
        default=10.0,
        help="refit mode: seconds between refits of the load models (their first versions "
        "train on the head's bins at once); 0: first versions only",
    )
    g = p.add_argument_group("load models (both measurements)")
    add_flag(g, "--skip-load", action="store_true", help="no load models: next-request only")
    add_flag(g, "--bin-s", type=float, default=60.0, help="load bins in seconds")
    add_flag(
        g,
        "--load-seq-len",
        type=int,
        default=REFIT_DEFAULTS.load_seq_len,
        help="window of the load models in bins (as a first load version of a refit)",
    )
    add_flag(
        g,
        "--load-horizon",
        type=int,
        default=REFIT_DEFAULTS.load_horizon,
        help="bins ahead the load models forecast (the longest serving horizon)",
    )
    g = p.add_argument_group("refit time")
    add_flag(
        g, "--refit-events", type=int, default=100_000, help="synthetic events the refit trains on"
    )
    add_flag(
        g,
        "--epochs",
        type=int,
        default=REFIT_DEFAULTS.epochs,
        help="maximum epochs (early stopping)",
    )
    add_flag(
        g, "--batch-size", type=int, default=REFIT_DEFAULTS.batch_size, help="training batch size"
    )
    add_flag(
        g,
        "--full-seq-len",
        type=int,
        default=REFIT_DEFAULTS.seq_len,
        help="window length of the refit",
    )
    add_flag(g, "--device", default="cpu", choices=["auto", "cpu", "cuda"], help="training device")


def run(args: argparse.Namespace) -> int:
    if args.skip_swap and args.skip_refit:
        raise ConfigError("nothing to measure: both --skip-swap and --skip-refit were given")
    if args.rate < 0 or args.events < 1 or args.refit_every_events < 1 or args.refit_events < 1:
        raise ConfigError("--events, --refit-every-events and --refit-events must be positive")
    if not args.bin_s > 0 or args.load_seq_len < 1 or args.load_horizon < 1:
        raise ConfigError("--bin-s, --load-seq-len and --load-horizon must be positive")
    if not args.load_refit_every_s >= 0:
        raise ConfigError("--load-refit-every-s must be 0 (first versions only) or more")
    set_torch_threads(args.torch_threads)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": _cpus(),
            "torch_threads": torch.get_num_threads(),
            "load_average": _loadavg(),
        }
    }
    if not args.skip_swap:
        report["swap"] = swap_pause(args)
    if not args.skip_refit:
        report["refit"] = refit_time(args)
    report["machine"]["load_average_end"] = _loadavg()
    print(render_table(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2, default=plain) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    return 0


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
