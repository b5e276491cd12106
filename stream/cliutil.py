"""Helpers shared by the subcommands: flags with ``REQCAST_*`` fallbacks, trace options.

:func:`load_from_args` reads the trace that the trace flags name (or a synthetic one);
it lives here rather than under :mod:`stream.commands` so that the benchmarks, which
take parsed flags too, need nothing from the commands package.

Every flag added through :func:`add_flag` reads its default from an environment
variable named ``REQCAST_<FLAG>`` (dashes become underscores) and says so in
``--help``. This module and :mod:`stream.cli` are the only readers of the
environment.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predictor.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from predictor.traces import LoadReport

ENV_PREFIX = "REQCAST_"


def env_name(flag: str) -> str:
    """``--bootstrap-servers`` -> ``REQCAST_BOOTSTRAP_SERVERS``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def add_flag(
    parser: argparse.ArgumentParser | Any,
    flag: str,
    *,
    default: Any = None,
    help: str,
    type: Any = str,
    choices: Any = None,
    nargs: Any = None,
    action: str | None = None,
    env: bool = True,
) -> None:
    """Add ``flag`` whose default falls back to ``REQCAST_<FLAG>`` (shown in the help)."""
    var = env_name(flag)
    value: Any = default
    if env and var in os.environ:
        raw = os.environ[var]
        if action == "store_true":
            value = raw.strip().lower() in ("1", "true", "yes", "on")
        elif nargs in ("+", "*"):
            value = [type(v) for v in raw.replace(",", " ").split()]
        else:
            value = type(raw)
    shown = "" if default is None or action == "store_true" else f" (default: {default})"
    env_note = f" [env {var}]" if env else ""
    kwargs: dict[str, Any] = {"default": value, "help": f"{help}{shown}{env_note}"}
    if action:
        kwargs["action"] = action
    else:
        kwargs["type"] = type
        if choices is not None:
            kwargs["choices"] = choices
        if nargs is not None:
            kwargs["nargs"] = nargs
    parser.add_argument(flag, **kwargs)


def add_trace_flags(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--data-path``, ``--columns``, ``--time-unit``, ``--drop-failed``: how to read a trace."""
    add_flag(
        parser,
        "--data-path",
        help="trace file (CSV or JSONL): BurstGPT by default, other schemas via --columns"
        + ("" if required else "; a synthetic BurstGPT-like trace when omitted"),
    )
    add_flag(
        parser,
        "--columns",
        help="map canonical fields to the file's columns, e.g. "
        "timestamp=TIMESTAMP,request_tokens=ContextTokens,response_tokens=GeneratedTokens",
    )
    add_flag(
        parser,
        "--time-unit",
        default="auto",
        choices=["auto", "s", "ms", "datetime"],
        help="how to read timestamps: seconds (relative or epoch), milliseconds, date-times",
    )
    add_flag(
        parser,
        "--drop-failed",
        action="store_true",
        help="drop zero-token (failed) requests; by default they are kept as real traffic",
    )


def trace_path(args: argparse.Namespace) -> str:
    """The trace named by the positional argument or ``--data-path`` (or both, if equal)."""
    positional, flag = getattr(args, "path", None), getattr(args, "data_path", None)
    if positional and flag and positional != flag:
        raise ConfigError(f"two trace files given: {positional} and --data-path {flag}")
    path = positional or flag
    if not path:
        raise ConfigError("no trace file given: pass FILE or --data-path FILE")
    return str(path)


def load_from_args(
    args: argparse.Namespace,
    synth_rows: int = 20_000,
    synth_seed: int = 0,
    synth_rate_scale: float = 1.0,
) -> tuple[pd.DataFrame, LoadReport, str]:
    """The cleaned trace named by ``--data-path`` (or a synthetic BurstGPT-like one) and its report.

    ``synth_rate_scale`` multiplies the synthetic trace's mean rate.
    """
    # imported here: pandas and the trace reader are not needed to build the parsers
    from predictor.synth import synthesize, write_trace
    from predictor.traces import load_trace

    path = getattr(args, "data_path", None)
    if path:
        df, report = load_trace(
            path,
            columns=getattr(args, "columns", None),
            time_unit=getattr(args, "time_unit", "auto"),
            drop_failed=bool(getattr(args, "drop_failed", False)),
        )
        return df, report, str(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synthetic.csv"
        write_trace(synthesize(synth_rows, seed=synth_seed, rate_scale=synth_rate_scale), out)
        df, report = load_trace(out, drop_failed=bool(getattr(args, "drop_failed", False)))
    scale = f", rate x{synth_rate_scale:g}" if synth_rate_scale != 1.0 else ""
    return (
        df,
        report,
        f"synthetic BurstGPT-like trace ({synth_rows:,} rows, seed {synth_seed}{scale})",
    )


def check_torch_threads(threads: int | None) -> None:
    """``--torch-threads``: a count of CPU threads; ``None`` or 0 keeps torch's default."""
    if threads is not None and threads < 0:
        raise ConfigError(f"--torch-threads must be 0 or more, got {threads}")


def set_torch_threads(threads: int | None) -> None:
    """Check and apply ``--torch-threads`` (imports torch only when there is a count to set)."""
    check_torch_threads(threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
