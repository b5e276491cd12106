"""The end-of-run summary of ``reqcast run``: forecasts per model, timings, where the files are.

Plain text, no raw dicts: one aligned table of the forecasts each model published (and their
rolling accuracy where there is one), a line of timings, the files written, and any extra
sections the caller adds (``{"ensemble weights": {"lstm": 0.6, "dlinear": 0.4}}``).

>>> print(forecasts_table({"lstm": 20000, "best": 20000}, {"lstm": 300}))
model  next-request  load
lstm         20,000   300
best         20,000     -
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from predictor.scoring import RollingScores
from stream.status import fmt, load_table, summary_table

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from stream.tasks.load import LoadForecasting

#: where ``reqcast run`` writes its forecasts and ``reqcast plot`` reads them unless told
DEFAULT_FORECASTS = "out/forecasts.jsonl"

#: a section's body: text as it is, or ``name -> value`` lines (numbers to 3 significant digits)
Section = str | Mapping[str, object]


@dataclass(frozen=True)
class Timings:
    """Seconds spent: training first models (0: none trained), replaying, and in all."""

    events: int
    replay_s: float
    train_s: float
    wall_s: float

    def line(self) -> str:
        rate = self.events / max(self.replay_s, 1e-9)
        parts = [f"{self.events:,} events in {self.replay_s:.1f} s ({rate:,.0f}/s)"]
        if self.train_s > 0:
            parts.append(f"first models trained in {self.train_s:.1f} s")
        parts.append(f"{self.wall_s:.1f} s in all")
        return "; ".join(parts)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``rows`` under ``header``, the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        cells = [f"{r[0]!s:<{widths[0]}}"] + [
            f"{c!s:>{w}}" for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def forecasts_table(
    next_request: Mapping[str, int],
    load: Mapping[str, int] | None = None,
    accuracy: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """One row per model: next-request forecasts, load forecasts (when ``load`` is given) and
    the columns of ``accuracy[model]`` (preformatted, ``-`` where a model has none)."""
    models = list(next_request) + [m for m in (load or {}) if m not in next_request]
    columns: list[str] = []
    for cells in (accuracy or {}).values():
        columns += [c for c in cells if c not in columns]
    header = ["model", "next-request"] + (["load"] if load is not None else []) + columns
    rows = []
    for m in models:
        row = [m, _count(next_request.get(m))]
        if load is not None:
            row.append(_count(load.get(m)))
        row += [(accuracy or {}).get(m, {}).get(c, "-") for c in columns]
        rows.append(row)
    return table(header, rows)


def ensemble_table(names: Sequence[str], weights: Any) -> str:
    """The ensemble's weights ``[3, K]`` of one stream and horizon: an expert a row, a
    quantity a column, largest total weight first."""
    if weights is None:
        return "(none yet)"
    order = sorted(range(len(names)), key=lambda j: -float(weights[:, j].sum()))
    rows = [[names[j], *(f"{weights[c, j]:.3f}" for c in range(3))] for j in order]
    return table(["expert", "requests/s", "req tokens/s", "resp tokens/s"], rows)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _section(body: Section) -> str:
    if isinstance(body, str):
        return body
    width = max((len(k) for k in body), default=0)
    return "\n".join(
        f"{k:<{width}}  {f'{v:.3g}' if isinstance(v, float) else v}" for k, v in body.items()
    )


def render_summary(
    title: str,
    timings: Timings,
    forecasts: str,
    files: Mapping[str, str],
    facts: Mapping[str, str] | None = None,
    sections: Mapping[str, Section] | None = None,
) -> str:
    """The summary: ``=== title: timings ===``, ``facts`` (``source``, ``invalid`` ...), the
    ``forecasts`` table, each extra section under its name, then where the files are."""
    lines = [f"=== {title}: {timings.line()} ==="]
    width = max((len(k) for k in [*(facts or {}), *files]), default=0) + 1
    lines += [f"{k + ':':<{width}} {v}" for k, v in (facts or {}).items()]
    lines += ["", "forecasts (rolling accuracy over the last scored forecasts):", forecasts]
    for name, body in (sections or {}).items():
        lines += ["", f"{name}:", _section(body)]
    lines += ["", "files:"]
    lines += [f"  {k + ':':<{width}} {v}" for k, v in files.items()]
    return "\n".join(lines)


def forecast_counts(
    registry: CollectorRegistry, kind: str, models: Iterable[str]
) -> dict[str, int]:
    """Forecasts of ``kind`` each of ``models`` published, from ``registry``'s counter."""
    counts = {}
    for m in models:
        value = registry.get_sample_value(
            "reqcast_forecasts_published_total", {"model": m, "kind": kind}
        )
        counts[m] = int(value or 0)
    return counts


def run_accuracy(
    state: Mapping[str, Any],
    load_scores: RollingScores | None = None,
    load_models: Iterable[str] = (),
    horizon: int = 1,
) -> dict[str, dict[str, str]]:
    """The summary's accuracy columns per model: next-request gap MAE and coverage, and the
    requests/s MAE and coverage of load forecasts ``horizon`` bins ahead."""
    cells: dict[str, dict[str, str]] = {}
    for model, mae in state["mae"].items():
        cells[model] = {
            "gap MAE s": fmt(mae.get("gap_s")),
            "coverage": fmt(state["coverage"].get(model), pct=True),
        }
    if load_scores is not None:
        key = f"requests_per_s@{horizon}"
        for model in load_models:
            cells.setdefault(model, {}).update(
                {
                    f"load MAE h={horizon}": fmt(load_scores.mae(model, key)),
                    "load cov": fmt(load_scores.coverage(model, key), pct=True),
                }
            )
    return cells


def run_summary(
    args: argparse.Namespace,
    state: Mapping[str, Any],
    timings: Timings,
    source: str,
    files: Mapping[str, str],
    load: LoadForecasting | None = None,
    registry: CollectorRegistry | None = None,
    sections: Mapping[str, Section] | None = None,
) -> str:
    """``reqcast run``'s summary from the service's ``state`` and its ``load`` task (if any);
    ``sections`` adds named blocks (say ``{"ensemble weights": {...}}``) before the files."""
    load_counts = None
    if load is not None and registry is not None:
        load_counts = forecast_counts(registry, "load", [*load.slots, "best", "ensemble"])
    accuracy = run_accuracy(
        state,
        None if load is None else load.scores,
        [*load.slots, "best", "ensemble"] if load is not None else (),
        min(args.horizons) if load is not None else 1,
    )
    extra: dict[str, Section] = {
        "next-request MAE by quantity (rolling, last 1,000 scored per model)": summary_table(
            dict(state)
        )
    }
    if load is not None:
        extra[f"load requests/s MAE and coverage by horizon ({args.bin_s:g}s bins)"] = load_table(
            load.scores, [*load.slots, "best", "ensemble"], list(args.horizons)
        )
        for stream in load.ensemble.streams()[:3]:
            h = min(args.horizons)
            extra[f"ensemble weights, stream {stream}, {h} bin ahead"] = ensemble_table(
                load.ensemble.names, load.ensemble.weights(stream).get(h)
            )
    extra.update(sections or {})
    plot = "reqcast plot"
    if getattr(args, "data_path", None):
        plot += f" --data-path {args.data_path}"
    if files.get("forecasts") != DEFAULT_FORECASTS:
        plot += f" --forecasts {files.get('forecasts')}"
    return render_summary(
        "reqcast run",
        timings,
        forecasts_table(dict(state["forecasts"]), load_counts, accuracy),
        {**files, "models": str(args.model_dir), "plots": plot},
        facts={"source": source, "invalid": f"{state['invalid']:,} events"},
        sections=extra,
    )
