"""Flags of the periodic refit shared by ``serve``, ``run`` and ``trainer``."""

from __future__ import annotations

import argparse

from predictor.errors import ConfigError
from stream.cliutil import add_flag
from trainer.refit import RefitConfig


def add_refit_flags(
    p: argparse.ArgumentParser,
    every_events: int = 10_000,
    every_s: float = 600.0,
    window: int = 20_000,
    epochs: int = 10,
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
        help="refit after this many new events (0: never by count)",
    )
    add_flag(
        p,
        "--refit-every-s",
        type=float,
        default=every_s,
        help="refit at least this often in seconds (0: never by time)",
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
        "--train-device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="device refits train on (auto: CUDA when present)",
    )


def refit_config(args: argparse.Namespace) -> RefitConfig:
    if not 0 < args.refit_holdout < 0.5:
        raise ConfigError("--refit-holdout must be between 0 and 0.5")
    if args.refit_window < 100:
        raise ConfigError("--refit-window must be at least 100 events")
    return RefitConfig(
        model_dir=args.model_dir,
        models=tuple(args.models),
        every_events=args.refit_every_events or None,
        every_s=args.refit_every_s or None,
        window_events=args.refit_window,
        holdout_fraction=args.refit_holdout,
        min_events=args.refit_min_events,
        epochs=args.refit_epochs,
        device=args.train_device,
        stream_key=args.stream_key,
        seq_len=getattr(args, "seq_len", None) or 64,
        isolate=not args.refit_in_process,
    )
