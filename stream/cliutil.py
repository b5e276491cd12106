"""Helpers shared by the subcommands: flags with ``REQCAST_*`` fallbacks, trace options.

Every flag added through :func:`add_flag` reads its default from an environment
variable named ``REQCAST_<FLAG>`` (dashes become underscores) and says so in
``--help``. This module and :mod:`stream.cli` are the only readers of the
environment.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from predictor.errors import ConfigError

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
