"""The README's shell commands run as written.

Every line of the README's fenced ``sh``/``bash`` blocks (continuation lines joined,
comments dropped) runs with ``bash`` in one scratch folder, block after block, so that a
command may use what an earlier one wrote (``trace.csv``, ``models/``). Each must exit 0.
``reqcast`` resolves to this checkout. Commands are not edited; they are made quick
through ``REQCAST_*`` environment variables for flags the command does not name (smaller
samples and windows, one first epoch, no refit, replay at full speed, a free metrics port).

Commands that need what a test cannot have offline and fast are skipped, by prefix:
:data:`SKIP` says why for each. A README command that matches no prefix runs.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: command prefix -> why a test does not run it
SKIP: dict[str, str] = {
    "python3 -m venv": "installs the project into a new virtual environment (network, minutes)",
    "python -m pytest": "the test suite itself",
    "pip install": "network",
    "broker=": "starts a Kafka-protocol broker",
    '"$broker"': "starts a Kafka-protocol broker",
    "python -c": "reads from a Kafka broker",
    "reqcast replay": "needs a Kafka broker",
    "reqcast serve": "needs a Kafka broker",
    "reqcast bench": "benchmarks run for minutes (and bench stream needs a broker)",
    "reqcast plot --kind error": "needs the results of reqcast bench accuracy, skipped above",
    "reqcast run --data-path ../shared": "the full Azure trace: minutes, and data outside the repo",
}

#: defaults for flags the README's commands leave out, so that they finish in seconds
QUICK_ENV = {
    "REQCAST_SAMPLE_SIZE": "1500",
    "REQCAST_SEQ_LEN": "16",
    "REQCAST_FIRST_EPOCHS": "1",
    "REQCAST_TRAIN_ROWS": "1500",
    "REQCAST_NO_REFIT": "1",
    "REQCAST_NO_LOAD": "1",
    "REQCAST_RATE": "0",
    "REQCAST_STATUS_INTERVAL": "0",
    "REQCAST_NO_PROGRESS": "1",
    "REQCAST_DEVICE": "cpu",
    "REQCAST_TORCH_THREADS": "1",
}


def readme_commands(text: str) -> list[str]:
    """The shell commands of the fenced ``sh``/``bash`` blocks, one per logical line."""
    commands = []
    for block in re.findall(r"^```(?:sh|bash|shell)\s*\n(.*?)^```", text, re.M | re.S):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        logical: list[str] = []
        for line in joined.splitlines():
            if logical and _open_quote(logical[-1]):  # a quoted argument over several lines
                logical[-1] += "\n" + line
            elif line.strip():
                logical.append(line.strip())
        for cmd in logical:
            cmd = _without_comment(cmd)
            if cmd:
                commands.append(cmd)
    return commands


def _open_quote(cmd: str) -> bool:
    try:
        shlex.split(cmd, comments=True)
        return False
    except ValueError:
        return True


def _without_comment(cmd: str) -> str:
    """``reqcast inspect trace.csv   # what it kept`` -> ``reqcast inspect trace.csv``."""
    return re.sub(r"\s+#.*$", "", cmd).strip() if "\n" not in cmd else cmd.strip()


def skipped(cmd: str) -> str | None:
    return next((why for prefix, why in SKIP.items() if cmd.startswith(prefix)), None)


def test_the_parser_finds_commands_and_joins_continuations() -> None:
    text = (
        "x\n```sh\nreqcast a --x 1 \\\n  --y 2   # note\n\nreqcast b\n```\n"
        '```python\nprint(1)\n```\n```bash\npython -c "a\nb"\n```\n'
    )
    assert readme_commands(text) == ["reqcast a --x 1 --y 2", "reqcast b", 'python -c "a\nb"']


def test_every_skip_prefix_matches_a_readme_command() -> None:
    """The skip list holds no stale entry (each one still skips something)."""
    commands = readme_commands(README.read_text(encoding="utf-8"))
    for prefix in SKIP:
        assert any(c.startswith(prefix) for c in commands), prefix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_commands(commands: list[str], tmp_path: Path) -> tuple[list[str], list[str]]:
    """Run the commands not skipped, in order, in one scratch folder; (ran, failures)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "reqcast"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stream.cli "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    env |= QUICK_ENV
    env["REQCAST_METRICS_PORT"] = str(_free_port())
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["MPLBACKEND"] = "Agg"
    ran, failures = [], []
    for cmd in commands:
        if skipped(cmd):
            continue
        began = time.monotonic()
        proc = subprocess.run(
            ["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        ran.append(cmd)
        print(f"{time.monotonic() - began:6.1f}s exit {proc.returncode}  {cmd}")
        if proc.returncode != 0:
            failures.append(f"{cmd}\n  exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return ran, failures


def test_a_failing_command_is_reported(tmp_path: Path) -> None:
    commands = ["reqcast --version", "reqcast inspect no-such-trace.csv", "reqcast bench x"]
    ran, failures = run_commands(commands, tmp_path)
    assert ran == commands[:2]  # bench: skipped
    (failure,) = failures
    assert failure.startswith("reqcast inspect no-such-trace.csv\n  exit 2")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    """Measured: about 40 s on two shared cores, most of it the two trainings."""
    ran, failures = run_commands(readme_commands(README.read_text(encoding="utf-8")), tmp_path)
    assert any(c.startswith("reqcast train") for c in ran)
    assert any(c.startswith("reqcast predict") for c in ran)
    assert not failures, "README commands failed:\n" + "\n".join(failures)
