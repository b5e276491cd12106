"""Reading ``reqcast`` command lines out of deployment files and parsing them with the real CLI.

>>> shell_invocations("set -e\\nexec reqcast replay --no-progress 2>&1 | tee log")
[['replay', '--no-progress']]
>>> shell_invocations("reqcast synth --rows 200000 && reqcast train --epochs 5")
[['synth', '--rows', '200000'], ['train', '--epochs', '5']]
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from stream.cli import build_parser
from stream.cliutil import env_name
from stream.kafka_io import PASSWORD_ENV, USERNAME_ENV

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

#: environment variables read outside the flags (SASL credentials)
EXTRA_ENV = {USERNAME_ENV, PASSWORD_ENV}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


_SHELL_BREAK = set("();<>|&")


def shell_invocations(script: str) -> list[list[str]]:
    """The argument lists of every ``reqcast`` command in a shell script (line by line)."""
    found = []
    for line in script.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
        for i, tok in enumerate(tokens):
            if tok != "reqcast":
                continue
            args = []
            rest = tokens[i + 1 :]
            for j, t in enumerate(rest):
                following = rest[j + 1] if j + 1 < len(rest) else ""
                if set(t) <= _SHELL_BREAK or (t.isdigit() and following[:1] in ("<", ">")):
                    break  # an operator, or a redirection such as 2>&1
                args.append(t)
            found.append(args)
    return found


def invocations(entrypoint: Any, command: Any) -> list[list[str]]:
    """``reqcast`` argument lists of a container whose image's ENTRYPOINT is ``reqcast``."""
    if entrypoint:
        assert list(entrypoint)[-1] == "-c", f"unexpected entrypoint {entrypoint}"
        script = command[0] if isinstance(command, list) else command
        return shell_invocations(script)
    if isinstance(command, str):
        command = shlex.split(command)
    return [list(command)] if command else []


def subparser(cmd: str) -> argparse.ArgumentParser:
    parser = build_parser([cmd])
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[cmd]  # type: ignore[no-any-return]
    raise AssertionError(f"no subcommand {cmd}")


def env_vars_of(cmd: str) -> set[str]:
    """``REQCAST_*`` names that ``reqcast cmd`` reads: one per flag."""
    return {
        env_name(opt)
        for action in subparser(cmd)._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }


def effective_args(argv: list[str], env: dict[str, str], where: str) -> argparse.Namespace:
    """Parse ``reqcast ARGV`` exactly as the CLI would with ``env`` as the environment."""
    # argparse would accept an abbreviation; a deployment file should spell flags out
    flags = {t.split("=")[0] for t in argv[1:] if t.startswith("--")}
    known = {opt for a in subparser(argv[0])._actions for opt in a.option_strings}
    assert flags <= known, f"{where}: `reqcast {argv[0]}` has no flag {flags - known}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        parser = build_parser(argv[:1])
        try:
            return parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `reqcast {shlex.join(argv)}` does not parse (see stderr)")


def check_env(names: set[str], commands: list[str], where: str) -> None:
    known = set().union(*(env_vars_of(c) for c in commands)) | EXTRA_ENV
    reqcast_names = {n for n in names if n.startswith("REQCAST_")}
    assert reqcast_names <= known, f"{where}: no such flag for {commands}: {reqcast_names - known}"
