"""``reqcast bench swap``, the report: the figures as markdown tables, and as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from stream.bench.swap_analysis import TARGET_RATIO
from trainer.guard import Decision


def render_table(report: dict[str, Any]) -> str:
    """The machine, then each measurement's figures, as markdown tables."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpus']} CPUs, {m['torch_threads']} torch threads, load average "
        f"{m['load_average']} at the start, {m.get('load_average_end')} at the end",
        "",
    ]
    swap = report.get("swap")
    if swap:
        ok = "yes" if swap["meets_target"] else "NO"
        missing = ", ".join(f"{m} {n}" for m, n in swap["events_without_forecast"].items())
        lines += [
            f"hot-swap pause ({swap['swap_mode']} mode, {swap['transport']}, "
            f"{swap['events']:,} events at "
            f"{swap['events_per_s']:,.0f}/s, target {swap['rate_target']:g}/s)",
            "",
            "| figure | value |",
            "|---|---|",
            f"| refits / swaps / rejected | {swap['refits']} / {swap['swaps']} / {swap['rejected']} |",
            f"| forecast batches delivered | {swap['batches']:,} |",
            f"| median gap between deliveries | {swap['median_gap_ms']} ms |",
            f"| p99 gap overall | {swap['p99_gap_ms']} ms |",
            f"| max / p99 gap outside refits | {swap['max_gap_ms_outside_refits']} / "
            f"{swap['p99_gap_ms_outside_refits']} ms |",
            f"| max / p99 gap during swap windows | {swap['max_gap_ms_during_swaps']} / "
            f"{swap['p99_gap_ms_during_swaps']} ms |",
            f"| longest gap containing a swap | {swap['max_gap_ms_at_swap']} ms |",
            f"| max / median (target <= {TARGET_RATIO:g}) | {swap['max_over_median']} ({ok}) |",
            f"| events without a forecast | {missing} |",
            f"| duplicate forecasts / version steps back | {swap['duplicate_forecasts']} / "
            f"{sum(swap['version_steps_backwards'].values())} |",
            f"| versions served | {json.dumps(swap['versions_seen'])} |",
            "",
            "| refit | took (s) | swaps | batches in window | max gap (ms) | p99 gap (ms) "
            "| gap at swap (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {i + 1} | {w['refit_s']} | {w['swaps']} | {w['batches']} | {w['max_gap_ms']} "
            f"| {w['p99_gap_ms']} | {', '.join(map(str, w['gap_at_swap_ms']))} |"
            for i, w in enumerate(swap["windows"])
        ]
        lines.append("")
        load = swap.get("load")
        if load:
            lines += _load_swaps(load, swap.get("load_models") or {})
    refit = report.get("refit")
    if refit:
        lines += [
            f"refit time ({refit['events']:,} synthetic events, {refit['train_rows']:,} training "
            f"rows, seq_len {refit['seq_len']}, <= {refit['max_epochs']} epochs, batch "
            f"{refit['batch_size']}, {refit['device']}, {refit['torch_threads']} torch threads)",
            "",
            "| model | train (s) | epochs run | best epoch | s/epoch | guard (s) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {r['train_s']} | {r['epochs_run']} | {r['best_epoch']} | {r['s_per_epoch']} "
            f"| {r['guard_s']} |"
            for m, r in refit["models"].items()
        ]
        lines.append("")
        load_refit = refit.get("load")
        if load_refit:
            lines += [
                f"load refit time ({load_refit.get('bins', 0):,} bins of "
                f"{load_refit['bin_s']:g} s in {load_refit.get('streams', 0)} streams, at most "
                f"{load_refit['window_bins']} per stream, seq_len {load_refit['seq_len']}, "
                f"{load_refit['horizon_bins']} bins ahead; refit_load_once: training, guard, "
                "saving, swap)",
                "",
                "| load model | refit (s) | train (s) | decision |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {m} | {r['refit_s']} | {r['train_s']} | {r['decision']} |"
                for m, r in load_refit["models"].items()
            ]
            lines.append("")
    return "\n".join(lines)


def _load_swaps(load: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The load models' swap figures, as the next-request ones are shown."""
    ok = "yes" if load["meets_target"] else "NO"
    every = settings.get("refit_every_s")
    lines = [
        f"load model swaps ({settings.get('bin_s', '?')} s bins, "
        f"{'refit every ' + format(every, 'g') + ' s' if every else 'first versions only'})",
        "",
        "| figure | value |",
        "|---|---|",
        f"| load refits / swaps / rejected | {load['refits']} / {load['swaps']} / "
        f"{load['rejected']} |",
        f"| max / p99 gap during load swap windows | {load['max_gap_ms_during_swaps']} / "
        f"{load['p99_gap_ms_during_swaps']} ms |",
        f"| longest gap containing a load swap | {load['max_gap_ms_at_swap']} ms |",
        f"| max / median (target <= {TARGET_RATIO:g}) | {load['max_over_median']} ({ok}) |",
        f"| load forecasts per model | {json.dumps(load['forecasts_per_model'])} |",
        f"| load version steps back | {sum(load['version_steps_backwards'].values())} |",
        f"| load versions served | {json.dumps(load['versions_seen'])} |",
        "",
        "| load refit | took (s) | swaps | batches in window | max gap (ms) | p99 gap (ms) "
        "| gap at swap (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1} | {w['refit_s']} | {w['swaps']} | {w['batches']} | {w['max_gap_ms']} "
        f"| {w['p99_gap_ms']} | {', '.join(map(str, w['gap_at_swap_ms']))} |"
        for i, w in enumerate(load["windows"])
    ]
    lines.append("")
    return lines


def plain(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy scalars and guard decisions as plain values."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Decision):
        return asdict(value)
    raise TypeError(type(value).__name__)
