"""The ``ensemble`` load forecast in the service: what it publishes equals the bench's replay,
its weights are rebuilt from history, networks join it when they arrive, weights are exported."""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import CollectorRegistry

from predictor.ensemble import replay
from predictor.events import RequestEvent
from predictor.experts import SERVE_PEERS, load_baselines, load_peers
from predictor.load import LOAD_QUANTITIES
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.tasks.load import LoadConfig, LoadForecasting
from stream.tasks.load_ensemble import ENSEMBLE
from tests.stream.test_load_stream import tiny
from tests.stream.test_tasks import valid
from trainer.evaluation.walk import raw_forecasts

BIN_S = 10.0
HORIZONS = (1, 3)


def traffic(bins: int, seed: int = 0) -> list[RequestEvent]:
    """Events in every bin (no empty bins), a level that moves: 1 to 12 events a bin."""
    rng = np.random.default_rng(seed)
    level = 6 + 5 * np.sin(np.arange(bins) / 15.0)
    events = []
    for k in range(bins):
        n = max(1, int(rng.poisson(level[k])))
        for t in np.sort(rng.uniform(k * BIN_S, (k + 1) * BIN_S, size=n)):
            events.append(RequestEvent(float(t), int(rng.integers(50, 500)), 20))
    return events


def task(slots: dict[str, ModelSlot] | None = None) -> tuple[LoadForecasting, Metrics]:
    metrics = Metrics(CollectorRegistry())
    config = LoadConfig("out", BIN_S, HORIZONS, "none")
    return LoadForecasting(config, slots or {}, metrics), metrics


def published(messages: list[tuple[str, bytes | None, bytes]]) -> dict[int, np.ndarray]:
    """The ensemble's points ``[len(HORIZONS), 3]`` by the bin number they were made after."""
    out = {}
    for _, _, value in messages:
        m = json.loads(value)
        if m["model"] == ENSEMBLE:
            k = round(m["last_closed_bin_start"] / BIN_S)
            out[k] = np.array([[h[q] for q in LOAD_QUANTITIES] for h in m["horizons"]])
    return out


def test_the_service_publishes_what_the_bench_replay_gives() -> None:
    events = traffic(150)
    load, _ = task()
    sent = []
    for i in range(0, len(events), 37):  # micro-batches of the serving loop
        sent += load.process(valid(events[i : i + 37], first_offset=i))
    live = published(sent)
    series = load.bins.history("all")
    assert len(live) == len(series) == 149  # every closed bin, from the first one

    # the bench's way: every expert walked over the series, then the same aggregation replayed
    top = max(HORIZONS)
    experts = load_baselines(top) + load_peers(SERVE_PEERS, top)
    forecasts = np.stack([raw_forecasts(e, series, 0).point for e in experts], axis=-1)
    names = [e.name for e in experts]
    bench = replay(series, 0, forecasts, HORIZONS, names)  # [T, top, 3], rows 0 .. N-2
    for k in range(len(series) - 1):
        np.testing.assert_allclose(live[k], bench[k, [h - 1 for h in HORIZONS]], rtol=1e-9)


def test_weights_rebuilt_from_history_equal_an_uninterrupted_run() -> None:
    events = traffic(120, seed=3)
    uninterrupted, _ = task()
    uninterrupted.process(valid(events))
    restarted, _ = task()
    restarted.on_assign(events)  # a rebalance: state rebuilt from the partition's history
    before = uninterrupted.ensemble.weights("all")
    after = restarted.ensemble.weights("all")
    assert set(before) == set(after) == set(HORIZONS)
    for h in HORIZONS:
        np.testing.assert_allclose(after[h], before[h], rtol=1e-12)
        assert not np.allclose(before[h], before[h][0, 0])  # they learnt something
    more = traffic(140, seed=3)[len(events) :]  # the same traffic continues
    np.testing.assert_allclose(
        np.stack(list(published(restarted.process(valid(more))).values())),
        np.stack(list(published(uninterrupted.process(valid(more))).values())),
        rtol=1e-12,
    )


def test_no_model_yet_then_a_network_joins() -> None:
    """Without a load model the ensemble publishes from the first closed bin; a network
    whose first version arrives later forecasts beside it and gets a weight."""
    slot: ModelSlot = ModelSlot("lstm")
    load, metrics = task({"lstm": slot})
    events = traffic(80, seed=5)
    first = load.process(valid(events[: len(events) // 2]))
    assert {json.loads(v)["model"] for _, _, v in first} == {ENSEMBLE}
    assert all(json.loads(v)["model_version"] == 0 for _, _, v in first)

    slot.offer(tiny("lstm", max(HORIZONS)), 1)
    later = load.process(valid(events[len(events) // 2 :], first_offset=len(events) // 2))
    assert {json.loads(v)["model"] for _, _, v in later} == {"lstm", ENSEMBLE}
    weights = load.ensemble.weights("all")
    lstm = load.ensemble.names.index("lstm")
    assert all(w[:, lstm].min() > 0 for w in weights.values())
    weight = metrics.registry.get_sample_value(
        "reqcast_ensemble_weight",
        {"stream": "all", "model": "lstm", "quantity": "requests_per_s", "horizon_bins": "1"},
    )
    assert weight is not None and 0 < weight < 1


def test_the_weights_of_each_cell_are_exported_and_sum_to_one() -> None:
    load, metrics = task()
    load.process(valid(traffic(60, seed=7)))
    for q in LOAD_QUANTITIES:
        for h in HORIZONS:
            total = sum(
                metrics.registry.get_sample_value(
                    "reqcast_ensemble_weight",
                    {"stream": "all", "model": name, "quantity": q, "horizon_bins": str(h)},
                )
                or 0.0
                for name in load.ensemble.names
            )
            assert abs(total - 1.0) < 1e-9


def test_a_new_network_version_starts_at_a_new_experts_weight() -> None:
    """After a swap the new version does not inherit what the old one earned: its weight
    goes back to the prior 1/K in every cell, and the other experts keep their order."""
    slot: ModelSlot = ModelSlot("lstm")
    slot.offer(tiny("lstm", max(HORIZONS)), 1)
    load, _ = task({"lstm": slot})
    load.process(valid(traffic(90, seed=9)))
    k = len(load.ensemble.names)
    lstm = load.ensemble.names.index("lstm")
    before = load.ensemble.weights("all")
    assert any(abs(w[c, lstm] - 1 / k) > 1e-3 for w in before.values() for c in range(3))
    load.ensemble.note_versions({"lstm": 1})  # same version: nothing changes
    for h, w in load.ensemble.weights("all").items():
        np.testing.assert_array_equal(w, before[h])
    load.ensemble.note_versions({"lstm": 2})
    for h, w in load.ensemble.weights("all").items():
        np.testing.assert_allclose(w[:, lstm], 1 / k)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        others = [j for j in range(k) if j != lstm]
        for c in range(3):
            old = np.argsort(before[h][c, others], kind="stable")
            np.testing.assert_array_equal(np.argsort(w[c, others], kind="stable"), old)
