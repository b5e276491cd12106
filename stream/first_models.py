"""First models for ``reqcast run``: trained on the head of the trace when the model dir has none.

Training takes seconds to a minute, so it says so up front and prints one line per model as
it starts and as it finishes (epochs run of the most, seconds), on stderr like the status
line; the epoch bars of ``reqcast train`` stay off.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TextIO

import pandas as pd

from predictor.errors import TrainingError
from trainer.offline import LoadTask, ModelOutcome, train_models
from trainer.presets import Preset, get_preset

log = logging.getLogger(__name__)

#: what a new user is told to expect (the synthetic default: 8 to 77 s on 2 cores)
EXPECTED = "this takes up to about a minute on 2 CPU cores"


def announce(parts: list[str], rows: int, out: TextIO | None = None) -> None:
    """One line before training: which first models and on how many events."""
    print(
        f"training first models ({' and '.join(parts)}) on {rows:,} events; {EXPECTED}",
        file=out or sys.stderr,
        flush=True,
    )


def progress_line(task: str, outcome: ModelOutcome, epochs: int, elapsed_s: float) -> str:
    """The line after one model: epochs run of ``epochs`` (early stopping ends some sooner)."""
    head = f"  {task:12s} {outcome.model:8s}"
    if outcome.error or outcome.result is None:
        return f"{head} failed after {elapsed_s:.1f} s: {outcome.error}"
    r = outcome.result
    return (
        f"{head} {r.epochs_run}/{epochs} epochs in {elapsed_s:.1f} s "
        f"(best epoch {r.best_epoch}, val loss {r.best_val_loss:.4f})"
    )


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _train_each(
    head: pd.DataFrame,
    preset: Preset,
    args: argparse.Namespace,
    task: str,
    out: TextIO,
    load: LoadTask | None = None,
) -> list[ModelOutcome]:
    label = "next-request" if load is None else "load"
    outcomes = []
    for model in preset.models:
        print(f"  {label:12s} {model:8s} training (up to {_epochs(preset.epochs)}) ...", file=out)
        started = time.perf_counter()
        try:
            report = train_models(
                head,
                preset.override(models=(model,)),
                args.model_dir,
                stream_key=args.stream_key,
                seed=args.seed,
                progress=False,
                task=task,
                load=load,
            )
        except TrainingError as exc:  # too little data: the caller says what it means
            failed = ModelOutcome(model, error=str(exc))
            print(
                progress_line(label, failed, preset.epochs, time.perf_counter() - started), file=out
            )
            raise
        for o in report.outcomes:
            print(progress_line(label, o, preset.epochs, time.perf_counter() - started), file=out)
        out.flush()
        outcomes += report.outcomes
    return outcomes


def train_first(args: argparse.Namespace, head: pd.DataFrame, out: TextIO | None = None) -> None:
    """Next-request models of ``args.models`` in ``args.model_dir`` from ``head``."""
    preset = get_preset("cpu").override(
        epochs=args.first_epochs,
        seq_len=args.seq_len,
        sample_size=None,
        models=tuple(args.models),
        patience=3,
    )
    for o in _train_each(head, preset, args, "next_request", out or sys.stderr):
        if o.error:
            log.error("first %s model failed: %s", o.model, o.error)


def train_first_load(
    args: argparse.Namespace, head: pd.DataFrame, out: TextIO | None = None
) -> None:
    """Load models of ``args.models`` for ``args.bin_s`` bins; a trace too short for them is
    a warning (the run forecasts the next request only), not an error."""
    horizon = max(args.horizons)
    preset = get_preset("cpu").override(
        epochs=max(args.first_epochs, 10),
        seq_len=args.load_seq_len,
        batch_size=16,
        sample_size=None,
        models=tuple(args.models),
        patience=3,
    )
    try:
        outcomes = _train_each(
            head, preset, args, "load", out or sys.stderr, LoadTask(args.bin_s, horizon)
        )
    except TrainingError as exc:
        log.warning("no first load models: %s", exc)
        return
    for o in outcomes:
        if o.error:
            log.warning("first %s load model failed: %s", o.model, o.error)
