"""``reqcast train`` and ``reqcast run`` keep their models apart: a model trained by hand
in ``models/`` is never served by the next ``reqcast run`` unless it is named."""

from __future__ import annotations

import os

import pytest

from stream.cli import build_parser


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def _model_dir(command: str) -> str:
    return str(build_parser([command]).parse_args([command]).model_dir)


def test_run_serves_its_own_folder_not_trains() -> None:
    assert _model_dir("train") == "models"
    assert _model_dir("run") == "out/models"
    assert _model_dir("predict") == "models"  # predict reads what train wrote


def test_run_help_names_its_default() -> None:
    parser = build_parser(["run"])
    sub = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    (action,) = [a for a in sub._actions if "--model-dir" in a.option_strings]
    assert "(default: out/models)" in str(action.help) and "REQCAST_MODEL_DIR" in str(action.help)


def test_the_environment_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQCAST_MODEL_DIR", "shared-models")
    assert _model_dir("run") == "shared-models"
    assert _model_dir("train") == "shared-models"


def test_a_flag_still_wins() -> None:
    args = build_parser(["run"]).parse_args(["run", "--model-dir", "models"])
    assert args.model_dir == "models"
