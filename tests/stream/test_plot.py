"""``reqcast plot``: each plot from tiny generated inputs, and one-line errors for missing ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from predictor.artifacts import save_artifact
from predictor.errors import InputError
from predictor.forecast import NextRequestForecast
from predictor.load import LOAD_QUANTITIES
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from stream.cli import main
from stream.plots import plot_error_by_horizon, plot_forecasts, plot_training
from trainer.train import TrainConfig, train_forecaster

PNG = b"\x89PNG\r\n\x1a\n"
BIN_S = 60.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trace, forecasts of it (next request and load), a benchmark JSON and a model dir."""
    root = tmp_path_factory.mktemp("plot")
    trace_path = write_trace(synthesize(600, seed=4), root / "trace.csv")
    df, _ = load_trace(trace_path)
    lines = []
    for model, scale in (("lstm", 1.0), ("dlinear", 1.3)):
        for stream, part in df.groupby("model"):
            for ts in part["timestamp_s"].to_numpy()[:-1]:
                fc = NextRequestForecast(
                    stream=str(stream),
                    model=model,
                    model_version=1,
                    event_timestamp_s=float(ts),
                    gap_s=5.0 * scale,
                    gap_interval_s=(1.0, 20.0 * scale),
                    request_tokens=300.0 * scale,
                    request_tokens_interval=(50.0, 1500.0),
                    response_tokens=200.0,
                    response_tokens_interval=(20.0, 600.0),
                    confidence=0.8,
                )
                lines.append(fc.to_dict())
    first = int(df["timestamp_s"].min() // BIN_S)
    last = int(df["timestamp_s"].max() // BIN_S)
    for k in range(first, last):
        for model in ("lstm", "dlinear"):
            horizons = []
            for h in (1, 6):
                entry: dict = {"horizon_bins": h, "bin_start": (k + h) * BIN_S}
                entry.update({q: 0.3 * (c + 1) for c, q in enumerate(LOAD_QUANTITIES)})
                entry["interval"] = {
                    q: [0.1 * (c + 1), 0.6 * (c + 1)] for c, q in enumerate(LOAD_QUANTITIES)
                }
                horizons.append(entry)
            lines.append(
                {
                    "kind": "load",
                    "stream": "all",
                    "model": model,
                    "bin_s": BIN_S,
                    "bin_start": (k + 1) * BIN_S,
                    "horizons": horizons,
                }
            )
    forecasts = root / "forecasts.jsonl"
    forecasts.write_text("".join(json.dumps(m) + "\n" for m in lines))

    results = []
    for h in (1, 6, 30):
        for model, kind, base in (
            ("lstm", "model", 1.0),
            ("dlinear", "model", 1.1),
            ("last_value", "baseline", 1.2),
            ("mean_6", "baseline", 1.4),
        ):
            for q in LOAD_QUANTITIES:
                results.append(
                    {
                        "task": "load",
                        "target": q,
                        "horizon": h,
                        "model": model,
                        "kind": kind,
                        "mae": base * (1 + h / 10),
                        "smape": 0.5 + h / 100,
                        "coverage": 0.8,
                        "n": 100 - h,
                    }
                )
    bench = root / "bench.json"
    bench.write_text(json.dumps({"task_config": {"bin_s": BIN_S}, "results": results}))

    model_dir = root / "models"
    rng = np.random.default_rng(0)
    series = [np.exp(rng.normal(1.0, 0.5, size=(300, 3)))]
    for task, horizon in (("next_request", 1), ("load", 4)):
        cfg = TrainConfig("dlinear", seq_len=8, horizon=horizon, epochs=2, batch_size=32)
        result = train_forecaster(series, cfg, progress=False)
        save_artifact(
            result.forecaster, model_dir, preset="test", task=task, extra=result.metadata()
        )
    return {"trace": trace_path, "forecasts": forecasts, "bench": bench, "models": model_dir}


def test_forecast_plots_with_actuals(inputs: dict[str, Path], tmp_path: Path) -> None:
    df, _ = load_trace(inputs["trace"])
    paths = plot_forecasts(inputs["forecasts"], tmp_path, trace=df, last=100)
    names = sorted(p.name for p in paths)
    assert names == [
        "forecast_load_all.png",
        "forecast_next_request_ChatGPT.png",
        "forecast_next_request_GPT-4.png",
    ]
    for p in paths:
        _assert_png(p)


def test_error_and_training_plots(inputs: dict[str, Path], tmp_path: Path) -> None:
    _assert_png(plot_error_by_horizon(inputs["bench"], tmp_path))
    _assert_png(plot_training(inputs["models"], tmp_path))


def test_plot_command_all(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plots"
    argv = [
        "plot",
        "--out",
        str(out),
        "--forecasts",
        str(inputs["forecasts"]),
        "--bench-json",
        str(inputs["bench"]),
        "--model-dir",
        str(inputs["models"]),
        "--horizon",
        "6",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert {Path(p).name for p in printed} == {
        "forecast_next_request_ChatGPT.png",
        "forecast_next_request_GPT-4.png",
        "forecast_load_all.png",
        "error_by_horizon.png",
        "training_curves.png",
    }
    for p in printed:
        _assert_png(Path(p))


@pytest.mark.parametrize(
    ("kind", "flags", "message"),
    [
        ("error", [], "--bench-json is required"),
        ("error", ["--bench-json", "nope.json"], "benchmark file nope.json not found"),
        ("training", ["--model-dir", "no-models"], "model directory no-models not found"),
        ("forecast", ["--forecasts", "none.jsonl"], "forecasts file none.jsonl not found"),
    ],
)
def test_missing_inputs_are_one_line(
    kind: str,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "--kind", kind, "--out", "p", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reqcast plot: error: ") and message in err[0]


def test_all_without_inputs_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "--out", "p"]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_empty_forecasts_file(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text(json.dumps({"kind": "other"}) + "\n")
    with pytest.raises(InputError, match="no next_request or load"):
        plot_forecasts(path, tmp_path)
