"""Flags of the periodic refit shared by ``serve``, ``run`` and ``trainer``.

What a refit costs the serving path (``serve`` and ``run`` without ``--no-refit``): the
training itself runs in a lower-priority child process (one thread), so forecasting keeps
its cores' share; the serving process pays for the snapshot of the buffer, the guard's
forecasts over the held-out slice, saving and loading the artifact and the swap, a
fraction of a second of interpreter time per model and refit. A refit every 10,000 events
at 15,000 events/s started one every 0.7 s and cost serving about a third of its
throughput; a refit every 600 s costs it next to nothing. However it is scheduled, a
refit never starts sooner after the last one than that one took.
"""

from __future__ import annotations

import argparse

from predictor.errors import ConfigError
from stream.cliutil import add_flag
from trainer.device import resolve_device
from trainer.refit import RefitConfig


def add_refit_flags(
    p: argparse.ArgumentParser,
    every_events: int = 0,
    every_s: float = 600.0,
    window: int = 20_000,
    epochs: int = 10,
    load_every_s: float = 600.0,
) -> None:
    add_flag(
        p,
        "--refit-in-process",
        action="store_true",
        help="train in a thread of this process instead of a lower-priority child process",
    )
    add_flag(
        p,
        "--no-refit",
        action="store_true",
        help="do not refit in this process (e.g. when a separate `reqcast trainer` runs)",
    )
    add_flag(
        p,
        "--refit-every-events",
        type=int,
        default=every_events,
        help="also refit the next-request models after this many new events (0, the default: "
        "never by count; at thousands of events/s a count starts refits far too often)",
    )
    add_flag(
        p,
        "--refit-every-s",
        type=float,
        default=every_s,
        help="refit the next-request models this many seconds after the last refit started "
        "(0: never by time). Training runs in a lower-priority child process; the serving "
        "process spends a fraction of a second per model and refit on the guard, the artifact "
        "and the swap. Never sooner after a refit than that refit took",
    )
    add_flag(
        p,
        "--refit-load-every-s",
        type=float,
        default=load_every_s,
        help="refit the load models (those serving, on the recent bins of --bin-s) this many "
        "seconds after their last refit started (0: never); same guard, child process, "
        "minimum gap and model topic as the next-request models",
    )
    add_flag(
        p,
        "--refit-load-window",
        type=int,
        default=1440,
        help="recent closed load bins per stream a load refit trains on (the most recent "
        "--refit-holdout of them held out for the guard)",
    )
    add_flag(
        p,
        "--refit-window",
        type=int,
        default=window,
        help="recent events per stream a refit trains on",
    )
    add_flag(
        p,
        "--refit-min-events",
        type=int,
        default=2_000,
        help="no refit before this many events are buffered",
    )
    add_flag(p, "--refit-epochs", type=int, default=epochs, help="maximum epochs of a refit")
    add_flag(
        p,
        "--refit-holdout",
        type=float,
        default=0.1,
        help="most recent fraction of the window held out for the champion/challenger guard",
    )
    add_flag(
        p,
        "--refit-tolerance",
        type=float,
        default=0.0,
        help="a challenger may score up to this fraction worse than the serving model on the "
        "held-out slice and still replace it (0: no worse)",
    )
    add_flag(
        p,
        "--train-device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="device refits of both tasks train on (auto: CUDA when present; a CUDA "
        "out-of-memory retries on the CPU with half the batch, logged once and counted)",
    )


def refit_config(args: argparse.Namespace) -> RefitConfig:
    if not 0 < args.refit_holdout < 0.5:
        raise ConfigError("--refit-holdout must be between 0 and 0.5")
    if args.refit_window < 100:
        raise ConfigError("--refit-window must be at least 100 events")
    if not args.refit_tolerance >= 0:
        raise ConfigError(f"--refit-tolerance must be 0 or more, got {args.refit_tolerance}")
    if args.refit_load_window < 10:
        raise ConfigError("--refit-load-window must be at least 10 bins")
    for flag, value in (
        ("--refit-every-events", args.refit_every_events),
        ("--refit-every-s", args.refit_every_s),
        ("--refit-load-every-s", args.refit_load_every_s),
    ):
        if not value >= 0:
            raise ConfigError(f"{flag} must be 0 (off) or more, got {value}")
    try:
        resolve_device(args.train_device)  # cuda without CUDA: say so now, not at a refit
    except ConfigError as exc:
        raise ConfigError(f"--train-device {args.train_device}: {exc}") from exc
    return RefitConfig(
        model_dir=args.model_dir,
        models=tuple(args.models),
        every_events=args.refit_every_events or None,
        every_s=args.refit_every_s or None,
        window_events=args.refit_window,
        holdout_fraction=args.refit_holdout,
        tolerance=args.refit_tolerance,
        min_events=args.refit_min_events,
        epochs=args.refit_epochs,
        device=args.train_device,
        stream_key=args.stream_key,
        seq_len=getattr(args, "seq_len", None) or 64,
        isolate=not args.refit_in_process,
        load_bin_s=getattr(args, "bin_s", None),
        load_every_s=args.refit_load_every_s or None,
        load_window_bins=args.refit_load_window,
        load_seq_len=getattr(args, "load_seq_len", None) or 48,
        load_horizon=max(getattr(args, "horizons", None) or [30]),
    )
