"""``reqcast train``: offline training of LSTM and DLinear with a preset."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from predictor.errors import ConfigError
from predictor.request_predictor import RequestPredictor
from predictor.streams import STREAM_KEYS
from predictor.tasks import LOAD, NEXT_REQUEST, TASKS
from predictor.traces import sample_contiguous
from stream.cliutil import add_flag, add_trace_flags, load_from_args
from trainer.device import DEVICES
from trainer.offline import LoadTask, OfflineReport, check_models, train_models
from trainer.presets import PRESETS, get_preset


def add_parser(p: argparse.ArgumentParser) -> None:
    add_flag(
        p,
        "--preset",
        default="simple",
        choices=list(PRESETS),
        help="training preset: simple (20,000 rows), production (the whole trace) or cpu "
        '(5,000 rows, shorter windows, CPU); each one\'s settings: docs/models.md, "Training"',
    )
    add_trace_flags(p)
    add_flag(
        p,
        "--sample-size",
        type=int,
        help="train on this many contiguous rows (the preset's default)",
    )
    add_flag(
        p,
        "--sample-mode",
        default="recent",
        choices=["recent", "random"],
        help="which contiguous block --sample-size takes: the most recent rows or a seeded random block",
    )
    add_flag(p, "--model-dir", default="models", help="where artifacts are saved")
    add_flag(
        p,
        "--task",
        default=NEXT_REQUEST,
        choices=list(TASKS),
        help="forecast the next request, or the load per time bin over several horizons",
    )
    add_flag(p, "--bin-s", type=float, default=60.0, help="load task: bin size in seconds")
    add_flag(p, "--horizon", type=int, default=30, help="load task: longest horizon in bins")
    add_flag(
        p,
        "--ensemble",
        type=int,
        default=1,
        help="load task: networks per model, trained from consecutive seeds, quantiles "
        "averaged (the served artifact holds them all)",
    )
    add_flag(
        p, "--models", nargs="+", help="models to train: lstm dlinear (the preset's default: both)"
    )
    add_flag(p, "--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    add_flag(p, "--seq-len", type=int, help="requests in each input window")
    add_flag(p, "--batch-size", type=int, help="training batch size")
    add_flag(p, "--device", choices=list(DEVICES), help="auto uses CUDA when present")
    add_flag(
        p,
        "--stream-key",
        default="model",
        choices=list(STREAM_KEYS),
        help="one sequence per model, or one for all",
    )
    add_flag(
        p,
        "--seed",
        type=int,
        default=0,
        help="random seed (initialisation, shuffling, random sample)",
    )
    add_flag(
        p,
        "--synthetic-rows",
        type=int,
        default=20_000,
        help="rows of the synthetic trace used without --data-path",
    )
    add_flag(p, "--json", action="store_true", help="print the summary as JSON")
    add_flag(p, "--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.task != LOAD and args.ensemble != 1:
        raise ConfigError("--ensemble is for load models (--task load)")
    preset = get_preset(args.preset).override(
        seq_len=args.seq_len,
        epochs=args.epochs,
        batch_size=args.batch_size,
        sample_size=args.sample_size,
        device=args.device,
        models=tuple(check_models(args.models)) if args.models else None,
    )
    df, load, source = load_from_args(args, synth_rows=args.synthetic_rows, synth_seed=args.seed)
    sampled = sample_contiguous(df, preset.sample_size, mode=args.sample_mode, seed=args.seed)
    report = train_models(
        sampled,
        preset,
        args.model_dir,
        stream_key=args.stream_key,
        seed=args.seed,
        progress=not args.no_progress,
        extra_meta={"source": source, "load": load.to_dict()},
        task=args.task,
        load=LoadTask(args.bin_s, args.horizon, args.ensemble) if args.task == LOAD else None,
    )
    if args.task == LOAD:
        return _load_summary(args, report)
    predictor = RequestPredictor(args.model_dir, models=preset.models, device="cpu")
    # the test prediction follows the stream of the trace's last request, as serving would
    last_stream = None
    if args.stream_key == "model" and sampled["model"].notna().any():
        last_stream = str(sampled["model"].dropna().iloc[-1])
    test = predictor.predict_next_request(sampled, stream=last_stream)
    test["stream"] = last_stream or "all"
    summary = {
        "preset": preset.name,
        "device": report.device,
        "source": source,
        "records_read": load.rows_read,
        "records_cleaned": load.rows_kept,
        "records_sampled": len(sampled),
        "streams": report.streams,
        "models": {
            o.model: (
                {"error": o.error}
                if o.result is None or o.artifact is None
                else {
                    "artifact": str(o.artifact.path),
                    "version": o.artifact.version,
                    "final_train_loss": o.result.final_train_loss,
                    "best_val_loss": round(o.result.best_val_loss, 6),
                    "epochs_run": o.result.epochs_run,
                    "best_epoch": o.result.best_epoch,
                    "duration_s": round(o.result.duration_s, 1),
                    "validation": o.result.val_metrics,
                }
            )
            for o in report.outcomes
        },
        "trained": f"{report.trained}/{len(preset.models)}",
        "test_prediction": test,
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0 if report.trained == len(preset.models) else 1


def _print_summary(s: dict[str, Any]) -> None:
    out = sys.stdout
    print(f"\n=== reqcast train: preset {s['preset']} on {s['device']} ===", file=out)
    print(f"source:           {s['source']}", file=out)
    print(f"records read:     {s['records_read']:,}", file=out)
    print(f"records cleaned:  {s['records_cleaned']:,}", file=out)
    print(f"records sampled:  {s['records_sampled']:,}  streams: {s['streams']}", file=out)
    for name, m in s["models"].items():
        if "error" in m:
            print(f"{name:8s} FAILED: {m['error']}", file=out)
            continue
        mae = ", ".join(f"{v:.3g}" for v in m["validation"]["mae"])
        print(
            f"{name:8s} final loss {m['final_train_loss']:.4f}  val {m['best_val_loss']:.4f}  "
            f"epochs {m['epochs_run']} (best {m['best_epoch']})  {m['duration_s']}s  "
            f"val MAE gap/req/resp {mae}  confidence {m['validation']['confidence']:.2f}",
            file=out,
        )
        print(f"         saved {m['artifact']} (version {m['version']})", file=out)
    print(f"models trained:   {s['trained']}", file=out)
    print("test prediction (next request after the sample):", file=out)
    for name, p in s["test_prediction"]["predictions"].items():
        if "error" in p:
            print(f"  {name:8s} error: {p['error']}", file=out)
        else:
            iv = p["interval"]
            print(
                f"  {name:8s} in {p['gap_s']:.2f}s [{iv['gap_s'][0]:.2f}, {iv['gap_s'][1]:.2f}]  "
                f"request {p['request_tokens']:.0f} [{iv['request_tokens'][0]:.0f}, "
                f"{iv['request_tokens'][1]:.0f}]  response {p['response_tokens']:.0f} "
                f"[{iv['response_tokens'][0]:.0f}, {iv['response_tokens'][1]:.0f}]  "
                f"confidence {p['confidence']:.2f}",
                file=out,
            )


def _load_summary(args: argparse.Namespace, report: OfflineReport) -> int:
    """Summary of a load-task training run."""
    models: dict[str, dict[str, Any]] = {}
    for o in report.outcomes:
        if o.result is None or o.artifact is None:
            models[o.model] = {"error": o.error}
            continue
        models[o.model] = {
            "artifact": str(o.artifact.path),
            "version": o.artifact.version,
            "epochs_run": o.result.epochs_run,
            "best_val_loss": round(o.result.best_val_loss, 6),
            "validation": o.result.val_metrics,
        }
    summary = {
        "task": LOAD,
        "bin_s": args.bin_s,
        "horizon_bins": args.horizon,
        "streams_bins": report.streams,
        "models": models,
        "trained": f"{report.trained}/{len(report.outcomes)}",
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\n=== reqcast train: load, {args.bin_s:g}s bins, horizon {args.horizon} ===")
        print(f"bins per stream: {report.streams}")
        for name, m in models.items():
            print(f"{name:8s} {m.get('error') or m['artifact']}")
        print(f"models trained:   {summary['trained']}")
    return 0 if report.trained == len(report.outcomes) else 1
