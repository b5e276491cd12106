"""Result plots as PNG files: forecasts against actuals, error by horizon, training curves.

Figures are drawn with matplotlib's Agg canvas on :class:`~matplotlib.figure.Figure`
objects (no pyplot, no global state, no display needed).

- :func:`plot_forecasts` reads a forecasts JSON Lines file written by ``reqcast run``.
  Next-request lines: per stream, the predicted gap and token counts with their
  80 % band against the next request that actually came. The actual gap is the
  difference between consecutive forecasts' ``event_timestamp`` within a stream;
  actual token counts come from the trace when one is given. Load lines: per
  stream and quantity, the forecast of one horizon with its band at the bin it
  targets, and the realised rate of that bin from the trace when one is given.
- :func:`plot_error_by_horizon` reads ``bench accuracy --json``: MAE (and sMAPE
  when present) against the horizon, one line per model and baseline, a panel
  per quantity.
- :func:`plot_training` reads the artifacts' ``meta.json``: training and
  validation loss per epoch of the newest version of each model and task.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from predictor.artifacts import list_artifacts
from predictor.errors import ConfigError, InputError
from predictor.features import QUANTITIES
from predictor.load import LOAD_QUANTITIES, bin_load
from predictor.streams import ALL, stream_names
from predictor.tasks import LOAD, NEXT_REQUEST

#: y-axis threshold below which a next-request panel is linear (heavy tails above)
_LINTHRESH = {"gap_s": 0.1, "request_tokens": 1.0, "response_tokens": 1.0}


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    FigureCanvasAgg(fig)  # draw with Agg whatever the default backend
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / name
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ConfigError(f"cannot write plot to {out_dir}: {exc.strerror or exc}") from exc
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "stream"


def _colors(names: Iterable[str]) -> dict[str, str]:
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


# -- forecasts ------------------------------------------------------------------------------


def read_forecasts(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Next-request and load forecast lines of a JSON Lines file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"forecasts file {p} not found: write one with reqcast run --output, or pass --forecasts"
        )
    nxt, load = [], []
    try:
        with p.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{p}:{i}: not a JSON line ({exc})") from exc
                kind = msg.get("kind") if isinstance(msg, dict) else None
                if kind == NEXT_REQUEST:
                    nxt.append(msg)
                elif kind == LOAD:
                    load.append(msg)
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from exc
    if not nxt and not load:
        raise InputError(f"{p} holds no next_request or load forecasts")
    return nxt, load


def _trace_streams(trace: pd.DataFrame, streams: set[str]) -> dict[str, pd.DataFrame]:
    """The trace's rows per stream, in time order, keyed as the forecasts name streams."""
    key = "none" if streams <= {ALL} else "model"
    names = stream_names(trace, key)
    return {
        str(n): part.sort_values("timestamp_s", kind="stable")
        for n, part in trace.groupby(names, sort=False)
    }


def _next_actuals(lines: list[dict[str, Any]], events: pd.DataFrame | None) -> np.ndarray:
    """Actual gap, request and response tokens ``[n, 3]`` of the request after each forecast.

    ``lines`` are one model's forecasts of one stream in time order. From the trace,
    forecast ``k`` sits at the first row with its ``event_timestamp`` plus the number
    of earlier forecasts with the same timestamp (ties come in order).
    """
    ts = np.array([m["event_timestamp"] for m in lines], dtype=np.float64)
    out = np.full((len(lines), 3), np.nan)
    if events is None:
        out[:-1, 0] = np.diff(ts)
        return out
    ev_ts = events["timestamp_s"].to_numpy(np.float64)
    req = events["request_tokens"].to_numpy(np.float64)
    resp = events["response_tokens"].to_numpy(np.float64)
    seen: dict[float, int] = defaultdict(int)
    for k, t in enumerate(ts):
        pos = int(np.searchsorted(ev_ts, t, side="left")) + seen[t]
        seen[t] += 1
        if pos + 1 < len(ev_ts) and ev_ts[pos] == t:
            out[k] = (ev_ts[pos + 1] - t, req[pos + 1], resp[pos + 1])
    return out


#: which forecast's band is drawn: ``best`` when present (what serving recommends)
RECOMMENDED = "best"
#: line styles of the models' point forecasts, so that none hides another
_STYLES = ("-", "--", ":", "-.")


def recommended(models: Iterable[str]) -> str:
    """The model whose 80 % band a plot draws: ``best`` if there, else the first."""
    names = list(models)
    return RECOMMENDED if RECOMMENDED in names else names[0]


def _styles(models: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Colour, line style, width and z-order per model: the recommended one solid and
    widest underneath, the others dashed or dotted on top of it."""
    names = list(models)
    rec = recommended(names)
    others = iter(_STYLES[1:] * len(names))
    out = {}
    for i, n in enumerate(names):
        mine = n == rec
        out[n] = {
            "color": f"C{i % 10}",
            "ls": "-" if mine else next(others),
            "lw": 1.8 if mine else 1.1,
            "zorder": 2 if mine else 3 + i,
        }
    return out


def _lines(
    ax: Axes,
    x: np.ndarray,
    point: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    name: str,
    style: dict[str, Any],
    band: bool,
) -> None:
    ax.plot(x, point, label=f"{name} forecast", **style)
    if band:
        ax.fill_between(
            x, lo, hi, color=style["color"], alpha=0.18, lw=0, zorder=1, label=f"{name} 80 % band"
        )


def _log_axis(ax: Axes, values: list[np.ndarray], linthresh: float) -> None:
    """A log y axis that starts just under the smallest value drawn; symlog with the linear
    part no wider than that value when zeros are drawn too (gaps of 0 s, for one)."""
    flat = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    positive = flat[flat > 0]
    if not len(positive):
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(bottom=0)
        return
    low = float(positive.min())
    if (flat <= 0).any():
        ax.set_yscale("symlog", linthresh=low, linscale=0.6)
        ax.set_ylim(bottom=0)
    else:
        ax.set_yscale("log")
        ax.set_ylim(bottom=low / 1.5)


def _legend_below(fig: Figure, axes: Iterable[Axes]) -> None:
    """One legend for the figure, below the panels, clear of the data."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="outside lower center", ncol=4, fontsize=8
        )


def _plot_next_stream(
    stream: str, by_model: dict[str, list[dict[str, Any]]], events: pd.DataFrame | None, last: int
) -> Figure:
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, squeeze=False)[:, 0]
    styles = _styles(by_model)
    rec = recommended(by_model)
    drawn: list[list[np.ndarray]] = [[] for _ in QUANTITIES]
    actual_drawn = False
    for model, lines in by_model.items():
        actual = _next_actuals(lines, events)[-last:]
        lines = lines[-last:]
        x = np.array([m["event_timestamp"] for m in lines], dtype=np.float64)
        for c, q in enumerate(QUANTITIES):
            point = np.array([m[q] for m in lines], dtype=np.float64)
            lo = np.array([m["interval"][q][0] for m in lines], dtype=np.float64)
            hi = np.array([m["interval"][q][1] for m in lines], dtype=np.float64)
            _lines(axes[c], x, point, lo, hi, model, styles[model], band=model == rec)
            drawn[c] += [point, *((lo, hi) if model == rec else ())]
            if not actual_drawn and np.isfinite(actual[:, c]).any():
                axes[c].plot(x, actual[:, c], "k.", ms=3, zorder=10, label="actual next request")
                drawn[c].append(actual[:, c])
        actual_drawn = True
    for c, q in enumerate(QUANTITIES):
        _log_axis(axes[c], drawn[c], _LINTHRESH[q])
        axes[c].set_ylabel(q)
    _legend_below(fig, axes)
    axes[-1].set_xlabel("time of the request the forecast follows (s)")
    note = "" if events is not None else " (actual tokens need --data-path)"
    fig.suptitle(f"Next request, stream {stream}: forecasts, {rec}'s 80 % band, actual{note}")
    return fig


def _plot_load_stream(
    stream: str,
    by_model: dict[str, list[dict[str, Any]]],
    events: pd.DataFrame | None,
    horizon: int,
    last: int,
) -> Figure | None:
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, squeeze=False)[:, 0]
    styles = _styles(by_model)
    rec = recommended(by_model)
    starts: list[float] = []
    bin_s = 0.0
    for model, lines in by_model.items():
        entries = [
            (m["bin_s"], e)
            for m in lines
            for e in m["horizons"]
            if int(e["horizon_bins"]) == horizon
        ][-last:]
        if not entries:
            continue
        bin_s = float(entries[0][0])
        x = np.array([e["bin_start"] for _, e in entries], dtype=np.float64)
        starts.extend(x.tolist())
        for c, q in enumerate(LOAD_QUANTITIES):
            point = np.array([e[q] for _, e in entries], dtype=np.float64)
            lo = np.array([e["interval"][q][0] for _, e in entries], dtype=np.float64)
            hi = np.array([e["interval"][q][1] for _, e in entries], dtype=np.float64)
            _lines(axes[c], x, point, lo, hi, model, styles[model], band=model == rec)
    if not starts:
        return None
    if events is not None and len(events):
        lo_s, hi_s = min(starts), max(starts)
        first, values = bin_load(
            events["timestamp_s"].to_numpy(),
            events["request_tokens"].to_numpy(),
            events["response_tokens"].to_numpy(),
            bin_s,
            start_s=lo_s,
            end_s=hi_s,
        )
        if len(first):
            for c in range(3):
                axes[c].step(
                    first, values[:, c], where="post", color="k", lw=0.8, zorder=10, label="actual"
                )
    for c, q in enumerate(LOAD_QUANTITIES):
        axes[c].set_ylabel(q)
    _legend_below(fig, axes)
    axes[-1].set_xlabel("start of the forecast bin (s)")
    note = "" if events is not None else " (actual load needs --data-path)"
    fig.suptitle(
        f"Load, stream {stream}: {horizon}-bin-ahead forecasts ({bin_s:g} s bins), "
        f"{rec}'s 80 % band{note}"
    )
    return fig


def forecast_figures(
    path: str | Path,
    trace: pd.DataFrame | None = None,
    horizon: int = 1,
    last: int = 300,
) -> list[tuple[str, Figure]]:
    """``(file name, figure)`` per stream and forecast kind; ``trace`` adds the actuals."""
    nxt, load = read_forecasts(path)
    figures = []
    for kind, lines in ((NEXT_REQUEST, nxt), (LOAD, load)):
        if not lines:
            continue
        groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for m in lines:
            groups[str(m["stream"])][str(m["model"])].append(m)
        per_stream = _trace_streams(trace, set(groups)) if trace is not None else {}
        for stream, by_model in sorted(groups.items()):
            events = per_stream.get(stream) if trace is not None else None
            if trace is not None and events is None:
                events = trace.iloc[:0]
            fig: Figure | None
            if kind == NEXT_REQUEST:
                for ls in by_model.values():
                    ls.sort(key=lambda m: m["event_timestamp"])
                fig = _plot_next_stream(stream, by_model, events, last)
            else:
                fig = _plot_load_stream(stream, by_model, events, horizon, last)
            if fig is not None:
                figures.append((f"forecast_{kind}_{_safe(stream)}.png", fig))
    if not figures:
        raise InputError(f"{path}: no forecasts at horizon {horizon} to plot")
    return figures


def plot_forecasts(
    path: str | Path,
    out_dir: str | Path,
    trace: pd.DataFrame | None = None,
    horizon: int = 1,
    last: int = 300,
) -> list[Path]:
    """One PNG per stream and forecast kind; ``trace`` (a loaded trace) adds the actuals."""
    out = Path(out_dir)
    return [_save(fig, out, name) for name, fig in forecast_figures(path, trace, horizon, last)]


def trace_matches(path: str | Path, trace: pd.DataFrame, share: float = 0.99) -> bool:
    """Whether ``trace`` is the one the forecasts in ``path`` were made on: at least
    ``share`` of the next-request forecasts follow a request of the trace at exactly
    their ``event_timestamp``, or, with load forecasts only, their bins lie in its span."""
    nxt, load = read_forecasts(path)
    ts = trace["timestamp_s"].to_numpy(np.float64)
    if not len(ts):
        return False
    if nxt:
        wanted = np.array([m["event_timestamp"] for m in nxt], dtype=np.float64)
        pos = np.clip(np.searchsorted(ts, wanted), 0, len(ts) - 1)
        return bool(np.mean(ts[pos] == wanted) >= share)
    starts = [float(m["bin_start"]) for m in load]
    return bool(ts[0] <= min(starts) and max(starts) <= ts[-1])


# -- error by horizon -----------------------------------------------------------------------


def read_bench(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"benchmark file {p} not found: write one with reqcast bench accuracy --json"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {p} as JSON: {exc}") from exc
    if not isinstance(report, dict) or not report.get("results"):
        raise InputError(f"{p} holds no benchmark results")
    return report


def plot_error_by_horizon(bench_json: str | Path, out_dir: str | Path) -> Path:
    """MAE (and sMAPE) against the horizon per forecaster, a column per quantity."""
    report = read_bench(bench_json)
    rows = [r for r in report["results"] if r.get("mae") is not None]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    task = LOAD if LOAD in tasks else tasks[0]
    rows = [r for r in rows if r["task"] == task]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    names = list(dict.fromkeys((r["model"], r["kind"]) for r in rows))
    metrics = ["mae", *(["smape"] if any(r.get("smape") is not None for r in rows) else [])]
    fig = Figure(figsize=(5 * len(targets), 4 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(targets), sharex=True, squeeze=False)
    colors = _colors(n for n, _ in names)
    for j, target in enumerate(targets):
        for model, kind in names:
            mine = sorted(
                (r for r in rows if r["target"] == target and r["model"] == model),
                key=lambda r: r["horizon"],
            )
            hs = [r["horizon"] for r in mine]
            style = {"ls": "-", "marker": "o"} if kind == "model" else {"ls": "--", "marker": "s"}
            for i, metric in enumerate(metrics):
                vals = [np.nan if r.get(metric) is None else r[metric] for r in mine]
                axes[i, j].plot(hs, vals, color=colors[model], ms=4, label=model, **style)
        for i, metric in enumerate(metrics):
            axes[i, j].set_title(
                f"{target}: {'sMAPE' if metric == 'smape' else 'MAE'}", fontsize=10
            )
            axes[i, j].grid(alpha=0.3)
        axes[-1, j].set_xlabel("horizon (bins)" if task == LOAD else "horizon")
        hs_all = sorted({r["horizon"] for r in rows})
        if len(hs_all) > 1 and hs_all[-1] / hs_all[0] >= 10:
            for i in range(len(metrics)):
                axes[i, j].set_xscale("log")
                axes[i, j].set_xticks(hs_all, [str(h) for h in hs_all])
    axes[0, 0].legend(fontsize=8)
    tc = report.get("task_config", {})
    bins = f", {tc['bin_s']:g} s bins" if task == LOAD and "bin_s" in tc else ""
    fig.suptitle(f"{task} error by horizon{bins} (solid: models, dashed: baselines)")
    return _save(fig, Path(out_dir), "error_by_horizon.png")


# -- training curves ------------------------------------------------------------------------


def plot_training(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Training (solid) and validation (dashed) loss per epoch, a panel per task."""
    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(f"model directory {root} not found: train models with reqcast train")
    newest: dict[tuple[str, str], Any] = {}
    for info in list_artifacts(root):  # oldest first: later versions replace earlier ones
        history = info.meta.get("training", {}).get("history")
        if isinstance(history, dict) and history.get("train"):
            newest[(info.task, info.model)] = info
    if not newest:
        raise InputError(f"no model artifacts with a training history in {root}")
    tasks = sorted({t for t, _ in newest})
    fig = Figure(figsize=(7 * len(tasks), 4.5), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    colors = _colors(sorted({m for _, m in newest}))
    for ax, task in zip(axes, tasks, strict=True):
        for (t, model), info in sorted(newest.items()):
            if t != task:
                continue
            training = info.meta["training"]
            hist = training["history"]
            label = f"{model} v{info.version}"
            ax.plot(
                _epochs(hist["train"]), hist["train"], color=colors[model], label=f"{label} train"
            )
            if hist.get("val"):
                ax.plot(
                    _epochs(hist["val"]),
                    hist["val"],
                    "--",
                    color=colors[model],
                    label=f"{label} val",
                )
            best = training.get("best_epoch")
            if best and hist.get("val") and best <= len(hist["val"]):
                ax.plot([best], [hist["val"][best - 1]], "o", color=colors[model], ms=5)
        ax.set_title(f"{task} models", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("pinball loss (scaled log space)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training curves in {root} (dot: best validation epoch, kept)")
    return _save(fig, Path(out_dir), "training_curves.png")


def _epochs(values: Sequence[float]) -> list[int]:
    return list(range(1, len(values) + 1))
