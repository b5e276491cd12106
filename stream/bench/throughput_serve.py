"""``reqcast bench stream``, the serve side's settings: ``reqcast serve``'s own flags.

The serve pipeline is configured by parsing a ``reqcast serve`` command line with serve's
own parser (:func:`stream.serve_flags.add_serve_flags`) and turning it into
:class:`~stream.app.ServiceSettings` with :func:`stream.serve_flags.service_settings`,
exactly as ``reqcast serve`` does. The command line is serve's defaults plus what the bench
must set (topics, ``--model-dir``, ``--models``, ``--batch-max``, ``--compression``,
``--torch-threads``, a model topic of the run's own) and what ``--no-refit``, ``--no-load`` and
``--serve-args`` add. With the defaults the serve side therefore runs the refit worker
(time-based, every 600 s; a slot without a model trains as soon as there is data, in a
lower-priority child process), the load task with its ``ensemble``, the model-topic
follower and the model-dir watcher, and rebuilds its windows from history on assignment.

The refits write their artifacts to the model directory served: the bench serves a copy of
``--model-dir``'s newest artifacts (:func:`served_model_dir`), so a bench never adds versions
to the models it was given.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from predictor.errors import ConfigError
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.app import ServiceSettings

#: ``--serve-args`` of the bench before it served with serve's defaults: the loop alone
OLD_SERVE_ARGS = "--no-refit --no-load --model-topic '' --watch-model-dir 0 --history-records 0"


def serve_argv(args: argparse.Namespace, model_dir: str, model_topic: str) -> list[str]:
    """The ``reqcast serve`` flags of the bench's serve side, topics excepted (each phase
    adds its own with :func:`phase_argv`)."""
    argv = ["--model-dir", model_dir, "--models", *args.models]
    argv += ["--batch-max", str(args.batch_max), "--compression", args.compression]
    argv += ["--torch-threads", str(args.torch_threads), "--model-topic", model_topic]
    if args.no_refit:
        argv.append("--no-refit")
    if args.no_load:
        argv.append("--no-load")
    try:
        argv += shlex.split(args.serve_args or "")
    except ValueError as exc:
        raise ConfigError(f"--serve-args: {exc}") from exc
    return argv


def phase_argv(argv: list[str], topic: str, output: str, dlq: str) -> list[str]:
    """``argv`` with one phase's topics."""
    return [*argv, "--input-topic", topic, "--output-topic", output, "--dlq-topic", dlq]


class _Parser(argparse.ArgumentParser):
    """Serve's parser; a bad flag is a :class:`ConfigError`, not an exit."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"--serve-args: {message}")


def parse_serve(argv: list[str]) -> tuple[argparse.Namespace, ServiceSettings]:
    """``argv`` parsed by ``reqcast serve``'s parser, and the settings serve makes of it."""
    from stream.serve_flags import add_serve_flags, service_settings

    parser = _Parser(prog="reqcast serve", add_help=False)
    add_serve_flags(parser)
    args = parser.parse_args(argv)
    return args, service_settings(args)


def describe(settings: ServiceSettings, args: argparse.Namespace) -> dict[str, Any]:
    """What the serve side ran with, for the report."""
    refit = settings.workers.refit
    load = settings.load
    return {
        "refit": None
        if refit is None
        else {
            "every_s": refit.every_s,
            "every_events": refit.every_events,
            "load_every_s": refit.load_every_s,
            "min_events": refit.min_events,
            "isolate": refit.isolate,
            "epochs": refit.epochs,
        },
        "load": {"bin_s": load.bin_s, "horizons": list(load.horizons)} if load.enabled else None,
        "publish_best": settings.serve.publish_best,
        "window": settings.serve.window_capacity,
        "history_records": settings.serve.history_records,
        "model_topic": settings.workers.model_topic or None,
        "watch_model_dir_s": settings.workers.watch_model_dir_s,
        "torch_threads": args.torch_threads or None,
        "compression": args.compression,
    }


def served_model_dir(model_dir: str, models: list[str]) -> Path:
    """A fresh directory with the newest next-request and load artifact of each of
    ``models`` in ``model_dir`` (what the serve side serves and its refits write to)."""
    from predictor.artifacts import list_artifacts

    out = Path(tempfile.mkdtemp(prefix="reqcast-bench-models-"))
    for name in models:
        for task in (NEXT_REQUEST, LOAD):
            infos = list_artifacts(model_dir, name, task)
            if infos:
                shutil.copytree(infos[-1].path, out / infos[-1].path.name)
    return out
