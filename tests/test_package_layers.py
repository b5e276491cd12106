"""The package rules of docs/design.md, checked on every import statement (function-level
ones too): what ``predictor``, ``trainer``, ``stream.commands``, ``stream.app`` and
``stream.bench`` may import, and who may import the commands and the benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: imports that break a rule on purpose, until the code they wait for moves
KNOWN: set[tuple[str, str]] = set()


def _imports(package: str) -> list[tuple[str, str]]:
    """``(file, imported module)`` for every import in ``package``'s files."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out += [(rel, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out.append((rel, node.module))
                # ``from stream import bench`` imports the subpackage
                out += [(rel, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _broken(package: str, forbidden: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        (f, m)
        for f, m in _imports(package)
        if any(_under(m, p) for p in forbidden)
        and not any(f == kf and _under(m, km) for kf, km in KNOWN)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("predictor", ("trainer", "stream", "kafka", "prometheus_client", "argparse")),
        ("trainer", ("stream", "kafka", "prometheus_client", "argparse")),
    ],
)
def test_the_core_and_the_trainer_import_only_downwards(
    package: str, forbidden: tuple[str, ...]
) -> None:
    assert _broken(package, forbidden) == []


def test_only_the_cli_imports_the_commands() -> None:
    found = [
        (f, m)
        for f, m in _broken("stream", ("stream.commands",))
        if not f.startswith("stream/commands/") and f != "stream/cli.py"
    ]
    assert found == []


def test_only_the_bench_command_imports_the_benchmarks() -> None:
    found = [
        (f, m)
        for f, m in _broken("stream", ("stream.bench",))
        if not f.startswith("stream/bench/") and f != "stream/commands/bench.py"
    ]
    assert found == []


@pytest.mark.parametrize(
    "path",
    ["stream/kafka_io.py", "stream/kafka_batch.py", "stream/kafka_admin.py", "stream/transport.py"],
)
def test_the_kafka_adapters_know_nothing_of_the_command_line(path: str) -> None:
    """They take a built ``KafkaConfig``; ``stream.cliutil`` turns the flags into one."""
    imported = [m for f, m in _imports("stream") if f == path]
    assert [m for m in imported if _under(m, "argparse") or _under(m, "stream.cliutil")] == []
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "argparse" not in text and "cliutil" not in text  # not even in a docstring


def test_commands_do_not_import_each_other() -> None:
    """A command module imports what it shares with others from :mod:`stream.app` (the
    assembly) or the shared flag modules (``stream/serve_flags.py``, ``stream/refit_flags.py``),
    never another command."""
    assert _broken("stream/commands", ("stream.commands",)) == []


def test_the_assembly_reads_no_flags() -> None:
    """``stream.app`` takes typed settings: it imports neither argparse nor the commands."""
    imports = [(f, m) for f, m in _imports("stream") if f == "stream/app.py"]
    assert ("stream/app.py", "stream.service") in imports  # the assembly lives there
    assert [m for _, m in imports if _under(m, "argparse") or _under(m, "stream.commands")] == []
