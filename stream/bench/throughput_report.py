"""``reqcast bench stream``, the report: serve/echo ratios, the design's targets, the table.

The targets are those of docs/design.md ("Performance targets"): serve/echo throughput
at least :data:`TARGET_THROUGHPUT_RATIO`, serve/echo p99 latency at most
:data:`TARGET_P99_RATIO` at :data:`TARGET_P99_RATE` events/s, RSS growth from 100,000 to
1,000,000 events within :data:`TARGET_MEMORY_GROWTH`.
"""

from __future__ import annotations

from typing import Any

from stream.bench.throughput_worker import BACKGROUND_SUFFIX

TARGET_THROUGHPUT_RATIO = 0.7
TARGET_P99_RATIO = 1.5
TARGET_P99_RATE = 5_000.0
TARGET_MEMORY_GROWTH = 0.10


def serve_echo_ratios(echo: dict[str, Any], serve: dict[str, Any]) -> dict[str, float]:
    """Serve's figures over the echo's: throughput, messages out, p50 and p99, peak RSS."""
    return {
        "throughput": serve["throughput"]["events_per_s"] / echo["throughput"]["events_per_s"],
        "outputs_per_s": serve["throughput"]["outputs_per_s"] / echo["throughput"]["outputs_per_s"],
        "p50": serve["latency"]["p50_ms"] / max(echo["latency"]["p50_ms"], 1e-9),
        "p99": serve["latency"]["p99_ms"] / max(echo["latency"]["p99_ms"], 1e-9),
        "peak_rss": serve["peak_rss_mb"] / echo["peak_rss_mb"],
    }


def check_targets(report: dict[str, Any], rate: float | None) -> dict[str, Any]:
    """Each target's value and whether it is met (and applies: measured at its load)."""
    ratios = report["ratios"]
    out: dict[str, Any] = {
        "throughput_ratio": {
            "value": ratios["throughput"],
            "target": f">= {TARGET_THROUGHPUT_RATIO}",
            "met": ratios["throughput"] >= TARGET_THROUGHPUT_RATIO,
        },
        "p99_ratio": {
            "value": ratios["p99"],
            "target": f"<= {TARGET_P99_RATIO} at {TARGET_P99_RATE:,.0f} events/s",
            "rate_events_per_s": rate,
            "applies": rate == TARGET_P99_RATE,
            "met": ratios["p99"] <= TARGET_P99_RATIO,
        },
    }
    mem = report.get("memory")
    if mem:
        out["memory_growth"] = {
            "value": mem["growth"],
            "target": f"within {TARGET_MEMORY_GROWTH:.0%} from 100,000 to 1,000,000 events",
            "events": [mem["baseline_events"], mem["events"]],
            "applies": (mem["baseline_events"], mem["events"]) == (100_000, 1_000_000),
            "met": abs(mem["growth"]) <= TARGET_MEMORY_GROWTH,
        }
    return out


def serve_line(settings: dict[str, Any] | None, serve: dict[str, Any]) -> str:
    """One line: what the serve side ran besides the loop (``reqcast serve``'s settings)."""
    if not settings:
        return "serve: the loop alone"
    refit = settings.get("refit")
    load = settings.get("load")
    parts = [
        "refit off"
        if refit is None
        else "refit every "
        + (f"{refit['every_s']:g} s" if refit.get("every_s") else "(never by time)")
        + (" in a child process" if refit.get("isolate") else " in process"),
        "load off"
        if load is None
        else f"load {load['bin_s']:g} s bins with ensemble "
        f"({serve['throughput'].get('load_outputs', 0):,} load forecasts in the throughput run)",
        f"model topic {'on' if settings.get('model_topic') else 'off'}",
        f"model-dir watch {settings.get('watch_model_dir_s') or 0:g} s",
        f"history {settings.get('history_records', 0):,} records",
    ]
    return "serve as `reqcast serve` with: " + ", ".join(parts)


def render_table(report: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    cfg, echo, serve, ratios = report["config"], report["echo"], report["serve"], report["ratios"]
    targets = report.get("targets", {})
    rate = cfg["rate_events_per_s"]
    pace = f"{rate:,.0f} events/s" if rate else "full speed"

    def verdict(name: str) -> str:
        t = targets.get(name)
        if not t:
            return ""
        mark = "met" if t["met"] else "MISSED"
        if not t.get("applies", True):
            mark += " (target is set at another load)"
        return f"{t['target']}: {mark}"

    rows = [
        ("", "echo", "serve", "serve/echo", "target"),
        (
            "throughput events/s",
            f"{echo['throughput']['events_per_s']:,.0f}",
            f"{serve['throughput']['events_per_s']:,.0f}",
            f"{ratios['throughput']:.2f}",
            verdict("throughput_ratio"),
        ),
        (
            "messages out/s",
            f"{echo['throughput']['outputs_per_s']:,.0f}",
            f"{serve['throughput']['outputs_per_s']:,.0f}",
            f"{ratios['outputs_per_s']:.2f}",
            f"serve writes {serve['outputs_per_event']:.0f} per event",
        ),
        (
            f"latency p50 ms @ {pace}",
            f"{echo['latency']['p50_ms']:.1f}",
            f"{serve['latency']['p50_ms']:.1f}",
            f"{ratios['p50']:.2f}",
            "",
        ),
        (
            f"latency p99 ms @ {pace}",
            f"{echo['latency']['p99_ms']:.1f}",
            f"{serve['latency']['p99_ms']:.1f}",
            f"{ratios['p99']:.2f}",
            verdict("p99_ratio"),
        ),
        (
            "peak RSS MB",
            f"{echo['peak_rss_mb']:.0f}",
            f"{serve['peak_rss_mb']:.0f}",
            f"{ratios['peak_rss']:.2f}",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        f"reqcast bench stream: {cfg['events']:,} events, {cfg['partitions']} input partitions, "
        f"batch {cfg['batch_max']}, models {', '.join(cfg['models'])}, "
        + (
            f"serve writes {cfg['compression']}, "
            if cfg.get("compression", "none") != "none"
            else ""
        )
        + f"broker {cfg['bootstrap_servers']}, {cfg['cpu_count']} CPUs shared with it"
        + (
            f", load average {cfg['load_average_at_start'][0]:.1f} at the start"
            if cfg.get("load_average_at_start")
            else ""
        ),
    ]
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[k].rjust(widths[k]) for k in (1, 2, 3)] + [r[4]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths[:4]) + "  " + "-" * 6)
    lines.append(serve_line(cfg.get("serve"), serve))
    for name, pipe in (("echo", echo), ("serve", serve)):
        shares = sorted(pipe["throughput"].get("time_share", {}).items(), key=lambda kv: -kv[1])
        main = [(k, v) for k, v in shares if not k.endswith(BACKGROUND_SUFFIX)]
        if main:
            parts = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in main)
            lines.append(f"{name} time (throughput run): {parts}")
        for k, v in shares:
            if k.endswith(BACKGROUND_SUFFIX):
                step = k.removesuffix(BACKGROUND_SUFFIX).replace("_", " ")
                lines.append(
                    f"{name} {step} on the inference thread, alongside: {v:.0%} of the run"
                )
    if cfg.get("crc32c_installed") is False:
        lines.append(
            "note: the crc32c package is not installed, so kafka-python computes record CRCs "
            "in pure Python; serve writes more bytes and pays more for it"
        )
    mem = report.get("memory")
    if mem:
        lines.append(
            f"memory: serve RSS {mem['rss_mb_at_baseline']:.0f} MB after "
            f"{mem['events_at_baseline']:,} events, {mem['rss_mb_at_end']:.0f} MB after "
            f"{mem['events_at_end']:,} ({mem['growth']:+.1%}); {verdict('memory_growth')}"
        )
    return "\n".join(lines)
