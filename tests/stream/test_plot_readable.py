"""``reqcast plot`` pictures readable by someone who did not draw them: one 80 % band (the
recommended forecast's), each model's line distinguishable, log axes that start near the
data, a legend clear of the data, actual values after a synthetic ``reqcast run``, and
notes (not errors) for plots that ``--kind all`` cannot draw."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from predictor.forecast import NextRequestForecast
from predictor.synth import synthesize, write_trace
from predictor.traces import load_trace
from stream.cli import main
from stream.plots import forecast_figures, trace_matches

MODELS = (("lstm", 1.0), ("dlinear", 1.3), ("best", 1.1))
BIN_S = 60.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REQCAST_"):
            monkeypatch.delenv(name)


def _forecasts(df: Any, path: Path, models: tuple[tuple[str, float], ...] = MODELS) -> Path:
    """Next-request forecasts after each request and load forecasts per bin, per model."""
    lines = []
    for model, scale in models:
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
                    request_tokens_interval=(50.0 * scale, 1500.0),
                    response_tokens=200.0,
                    response_tokens_interval=(20.0 * scale, 600.0),
                    confidence=0.8,
                )
                lines.append(fc.to_dict())
    first = int(df["timestamp_s"].min() // BIN_S)
    last = int(df["timestamp_s"].max() // BIN_S)
    for k in range(first, last - 1):
        for model, scale in models:
            entry: dict[str, Any] = {"horizon_bins": 1, "bin_start": (k + 1) * BIN_S}
            for q in ("requests_per_s", "request_tokens_per_s", "response_tokens_per_s"):
                entry[q] = 0.3 * scale
            entry["interval"] = {q: [0.1, 0.6 * scale] for q in entry if q != "horizon_bins"}
            entry["interval"].pop("bin_start")
            lines.append(
                {
                    "kind": "load",
                    "stream": "all",
                    "model": model,
                    "bin_s": BIN_S,
                    "bin_start": (k + 1) * BIN_S,
                    "horizons": [entry],
                }
            )
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    return path


@pytest.fixture(scope="module")
def run_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic trace as ``reqcast run`` makes it (rows, seed) and forecasts made on it."""
    root = tmp_path_factory.mktemp("readable")
    df, _ = load_trace(write_trace(synthesize(600, seed=3), root / "trace.csv"))
    return {"df": df, "forecasts": _forecasts(df, root / "forecasts.jsonl"), "root": root}


def _figures(run_like: dict[str, Any], trace: Any = None) -> dict[str, Figure]:
    figs = forecast_figures(run_like["forecasts"], trace=trace, last=100)
    return dict(figs)


def test_only_the_recommended_band_is_drawn(run_like: dict[str, Any]) -> None:
    for name, fig in _figures(run_like, run_like["df"]).items():
        for ax in fig.axes:
            bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
            assert len(bands) == 1, name
            assert bands[0].get_label() == "best 80 % band"


def test_each_model_line_is_distinguishable(run_like: dict[str, Any]) -> None:
    fig = _figures(run_like)["forecast_next_request_ChatGPT.png"]
    for ax in fig.axes:
        lines = {ln.get_label(): ln for ln in ax.get_lines() if "forecast" in ln.get_label()}
        assert set(lines) == {"lstm forecast", "dlinear forecast", "best forecast"}
        styles = {(ln.get_linestyle(), ln.get_color()) for ln in lines.values()}
        assert len({s for s, _ in styles}) == 3  # no two models share a line style
        # the recommended line is underneath: the others are drawn over it
        assert lines["lstm forecast"].get_zorder() > lines["best forecast"].get_zorder()
        assert lines["dlinear forecast"].get_zorder() > lines["best forecast"].get_zorder()


def test_log_axes_start_near_the_data(run_like: dict[str, Any]) -> None:
    # no actuals: every token value drawn is positive (bands from 20 up), so each axis is
    # logarithmic and starts within a factor of two under the smallest one (not at 0 with
    # an empty 0-to-10 stretch)
    fig = _figures(run_like)["forecast_next_request_ChatGPT.png"]
    _, req, resp = fig.axes
    for ax, floor in ((req, 50.0), (resp, 20.0)):
        bottom = ax.get_ylim()[0]
        assert ax.get_yscale() == "log"
        values = [v for ln in ax.get_lines() for v in ln.get_ydata() if v == v]
        low = min(min(values), floor)
        assert low / 2 <= bottom < low


def test_legend_is_outside_every_axes(run_like: dict[str, Any]) -> None:
    for name, fig in _figures(run_like, run_like["df"]).items():
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        assert all(ax.get_legend() is None for ax in fig.axes), name
        (legend,) = fig.legends
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), name


def test_actuals_are_drawn_when_a_trace_is_given(run_like: dict[str, Any]) -> None:
    figs = _figures(run_like, run_like["df"])
    for ax in figs["forecast_next_request_ChatGPT.png"].axes:
        assert "actual next request" in [ln.get_label() for ln in ax.get_lines()]
    for ax in figs["forecast_load_all.png"].axes:
        assert "actual" in [ln.get_label() for ln in ax.get_lines()]


def test_trace_matches_only_the_trace_it_was_made_on(run_like: dict[str, Any]) -> None:
    assert trace_matches(run_like["forecasts"], run_like["df"])
    other, _ = load_trace(write_trace(synthesize(600, seed=4), run_like["root"] / "other.csv"))
    assert not trace_matches(run_like["forecasts"], other)


def test_plot_after_a_synthetic_run_regenerates_the_actuals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reqcast run`` without --data-path replays a synthetic trace of --events plus
    --train-rows rows from --seed; ``reqcast plot`` makes the same one for the actuals."""
    from argparse import Namespace

    from stream.cliutil import load_from_args

    monkeypatch.chdir(tmp_path)
    df, _, _ = load_from_args(Namespace(data_path=None), synth_rows=800, synth_seed=5)
    (tmp_path / "out").mkdir()
    _forecasts(df.tail(300), tmp_path / "out" / "forecasts.jsonl", models=(("lstm", 1.0),))
    argv = ["plot", "--kind", "forecast", "--out", "p", "--synthetic-rows", "800", "--seed", "5"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "actual values from the synthetic" in err and "error:" not in err
    # another seed: not the trace the forecasts were made on; said, and no actuals invented
    assert main([*argv[:-1], "6"]) == 0
    assert "no actual values" in capsys.readouterr().err


def test_all_without_a_benchmark_is_a_note_not_an_error(
    run_like: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["plot", "--out", str(tmp_path), "--forecasts", str(run_like["forecasts"])]
    assert main([*argv, "--model-dir", str(tmp_path / "none")]) == 2  # named, so it must exist
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "skipping" not in err and "error:" not in err and "--bench-json is required" not in err
    (note,) = [line for line in err.splitlines() if "error-by-horizon" in line]
    assert note.startswith("reqcast plot: note: ") and "reqcast bench accuracy" in note
