"""``reqcast bench swap``, measurement 2: what one refit costs.

:func:`refit_time` trains each model on ``--refit-events`` synthetic events with the
refit defaults (:data:`REFIT_DEFAULTS`), holding the tail of each stream out as a refit
does, and times the guard's held-out scoring after it.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import torch

from predictor.streams import stream_series
from stream.cliutil import load_from_args
from trainer.guard import judge
from trainer.refit import RefitConfig
from trainer.train import TrainConfig, TrainResult, train_forecaster

log = logging.getLogger(__name__)

#: the refit defaults: the settings a refit trains with
REFIT_DEFAULTS = RefitConfig(model_dir="")


def refit_time(args: argparse.Namespace) -> dict[str, Any]:
    """Train each model on ``--refit-events`` synthetic events as a refit would; time it."""
    df, _, _ = load_from_args(
        argparse.Namespace(data_path=None), synth_rows=args.refit_events, synth_seed=args.seed + 1
    )
    series = list(stream_series(df, "model", min_rows=args.full_seq_len + 2).values())
    holdout = [max(1, int(len(s) * REFIT_DEFAULTS.holdout_fraction)) for s in series]
    train = [s[:-h] for s, h in zip(series, holdout, strict=True)]
    out: dict[str, Any] = {
        "events": int(sum(len(s) for s in series)),
        "streams": len(series),
        "train_rows": int(sum(len(s) for s in train)),
        "seq_len": args.full_seq_len,
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "patience": REFIT_DEFAULTS.patience,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "models": {},
    }
    for model in args.models:
        cfg = TrainConfig.for_model(
            model,
            seq_len=args.full_seq_len,
            epochs=args.epochs,
            batch_size=args.batch_size,
            patience=REFIT_DEFAULTS.patience,
            device=args.device,
            seed=args.seed,
        )
        log.info("bench swap: refit of %s on %d rows", model, out["train_rows"])
        result: TrainResult = train_forecaster(train, cfg, progress=not args.no_progress)
        t0 = time.perf_counter()
        decision = judge(model, result.forecaster, None, series, holdout)
        guard_s = time.perf_counter() - t0
        out["models"][model] = {
            "train_s": round(result.duration_s, 2),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "s_per_epoch": round(result.duration_s / max(result.epochs_run, 1), 2),
            "train_windows": result.n_train,
            "val_windows": result.n_val,
            "guard_s": round(guard_s, 2),
            "guard_score": None
            if decision.challenger_score is None
            else round(decision.challenger_score, 4),
            "device": result.device,
        }
    return out
