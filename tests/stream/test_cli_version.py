"""``reqcast --version``: the installed version, else the checkout's ``pyproject.toml``."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from stream import cli

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _pyproject_version() -> str:
    found = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.MULTILINE)
    assert found
    return found.group(1)


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_package_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([flag]) == 0
    assert capsys.readouterr().out.strip() == f"reqcast {metadata.version('reqcast')}"


def test_version_without_an_installed_package_reads_pyproject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"reqcast {_pyproject_version()}"


def test_version_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "--version" in capsys.readouterr().out
