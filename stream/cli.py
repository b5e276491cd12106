"""The ``reqcast`` command line: one parser, one module per subcommand.

Errors that reqcast raises on purpose (:class:`~predictor.errors.ReqcastError`)
become one line on stderr and exit status 2; Ctrl-C exits with 130; a reader that
closes the pipe early (``reqcast predict --json | head -1``) ends the command quietly
with 141, as a SIGPIPE would. ``reqcast --version`` prints the installed version.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from predictor.errors import ReqcastError

#: subcommand -> module in :mod:`stream.commands` (loaded lazily to keep startup fast)
COMMANDS = {
    "run": "Replay a trace through the whole pipeline in one process (the embedded default)",
    "synth": "Write a synthetic BurstGPT-like trace",
    "inspect": "Load a trace and report what the loader kept and dropped",
    "train": "Train LSTM and DLinear offline with a preset",
    "predict": "Forecast the next request from saved models for the tail of a trace",
    "replay": "Publish a trace to a Kafka topic as request events",
    "serve": "The streaming forecast service over Kafka",
    "trainer": "The periodic trainer as its own service over Kafka",
    "bench": "Benchmarks: walk-forward accuracy, streaming throughput and latency",
    "plot": "Result plots: forecasts with intervals, error by horizon, training curves",
}

#: subcommands whose module in :mod:`stream.commands` has another name than the command
MODULES = {"trainer": "refit_service"}


#: exit status after the reader of stdout went away (128 + SIGPIPE, as a shell reports it)
EXIT_BROKEN_PIPE = 141


def version() -> str:
    """The installed package's version, else the one in the checkout's ``pyproject.toml``."""
    from importlib import metadata

    try:
        return metadata.version("reqcast")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


def _module(name: str) -> object:
    return importlib.import_module(f"stream.commands.{MODULES.get(name, name)}")


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reqcast",
        description="Forecast LLM request traffic (next request and coming load) from a "
        "stream of request events, with LSTM and DLinear.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"reqcast {version()}",
        help="print the version",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in names or COMMANDS:
        try:
            module = _module(name)
        except ModuleNotFoundError:
            continue
        p = sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])
        module.add_parser(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _main(argv)
    except SystemExit:  # argparse's --help, usage errors
        if not _flushed():
            return EXIT_BROKEN_PIPE
        raise
    except BrokenPipeError:
        _flushed()
        return EXIT_BROKEN_PIPE
    return rc if _flushed() else EXIT_BROKEN_PIPE


def _flushed() -> bool:
    """Flush stdout; False when its reader went away (``| head``). Stdout then points at
    /dev/null, so nothing is left to fail (and print a traceback) at interpreter exit."""
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"reqcast {version()}")
        return 0
    # build only the subcommand asked for, so a broken optional one never blocks the rest
    chosen = [a for a in argv if a in COMMANDS][:1]
    parser = build_parser(chosen or None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        return int(args._run(args) or 0)
    except ReqcastError as exc:
        print(f"reqcast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reqcast {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
