"""The ``ensemble`` next-request forecast in the service: what it publishes equals the bench's
replay, its weights are rebuilt from history, it never looks ahead, a swapped network starts
afresh, and its weights are exported beside the load ensemble's."""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from predictor.features import QUANTITIES
from predictor.models.baselines import default_baselines
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.tasks.next_ensemble import ENSEMBLE
from stream.tasks.next_request import NextRequestConfig, NextRequestTask
from tests.stream.test_load_stream import slots
from tests.stream.test_tasks import valid
from trainer.evaluation.next_ensemble import ensemble_forecasts
from trainer.evaluation.next_request import stream_forecasts

STREAMS = ("a", "b")
WEIGHT = "reqcast_ensemble_weight"


def traffic(n: int, seed: int = 0) -> list[RequestEvent]:
    """Two interleaved streams whose gaps and tokens drift (a level that moves)."""
    rng = np.random.default_rng(seed)
    level = 1.0 + 0.8 * np.sin(np.arange(n) / 40.0)
    ts = np.cumsum(rng.exponential(level))
    return [
        RequestEvent(
            float(t),
            int(rng.integers(50, 150) * level[i] * 3),
            int(rng.integers(5, 50)),
            STREAMS[int(rng.integers(0, 2))],
        )
        for i, t in enumerate(ts)
    ]


def task(
    models: dict[str, ModelSlot] | None = None, capacity: int = 4096
) -> tuple[NextRequestTask, Metrics]:
    metrics = Metrics(CollectorRegistry())
    config = NextRequestConfig("out", "model", capacity, ensemble=True)
    return NextRequestTask(config, slots(1) if models is None else models, metrics), metrics


def run(t: NextRequestTask, events: list[RequestEvent], first: int = 0, size: int = 37) -> list:
    """``events`` in the serving loop's micro-batches; the messages, in order."""
    out = []
    for i in range(0, len(events), size):
        out += t.process(valid(events[i : i + size], first_offset=first + i))
    return out


def published(messages: list) -> dict[str, list[np.ndarray]]:
    """The ensemble's points ``[3]`` per stream, in event order."""
    out: dict[str, list[np.ndarray]] = {}
    for _, _, value in messages:
        m = json.loads(value)
        if m["model"] == ENSEMBLE:
            out.setdefault(m["stream"], []).append(np.array([m[q] for q in QUANTITIES]))
    return out


def test_the_service_publishes_what_the_bench_replay_gives() -> None:
    events = traffic(400)
    t, _ = task()
    live = published(run(t, events))
    # the bench's way: every expert walked over each stream from its first event, then the
    # same aggregation replayed (trainer.evaluation.next_ensemble)
    parts = [(t.windows.history(s), 1) for s in STREAMS]
    experts = [t.slots[n].current().forecaster for n in t.slots] + default_baselines(1, 3)
    points = {fc.name: [p.point[:, 0] for p in stream_forecasts(fc, parts)] for fc in experts}
    bench = ensemble_forecasts(parts, points)
    for s, (series, _), pred in zip(STREAMS, parts, bench, strict=True):
        assert len(live[s]) == len(series) > 100  # one forecast per event, from the first
        # the bench's rows: after events 0 .. N-2 (the last one has no outcome yet)
        np.testing.assert_allclose(np.stack(live[s][:-1]), pred.point[:, 0], rtol=1e-5)
    assert not np.allclose(bench[0].point[:, 0], points["median_10"][0])  # not one expert


def test_weights_rebuilt_from_history_equal_an_uninterrupted_run() -> None:
    events = traffic(300, seed=3)
    uninterrupted, _ = task()
    run(uninterrupted, events)
    restarted, _ = task()
    restarted.on_assign(events)  # a rebalance: state rebuilt from the partitions' history
    ens_a, ens_b = uninterrupted.ensemble, restarted.ensemble
    assert ens_a is not None and ens_b is not None
    for s in STREAMS:
        before, after = ens_a.weights(s), ens_b.weights(s)
        assert before is not None and after is not None
        np.testing.assert_allclose(after, before, rtol=1e-9)
        assert not np.allclose(before, before[0, 0])  # they learnt something
    more = traffic(360, seed=3)[len(events) :]  # the same traffic continues
    after_restart = published(run(restarted, more, len(events)))
    straight_on = published(run(uninterrupted, more, len(events)))
    for s in STREAMS:
        np.testing.assert_allclose(after_restart[s], straight_on[s], rtol=1e-9)


def test_a_forecast_does_not_depend_on_later_events() -> None:
    """Events after the one a forecast follows (in the same micro-batch or later) change
    nothing of it: the outcome it targets is learnt from only once it has been published."""
    events = traffic(200, seed=5)
    k = 150  # the first event that differs; mid-batch for batches of 37
    other = events[:k] + [
        RequestEvent(ev.timestamp_s, ev.request_tokens * 7 + 1000, 1, ev.model) for ev in events[k:]
    ]
    first, second = task(), task()
    a, b = published(run(first[0], events)), published(run(second[0], other))
    for s in STREAMS:
        before = sum(ev.model == s for ev in events[:k])  # forecasts made after events < k
        np.testing.assert_array_equal(np.stack(a[s][:before]), np.stack(b[s][:before]))
        assert not np.allclose(a[s][before + 1], b[s][before + 1])  # the change is seen


def test_a_new_network_version_starts_at_a_new_experts_weight() -> None:
    t, _ = task()
    run(t, traffic(300, seed=9))
    ens = t.ensemble
    assert ens is not None
    k, lstm = len(ens.names), ens.names.index("lstm")
    before = {s: ens.weights(s) for s in STREAMS}
    assert any(abs(w[c, lstm] - 1 / k) > 1e-3 for w in before.values() for c in range(3))
    ens.note_versions({"lstm": 1})  # the version served: nothing changes
    for s in STREAMS:
        np.testing.assert_array_equal(ens.weights(s), before[s])
    t.slots["lstm"].offer(t.slots["lstm"].current().forecaster, 2)  # a swap
    run(t, traffic(301, seed=9)[300:], first=300)  # one event: the batch notes the version
    for s in STREAMS:
        w = ens.weights(s)
        assert w is not None
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        if s == traffic(301, seed=9)[300].model:  # one outcome learnt since the swap
            continue
        np.testing.assert_allclose(w[:, lstm], 1 / k)


def test_without_networks_it_publishes_and_its_weights_are_exported() -> None:
    """No network served yet: the baselines alone make the ensemble, from the first event;
    the weights of a cell sum to 1 and sit beside the load ensemble's, told apart by their
    quantity (gap_s, request_tokens, response_tokens) and horizon_bins 1."""
    t, metrics = task({"lstm": ModelSlot("lstm")})
    messages = run(t, traffic(120, seed=7))
    assert {json.loads(v)["model"] for _, _, v in messages} == {ENSEMBLE}
    assert len(messages) == 120
    ens = t.ensemble
    assert ens is not None
    for s in STREAMS:
        for q in QUANTITIES:
            cell = {
                name: metrics.registry.get_sample_value(
                    WEIGHT, {"stream": s, "model": name, "quantity": q, "horizon_bins": "1"}
                )
                for name in ens.names
            }
            assert cell["lstm"] is not None and cell["lstm"] > 0  # a prior, nothing learnt
            assert abs(sum(v or 0.0 for v in cell.values()) - 1.0) < 1e-9
    metrics.ensemble_weights.clear()  # the load task's own series only
    labels = {"stream": "a", "model": "median_50", "quantity": "gap_s", "horizon_bins": "1"}
    assert metrics.registry.get_sample_value(WEIGHT, labels) is not None
    t.on_assign([])  # a rebalance to nothing: its series go
    assert metrics.registry.get_sample_value(WEIGHT, labels) is None
