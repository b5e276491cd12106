"""The walk-forward reports as markdown: one table per task and horizon, and the verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer.evaluation.ensemble import RATIO_ALIGN, RATIO_COLUMNS, RATIO_NOTE, ratio_lines
from trainer.evaluation.stats import INTERVAL_LEVEL, verdict


def _num(v: float | None, fmt: str | None = None) -> str:
    if v is None:
        return "n/a"
    if fmt:
        return format(v, fmt)
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.5g}"


def to_markdown(report: Mapping[str, Any]) -> str:
    """One table per task and horizon (rows: forecasters; columns: MAE and coverage per target).

    Rows with ``smape`` add an sMAPE column; rows with ``coverage_raw`` show the
    coverage as ``calibrated (raw)``.
    """
    results = report["results"]
    verdicts = report.get("verdict") or verdict(results)
    lines: list[str] = []
    tables = list(dict.fromkeys((r["task"], r["horizon"]) for r in results))
    for task, horizon in tables:
        rows = [r for r in results if r["task"] == task and r["horizon"] == horizon]
        targets = list(dict.fromkeys(r["target"] for r in rows))
        names = list(dict.fromkeys((r["model"], r["kind"]) for r in rows))
        cell = {(r["model"], r["target"]): r for r in rows}
        best = {
            v["target"]: v["best_baseline"]
            for v in verdicts
            if v["task"] == task and v["horizon"] == horizon
        }
        counts = sorted({r["n"] for r in rows})
        n_text = str(counts[0]) if len(counts) == 1 else ", ".join(map(str, counts))
        lines += [f"### {task}, horizon {horizon} (n = {n_text} forecasts)", ""]
        with_smape = any("smape" in r for r in rows)
        with_raw = any("coverage_raw" in r for r in rows)
        per_target = ["MAE", *(["sMAPE"] if with_smape else []), "cov"]
        head = ["forecaster", "kind"]
        for t in targets:
            head += [f"{t} {m}" for m in per_target]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|---|" + "---:|" * len(per_target) * len(targets))
        for model, kind in names:
            out = [model, kind]
            for t in targets:
                r = cell.get((model, t))
                if r is None:
                    out += [""] * len(per_target)
                    continue
                mark = " *" if best.get(t) == model else ""
                out.append(_num(r["mae"]) + mark)
                if with_smape:
                    out.append(_num(r.get("smape"), ".3f"))
                cov = _num(r["coverage"], ".3f")
                if with_raw:
                    cov += f" ({_num(r.get('coverage_raw'), '.3f')})"
                out.append(cov)
            lines.append("| " + " | ".join(out) + " |")
        note = "`*` best baseline for that target; cov = share of outcomes in the interval"
        if with_raw:
            note += " (online-calibrated; the model's own interval in brackets)"
        if with_smape:
            note += "; sMAPE = mean of 2|y - ŷ| / (|y| + |ŷ|), from 0 to 2"
        lines += ["", note + ".", ""]
        lines += _ensemble_lines(rows, names)
        for model, kind in names:
            if kind != "model":
                continue
            mine = [
                v
                for v in verdicts
                if v["task"] == task and v["horizon"] == horizon and v["model"] == model
            ]
            parts = [
                f"{v['target']} {'beats' if v['beats_best_baseline'] else 'LOSES to'} "
                f"{v['best_baseline']} (MAE ratio "
                f"{_num(v['ratio'], '.4f')}{_interval(v)})"
                for v in mine
            ]
            wins = sum(v["beats_best_baseline"] for v in mine)
            lines.append(
                f"- **{model}**: {'; '.join(parts)}; at or below the best baseline on "
                f"{wins}/{len(mine)} targets"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _ensemble_lines(rows: list[Mapping[str, Any]], names: list[tuple[str, str]]) -> list[str]:
    """A line per row of kind ``ensemble``: its MAE over the best single expert's (lowest
    MAE among the models and baselines of the table) per target."""
    out = []
    for model, kind in names:
        if kind != "ensemble":
            continue
        parts = []
        for r in rows:
            if r["model"] != model or r["mae"] is None:
                continue
            experts = [
                e
                for e in rows
                if e["target"] == r["target"]
                and e["kind"] in ("model", "baseline")
                and e["mae"] is not None
            ]
            if experts:
                best = min(experts, key=lambda e: e["mae"])
                ratio = r["mae"] / best["mae"] if best["mae"] > 0 else None
                parts.append(f"{r['target']} {_num(ratio, '.4f')} (best: {best['model']})")
        if parts:
            lines = "; ".join(parts)
            out.append(
                f"- **{model}** (every expert aggregated online): MAE over the best "
                f"single expert's: {lines}"
            )
    return out


def load_markdown(report: Mapping[str, Any]) -> str:
    """A short preamble (bins, split, notes) and one table per horizon."""
    tc = report.get("task_config", {})
    lines = []
    if tc:
        lines += [
            f"## Load forecasts, {tc['bin_s']:g} s bins, horizons {tc['horizons']} bins",
            "",
            f"{tc['forecasts']:,} forecast origins after {tc['train_fraction']:.0%} of "
            f"{len(tc['streams'])} stream(s) trained {', '.join(tc['models'])} "
            f"(seq_len {tc['seq_len']} bins, up to {tc['epochs']} epochs); "
            "intervals calibrated online for every forecaster.",
            "",
        ]
        lines += [f"- note: {n}" for n in tc.get("notes", [])]
        if tc.get("notes"):
            lines.append("")
    out = "\n".join(lines) + to_markdown(report)
    ensemble = report.get("ensemble")
    if ensemble:
        table = [
            "### Ensemble vs the best single expert",
            "",
            f"Aggregation: {ensemble['aggregation']}.",
            "",
            f"| {RATIO_COLUMNS} |",
            f"|{RATIO_ALIGN}|",
            *ratio_lines(ensemble),
            "",
            RATIO_NOTE,
        ]
        out += "\n" + "\n".join(table) + "\n"
    return out


def _interval(v: Mapping[str, Any]) -> str:
    """``, 90 % interval a-b`` for a verdict row with a ``ratio_interval``."""
    iv = v.get("ratio_interval")
    return "" if not iv else f", {INTERVAL_LEVEL:.0%} interval {iv[0]:.4f}-{iv[1]:.4f}"
