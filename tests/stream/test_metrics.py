"""The batch histogram exposes what prometheus_client's Histogram exposes for the same values."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stream.metrics import LATENCY_BUCKETS, BatchHistogram


def _lines(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


def test_batch_histogram_matches_prometheus_histogram() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.exponential(0.2, 5_000), np.array(LATENCY_BUCKETS), [0.0, 50.0]]  # bounds exactly
    )
    reference, batched = CollectorRegistry(), CollectorRegistry()
    hist = Histogram("lat_seconds", "Latency", buckets=LATENCY_BUCKETS, registry=reference)
    for v in values:
        hist.observe(float(v))
    ours = BatchHistogram("lat_seconds", "Latency", LATENCY_BUCKETS, batched)
    for chunk in np.array_split(values, 7):
        ours.observe_many(chunk)
    ours.observe_many(np.array([]))
    ours.observe_many(np.array([0.3]))
    hist.observe(0.3)
    expected, got = _lines(reference), _lines(batched)
    assert len(got) == len(LATENCY_BUCKETS) + 3  # buckets, +Inf, count, sum
    count = [line for line in got if line.startswith("lat_seconds_count")]
    assert count == [f"lat_seconds_count {len(values) + 1}.0"]
    for e, g in zip(sorted(expected), sorted(got), strict=True):
        name_e, value_e = e.rsplit(" ", 1)
        name_g, value_g = g.rsplit(" ", 1)
        assert name_e == name_g
        assert float(value_g) == float(value_e) or abs(float(value_g) - float(value_e)) < 1e-9


def test_an_infinite_bucket_is_not_exposed_twice() -> None:
    registry = CollectorRegistry()
    BatchHistogram("x_seconds", "X", (0.5, float("inf"), 1.0), registry).observe_many(
        np.array([0.7])
    )
    lines = [line for line in _lines(registry) if "_bucket" in line]
    assert lines == [
        'x_seconds_bucket{le="0.5"} 0.0',
        'x_seconds_bucket{le="1.0"} 1.0',
        'x_seconds_bucket{le="+Inf"} 1.0',
    ]
