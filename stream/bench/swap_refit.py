"""``reqcast bench swap``, measurement 2: what one refit costs.

:func:`refit_time` trains each model on ``--refit-events`` synthetic events with the
refit defaults (:data:`REFIT_DEFAULTS`), holding the tail of each stream out as a refit
does, and times the guard's held-out scoring after it; :func:`load_refit_time` times
what a refit of each load model takes (``RefitWorker.refit_load_once``: training on the
recent bins, the guard, saving and the swap) on the bins of the same trace.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import pandas as pd
import torch
from prometheus_client import CollectorRegistry

from predictor.slot import ModelSlot
from predictor.streams import stream_series
from predictor.traces import iter_events
from stream.cliutil import load_from_args
from trainer.guard import judge
from trainer.refit import RefitConfig, RefitWorker
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
    if not getattr(args, "skip_load", False):
        out["load"] = load_refit_time(args, df)
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


def load_refit_time(args: argparse.Namespace, df: pd.DataFrame) -> dict[str, Any]:
    """Each load model's ``refit_load_once`` on the trace's ``--bin-s`` bins (the most recent
    ``load_window_bins`` of each stream), timed: a first version of ``--load-seq-len`` bins
    and ``--load-horizon`` bins ahead, trained as a refit trains (``--epochs``,
    ``--batch-size``, ``--device``), in this process."""
    import tempfile

    from stream.metrics import Metrics

    events = list(iter_events(df))
    out: dict[str, Any] = {
        "bin_s": args.bin_s,
        "seq_len": args.load_seq_len,
        "horizon_bins": args.load_horizon,
        "window_bins": REFIT_DEFAULTS.load_window_bins,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="reqcast-bench-load-refit-") as tmp:
        for model in args.models:
            metrics = Metrics(CollectorRegistry())
            config = RefitConfig(
                model_dir=tmp,
                models=(),
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=args.device,
                seed=args.seed,
                load_bin_s=args.bin_s,
                load_every_s=None,
                load_seq_len=args.load_seq_len,
                load_horizon=args.load_horizon,
            )
            worker = RefitWorker(config, {}, metrics, load_slots={model: ModelSlot(model)})
            assert worker.bins is not None
            worker.bins.add(events)
            series = worker.bins.snapshot()
            log.info("bench swap: load refit of %s on %d streams' bins", model, len(series))
            t0 = time.perf_counter()
            decisions = worker.refit_load_once()
            took = time.perf_counter() - t0
            train_s = _train_seconds(metrics, model)
            decision = decisions[0] if decisions else None
            out["bins"] = int(sum(len(s) for s in series.values()))
            out["streams"] = len(series)
            out["models"][model] = {
                "refit_s": round(took, 2),
                "train_s": None if train_s is None else round(train_s, 2),
                "decision": None if decision is None else decision.describe(),
                "guard_score": None
                if decision is None or decision.challenger_score is None
                else round(decision.challenger_score, 4),
                "swapped": bool(decision is not None and decision.accepted),
            }
    return out


def _train_seconds(metrics: Any, model: str) -> float | None:
    """Seconds ``model`` trained, on any device, as the refit worker observed them."""
    found = [
        sample.value
        for family in metrics.training_duration.collect()
        for sample in family.samples
        if sample.name.endswith("_sum") and sample.labels.get("model") == model
    ]
    return sum(found) if found else None
