"""Helpers shared by the subcommands: flags with ``REQCAST_*`` fallbacks, trace options.

:func:`load_from_args` reads the trace that the trace flags name (or a synthetic one);
it lives here rather than under :mod:`stream.commands` so that the benchmarks, which
take parsed flags too, need nothing from the commands package. :func:`add_kafka_flags`
and :func:`kafka_config` turn the Kafka connection flags into a
:class:`stream.kafka_io.KafkaConfig`, so the Kafka adapters know nothing of flags.

Every flag added through :func:`add_flag` reads its default from an environment
variable named ``REQCAST_<FLAG>`` (dashes become underscores) and says so in
``--help``. This module and :mod:`stream.cli` are the only readers of the
environment.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from predictor.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from predictor.traces import LoadReport
    from stream.kafka_io import KafkaConfig

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


def add_kafka_flags(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--bootstrap-servers``, ``--security-protocol``, ``--sasl-mechanism``,
    ``--ssl-cafile``, each with its ``REQCAST_*`` fallback."""
    # imported here: kafka-python is not needed by the commands that never reach a broker
    from stream.kafka_io import PASSWORD_ENV, SASL_MECHANISMS, SECURITY_PROTOCOLS, USERNAME_ENV

    add_flag(parser, "--bootstrap-servers", help="Kafka brokers, host:port[,host:port...]")
    add_flag(
        parser,
        "--security-protocol",
        default="PLAINTEXT",
        choices=SECURITY_PROTOCOLS,
        help="how to talk to the brokers",
    )
    add_flag(
        parser,
        "--sasl-mechanism",
        choices=SASL_MECHANISMS,
        help=f"SASL mechanism; the credentials are read from {USERNAME_ENV} and "
        f"{PASSWORD_ENV} only, never from flags",
    )
    add_flag(parser, "--ssl-cafile", help="CA bundle to verify the brokers' certificates")


def kafka_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> KafkaConfig:
    """The :class:`~stream.kafka_io.KafkaConfig` of parsed :func:`add_kafka_flags` flags plus
    the SASL credentials in ``environ`` (default: the process environment)."""
    from stream.kafka_io import PASSWORD_ENV, USERNAME_ENV, KafkaConfig

    env = os.environ if environ is None else environ
    servers = getattr(args, "bootstrap_servers", None)
    if not servers:
        raise ConfigError(f"Kafka needs --bootstrap-servers (or {env_name('--bootstrap-servers')})")
    return KafkaConfig(
        bootstrap_servers=servers,
        security_protocol=getattr(args, "security_protocol", None) or "PLAINTEXT",
        sasl_mechanism=getattr(args, "sasl_mechanism", None),
        sasl_username=env.get(USERNAME_ENV) or None,
        sasl_password=env.get(PASSWORD_ENV) or None,
        ssl_cafile=getattr(args, "ssl_cafile", None),
    )


def set_flag_default(
    parser: argparse.ArgumentParser, flag: str, default: Any, *, help: str
) -> None:
    """Give ``flag``, added earlier through :func:`add_flag`, another default and help text in
    this parser alone (``REQCAST_<FLAG>`` still wins when set)."""
    var = env_name(flag)
    for action in parser._actions:
        if flag in action.option_strings:
            if var not in os.environ:
                action.default = default
            action.help = f"{help} (default: {default}) [env {var}]"
            return
    raise ValueError(f"no flag {flag} in this parser")


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


def add_metrics_flags(parser: argparse.ArgumentParser, port: int) -> None:
    """``--metrics-port`` (default ``port``) and ``--metrics-host`` of a service's /metrics."""
    from stream.metrics import METRICS_HOST

    add_flag(parser, "--metrics-port", type=int, default=port, help="port of /metrics (0: off)")
    add_flag(
        parser,
        "--metrics-host",
        default=METRICS_HOST,
        help="address /metrics listens on (the default, every interface, suits a container; "
        "127.0.0.1 keeps it to the host)",
    )
