"""What a first ``reqcast run`` shows: training progress per model, expected conditions at
INFO, a readable summary, ``--keep-serving``, and a quiet wait for a broker that is not there."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from predictor.errors import BrokerError
from stream.cli import main
from stream.commands import run as run_command
from stream.kafka_admin import wait_for_broker
from stream.kafka_io import KafkaConfig
from stream.metrics import Metrics
from stream.summary import Timings, forecasts_table, render_summary
from trainer.guard import Decision

ROOT = Path(__file__).resolve().parents[2]
QUICK = [
    "--events",
    "400",
    "--train-rows",
    "1500",
    "--seq-len",
    "16",
    "--first-epochs",
    "1",
    "--rate",
    "0",
    "--no-refit",
    "--status-interval",
    "0",
    "--torch-threads",
    "1",
    "--device",
    "cpu",
]


CLI = [sys.executable, "-m", "stream.cli", "run", "--metrics-host", "127.0.0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQCAST_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def signals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``reqcast run`` in-process: its metrics in a registry of their own (the global one takes
    each name once), its SIGINT/SIGTERM handlers replaced by the old ones after."""
    monkeypatch.setattr(
        run_command,
        "service_metrics",
        lambda n: Metrics(registry=CollectorRegistry(), max_exported_streams=n),
    )
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_first_run_progress_levels_and_summary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    signals: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    assert main(["run", *QUICK, "--metrics-port", "0"]) == 0
    out, err = capsys.readouterr()
    # 1. progress: said up front, then one line as each model starts and one as it ends
    assert "training first models (next request and load) on 1,500 events; " in err
    for task in ("next-request", "load"):
        for model in ("lstm", "dlinear"):
            lines = [ln.split() for ln in err.splitlines() if ln.split()[:2] == [task, model]]
            assert len(lines) == 2, err
            assert lines[0][2] == "training"
            assert lines[1][2].endswith("/1") or lines[1][2].endswith("/10"), lines[1]
            assert lines[1][3:5] == ["epochs", "in"]
    # 2. no models yet is expected: information; serving lines name the task and the folder
    missing = [r for r in caplog.records if "no lstm artifact" in r.getMessage()]
    assert missing and all(r.levelno == logging.INFO for r in missing)
    serving = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving lstm")]
    assert len(serving) == 2, serving
    assert serving[0].startswith("serving lstm version 1 for next-request (out/models/cpu_lstm_")
    assert serving[1].startswith("serving lstm version 1 for load (out/models/cpu_lstm_")
    assert serving[0] != serving[1]
    # 3. the summary: a table, no raw dict, timings, the files
    assert '{"' not in out
    assert "=== reqcast run: 400 events in " in out
    assert "first models trained in " in out and " s in all ===" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("model ") and "next-request" in ln)
    assert header.split()[:3] == ["model", "next-request", "load"]
    lstm = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == ["lstm"])
    assert lstm[1] == "400"  # the first table: forecasts per model
    assert "forecasts:    out/forecasts.jsonl" in out
    assert "models:       out/models" in out
    assert "plots:        reqcast plot" in out


def test_second_run_trains_nothing_and_says_no_training_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signals: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", *QUICK, "--no-load", "--metrics-port", "0"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "training first models" not in err
    assert "first models trained" not in out
    assert "=== reqcast run: 400 events in " in out


def test_summary_table_is_aligned_and_takes_extra_sections() -> None:
    text = render_summary(
        "reqcast run",
        Timings(20_000, 12.2, 41.0, 58.3),
        forecasts_table(
            {"dlinear": 20_000, "lstm": 20_000, "best": 20_000},
            {"dlinear": 300, "lstm": 300, "best": 300},
            {"lstm": {"coverage": "79%"}},
        ),
        {"forecasts": "out/forecasts.jsonl"},
        facts={"source": "synthetic"},
        sections={"ensemble weights": {"lstm": 0.6123, "dlinear": 0.3877}},
    )
    lines = text.splitlines()
    assert lines[0] == (
        "=== reqcast run: 20,000 events in 12.2 s (1,639/s); first models trained in 41.0 s; "
        "58.3 s in all ==="
    )
    table = lines[lines.index("forecasts (rolling accuracy over the last scored forecasts):") + 1 :]
    assert table[0] == "model    next-request  load  coverage"
    assert table[1] == "dlinear        20,000   300         -"
    assert table[2] == "lstm           20,000   300       79%"
    weights = lines[lines.index("ensemble weights:") + 1 :][:2]
    assert weights == ["lstm     0.612", "dlinear  0.388"]
    assert "  forecasts: out/forecasts.jsonl" in lines
    assert "{" not in text


def test_refit_rejected_as_worse_is_info_other_rejections_stay_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    from trainer.refit import RefitWorker

    worker = SimpleNamespace(decisions=[], metrics=SimpleNamespace(swaps=MagicMock()))
    with caplog.at_level(logging.INFO, logger="trainer.refit"):
        RefitWorker._record(worker, Decision("lstm", False, "worse", 0.3, 0.2))  # type: ignore[arg-type]
        RefitWorker._record(worker, Decision("lstm", False, "non_finite_weights"))  # type: ignore[arg-type]
    assert [(r.levelname, "worse" in r.getMessage()) for r in caplog.records] == [
        ("INFO", True),
        ("WARNING", False),
    ]


def test_waiting_for_a_missing_broker_quiets_kafka_python(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = logging.getLogger("kafka")
    before = kafka.level
    with caplog.at_level(logging.DEBUG), pytest.raises(BrokerError, match="no Kafka broker"):
        wait_for_broker(KafkaConfig(f"127.0.0.1:{_free_port()}"), timeout_s=1.5)
    assert kafka.level == before
    ours = [r for r in caplog.records if not r.name.startswith("kafka")]
    assert [r.getMessage().split(" for ")[0] for r in ours] == ["waiting up to 1.5 s"]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kafka")] == []


def test_run_against_a_missing_broker_says_two_lines(tmp_path: Path) -> None:
    port = _free_port()
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "--bootstrap-servers", f"127.0.0.1:{port}", "--broker-wait", "2"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert f"waiting up to 2 s for the Kafka broker at 127.0.0.1:{port}" in lines[0]
    assert lines[1].startswith(f"reqcast run: error: no Kafka broker answered at 127.0.0.1:{port}")
    assert time.monotonic() - started < 30  # it waited before training, not after


def test_keep_serving_keeps_metrics_up_until_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*CLI, *QUICK, "--no-load", "--keep-serving", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        said = []
        for line in proc.stdout:
            said.append(line)
            if "until Ctrl-C" in line:
                break
        assert said and said[-1].strip() == (
            f"replay done; still serving http://127.0.0.1:{port}/metrics until Ctrl-C"
        ), "".join(said)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended instead of serving on"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"reqcast_forecasts_published_total" in r.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_ensemble_weights_table_puts_the_heaviest_expert_first() -> None:
    import numpy as np

    from stream.summary import ensemble_table

    weights = np.array([[0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    lines = ensemble_table(["lstm", "mean_6", "kalman"], weights).splitlines()
    assert lines[0].split() == ["expert", "requests/s", "req", "tokens/s", "resp", "tokens/s"]
    assert [line.split()[0] for line in lines[1:]] == ["mean_6", "lstm", "kalman"]
    assert lines[1].split()[1:] == ["0.700", "0.600", "0.400"]
    assert ensemble_table(["lstm"], None) == "(none yet)"
