"""``reqcast bench swap``, the analysis: the gaps between forecast deliveries around swaps.

:func:`analyse` takes the wall-clock time of every delivered forecast batch and the
:class:`RefitSpan` of every refit (or load) and compares the longest gap inside a swap
window (a refit's start to its last swap) with the median gap of the whole run (target:
at most :data:`TARGET_RATIO` times), for the next-request models' refits at the top level
and for the load models' under ``load``; it also counts events without a forecast, duplicate
forecasts and versions that step backwards, from the delivered messages themselves.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictor.tasks import LOAD, NEXT_REQUEST
from stream.service import ForecastService, Message
from trainer.guard import Decision

#: the hot-swap target (docs/design.md, "Performance targets"): the longest gap between
#: forecasts during a swap at most 3 x the median gap
TARGET_RATIO = 3.0


@dataclass
class RefitSpan:
    """One refit of the worker: when it ran, what it decided, when each swap landed."""

    start: float
    end: float = float("nan")
    swaps: list[float] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    #: whose models it refitted: ``next_request`` or ``load``
    task: str = NEXT_REQUEST


def analyse(
    deliveries: list[tuple[float, list[Message]]],
    spans: list[RefitSpan],
    service: ForecastService,
    output_topic: str,
    models: list[str],
) -> dict[str, Any]:
    times = np.array([t for t, _ in deliveries])
    gaps = np.diff(times) if len(times) > 1 else np.empty(0)
    median = float(np.median(gaps)) if len(gaps) else float("nan")
    outside = np.ones(len(gaps), dtype=bool)
    for span in spans:
        if np.isfinite(span.end):
            outside &= ~((times[1:] >= span.start) & (times[:-1] <= span.end))
    # every forecast delivered, and the versions in source order (load: in bin order)
    seen: dict[str, dict[tuple[int, int], int]] = {m: {} for m in models}
    load_seen: dict[str, dict[tuple[str, float], int]] = {}
    duplicates = 0
    for _, messages in deliveries:
        for topic, _key, value in messages:
            if topic != output_topic:
                continue
            f = json.loads(value)
            if f.get("kind") == "load":
                per_bin = load_seen.setdefault(f["model"], {})
                per_bin[(f["stream"], float(f["bin_start"]))] = int(f["model_version"])
                continue
            key = (int(f["source"]["partition"]), int(f["source"]["offset"]))
            per_model = seen.setdefault(f["model"], {})
            duplicates += key in per_model
            per_model[key] = int(f["model_version"])
    valid = service.stats.valid
    swaps = _swap_windows(times, gaps, median, [s for s in spans if s.task != LOAD])
    out = {
        "batches": len(deliveries),
        "events": service.stats.events,
        "valid_events": valid,
        "invalid_events": service.stats.invalid,
        "median_gap_ms": _ms(median),
        "p99_gap_ms": _ms(np.quantile(gaps, 0.99)) if len(gaps) else None,
        "max_gap_ms_outside_refits": _ms(gaps[outside].max()) if outside.any() else None,
        "p99_gap_ms_outside_refits": _ms(np.quantile(gaps[outside], 0.99))
        if outside.any()
        else None,
        **swaps,
        "forecasts_per_model": {m: len(v) for m, v in seen.items()},
        "events_without_forecast": {m: valid - len(seen.get(m, {})) for m in models},
        "duplicate_forecasts": duplicates,
        "version_steps_backwards": _backwards(seen),
        "versions_seen": {m: sorted(set(v.values())) for m, v in seen.items()},
    }
    load_spans = [s for s in spans if s.task == LOAD]
    if load_spans or load_seen:
        out["load"] = {
            **_swap_windows(times, gaps, median, load_spans),
            "forecasts_per_model": {m: len(v) for m, v in load_seen.items()},
            "version_steps_backwards": _backwards(load_seen),
            "versions_seen": {m: sorted(set(v.values())) for m, v in load_seen.items()},
        }
    return out


def _backwards(seen: dict[str, dict[Any, int]]) -> dict[str, int]:
    """Per model, how often the version of a forecast is lower than the one before it (in
    source order; load forecasts, keyed ``(stream, bin_start)``: in bin order per stream)."""
    out = {}
    for m, by_key in seen.items():
        keys = sorted(by_key)
        v = np.array([by_key[k] for k in keys])
        back = np.diff(v) < 0 if len(v) > 1 else np.zeros(0, dtype=bool)
        if keys and isinstance(keys[0][0], str):  # not across two streams' bins
            back &= np.array([a[0] == b[0] for a, b in itertools.pairwise(keys)], dtype=bool)
        out[m] = int(back.sum())
    return out


def _swap_windows(
    times: np.ndarray, gaps: np.ndarray, median: float, spans: list[RefitSpan]
) -> dict[str, Any]:
    """The gaps between deliveries inside the swap windows of ``spans`` (one task's)."""

    def window_gaps(lo: float, hi: float) -> np.ndarray:
        # gap i lies between deliveries i and i+1; it counts if it overlaps [lo, hi]
        inside = (times[1:] >= lo) & (times[:-1] <= hi)
        return gaps[inside]

    windows: list[dict[str, Any]] = []
    swap_gaps: list[float] = []  # the longest gap of each window that swapped a model in
    in_swaps: list[np.ndarray] = []
    for span in spans:
        if not np.isfinite(span.end):
            continue  # still running when the stream ended
        end = span.swaps[-1] if span.swaps else span.end
        g = window_gaps(span.start, end)
        if span.swaps and len(g):
            swap_gaps.append(float(g.max()))
            in_swaps.append(g)
        # the gap that contains the swap itself (the reference assignment)
        at_swap = [
            float(gaps[i - 1])
            for t in span.swaps
            if 0 < (i := int(np.searchsorted(times, t))) < len(times)
        ]
        windows.append(
            {
                "refit_s": round(span.end - span.start, 3),
                "swaps": len(span.swaps),
                "decisions": [d.describe() for d in span.decisions],
                "batches": len(g),
                "max_gap_ms": _ms(g.max()) if len(g) else None,
                "p99_gap_ms": _ms(np.quantile(g, 0.99)) if len(g) else None,
                "gap_at_swap_ms": [_ms(v) for v in at_swap],
            }
        )
    max_swap_gap = max(swap_gaps, default=None)
    ratio = max_swap_gap / median if max_swap_gap is not None and median > 0 else None
    return {
        "p99_gap_ms_during_swaps": _ms(np.quantile(np.concatenate(in_swaps), 0.99))
        if in_swaps
        else None,
        "max_gap_ms_at_swap": max((v for w in windows for v in w["gap_at_swap_ms"]), default=None),
        "max_gap_ms_during_swaps": None if max_swap_gap is None else _ms(max_swap_gap),
        "max_over_median": round(ratio, 2) if ratio is not None else None,
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio is not None and ratio <= TARGET_RATIO),
        "refits": len(spans),
        "swaps": sum(len(s.swaps) for s in spans),
        "rejected": sum(1 for s in spans for d in s.decisions if not d.accepted),
        "windows": windows,
    }


def _ms(seconds: float) -> float:
    return round(float(seconds) * 1e3, 3)
