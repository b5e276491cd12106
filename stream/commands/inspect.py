"""``reqcast inspect``: load a trace and report what the loader read, kept and dropped."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from predictor.traces import LoadReport, load_trace
from stream.cliutil import add_flag, add_trace_flags, trace_path

#: Spans starting after this many seconds are epoch times and are also shown as dates.
_EPOCH_FROM_S = 1e9


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="trace file (same as --data-path)")
    add_trace_flags(p, required=True)
    add_flag(p, "--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    path = trace_path(args)
    _, report = load_trace(
        path, columns=args.columns, time_unit=args.time_unit, drop_failed=args.drop_failed
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _when(seconds: float) -> str:
    if seconds < _EPOCH_FROM_S:
        return f"{seconds:,.3f} s"
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return f"{seconds:,.3f} s ({stamp.isoformat(timespec='microseconds')})"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86_400.0), ("h", 3_600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds:,.3f} s ({seconds / size:.2f} {unit})"
    return f"{seconds:,.3f} s"


def _mix(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "-"


def format_report(report: LoadReport) -> str:
    """The human table printed by ``reqcast inspect``."""
    dropped = sum(report.dropped.values())
    reasons = ", ".join(f"{r} {n:,}" for r, n in report.dropped.items() if n)
    rows = [
        ("trace", report.path),
        ("columns", ", ".join(f"{k}={v}" for k, v in report.columns.items())),
        ("time unit", report.time_unit),
        ("rows read", f"{report.rows_read:,}"),
        ("rows kept", f"{report.rows_kept:,}"),
        ("rows dropped", f"{dropped:,}" + (f" ({reasons})" if reasons else "")),
        ("reordered", f"{report.reordered:,} (moved by a stable sort on time, kept)"),
        ("zero-token rows", f"{report.zero_token_rows:,} (request and response 0)"),
        ("failed rows", f"{report.failed_rows:,} (response 0)"),
    ]
    if report.span_start_s is not None and report.span_end_s is not None:
        rows += [
            ("first request", _when(report.span_start_s)),
            ("last request", _when(report.span_end_s)),
            ("span", _duration(report.span_s)),
        ]
        if report.span_s > 0:
            rows.append(("mean rate", f"{report.rows_kept / report.span_s:.4f} requests/s"))
    rows += [("models", _mix(report.by_model)), ("log types", _mix(report.by_log_type))]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
