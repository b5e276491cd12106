"""Online aggregation of experts: it finds an exact expert, follows a switch, keeps its
regret bound, never looks ahead, survives a JSON round trip, and copes with late and
not-yet-warm experts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from predictor.aggregation import RULES, OnlineAggregator, pinball_loss
from predictor.errors import ConfigError


def _run(agg: OnlineAggregator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Publish then learn over ``x [T, cells, K]``, ``y [T, cells]``: aggregates, weights."""
    aggs, weights = [], []
    for t in range(len(y)):
        a = agg.aggregate(x[t])
        aggs.append(a)
        weights.append(agg.weights())
        agg.update(x[t], y[t], a)
    return np.array(aggs), np.array(weights)


def _noisy(seed: int, steps: int = 400, cells: int = 3, k: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.gamma(2.0, 50.0, size=(steps, cells))
    x = y[:, :, None] + rng.normal(0.0, 20.0, size=(steps, cells, k)) + rng.uniform(-30, 30, k)
    return x, y


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_one_exact_expert_takes_all_the_weight(rule: str, tau: float) -> None:
    rng = np.random.default_rng(1)
    steps, cells = 600, 2
    y = rng.gamma(2.0, 100.0, size=(steps, cells))
    others = y[:, :, None] + rng.choice([-1.0, 1.0], (steps, cells, 2)) * rng.uniform(
        20, 80, (steps, cells, 2)
    )
    x = np.concatenate([others[:, :, :1], y[:, :, None], others[:, :, 1:]], axis=2)
    agg = OnlineAggregator(["a", "exact", "b"], cells=cells, tau=tau, rule=rule)
    aggs, weights = _run(agg, x, y)
    err_first = np.abs(aggs[:50] - y[:50]).mean()
    err_last = np.abs(aggs[-50:] - y[-50:]).mean()
    if rule == "boa":
        assert (weights[-1, :, 1] > 0.999).all(), weights[-1, :, 1]
        assert err_last < 1e-3 * err_first, err_last / err_first
    else:  # fixed share keeps >= alpha/K on each expert and its rate stays ready to switch
        assert (weights[-1, :, 1] > 0.8).all(), weights[-1, :, 1]
        assert err_last < 0.5 * err_first, err_last / err_first


def test_fixed_share_follows_a_switch_within_bounded_steps() -> None:
    rng = np.random.default_rng(2)
    period, switches, cells = 300, 8, 4
    steps = period * switches
    y = rng.uniform(100.0, 1000.0, size=(steps, cells))
    wrong = y + rng.choice([-1.0, 1.0], (steps, cells)) * rng.uniform(50.0, 150.0, (steps, cells))
    phase = (np.arange(steps) // period) % 2  # which expert is exact
    x = np.where(phase[:, None, None] == np.arange(2), y[:, :, None], wrong[:, :, None])
    _, weights = _run(OnlineAggregator(["a", "b"], cells=cells, rule="fixed_share"), x, y)
    right = weights[np.arange(steps), :, phase]  # [T, cells]
    for s in range(1, switches):
        start = s * period
        lag = 40  # bounded: the loser is never below alpha / K, so it recovers geometrically
        assert (right[start + lag : start + period] > 0.9).all(), f"switch {s}"
    # BOA with its decreasing rates is no tracker: after the switch it stays behind longer
    _, boa = _run(OnlineAggregator(["a", "b"], cells=cells, rule="boa"), x, y)
    boa_right = boa[np.arange(steps), :, phase]
    assert (boa_right[period * (switches - 1) + 40] < 0.9).any()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_regret_to_the_best_expert_within_the_bound(rule: str, tau: float) -> None:
    """Pinball regret to the best expert <= L (sqrt(T ln K) + ln K), L the loss range.

    BOA's bound is O(sqrt(V ln K) + B ln K) with V <= T B^2 (Wintenberger 2017), here
    with constant 1 on outcomes in {0, 1} and forecasts in [0, 1]. Half the cells hold
    one good expert (uniform weights would lose linearly there), half hold pure noise.
    """
    steps, k, cells = 2000, 4, 16
    bound = max(tau, 1 - tau) * (math.sqrt(steps * math.log(k)) + math.log(k))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        y = (rng.uniform(size=(steps, cells)) < rng.uniform(0.2, 0.8, cells)).astype(float)
        x = rng.uniform(size=(steps, cells, k))
        good = np.clip(y + rng.normal(0.0, 0.25, (steps, cells)), 0.0, 1.0)
        x[:, ::2, 0] = good[:, ::2]
        aggs, _ = _run(OnlineAggregator(list("abcd"), cells=cells, tau=tau, rule=rule), x, y)
        loss_agg = pinball_loss(aggs, y, tau).sum(axis=0)
        loss_best = pinball_loss(x, y[:, :, None], tau).sum(axis=0).min(axis=1)
        assert (loss_agg - loss_best <= bound).all(), (seed, (loss_agg - loss_best).max(), bound)


@pytest.mark.parametrize("rule", RULES)
def test_uniform_mixture_would_break_that_bound(rule: str) -> None:
    """The regret test can fail: the equal-weight average of the same experts does."""
    steps, k, cells, tau = 2000, 4, 16, 0.5
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(steps, cells)) < 0.5).astype(float)
    x = rng.uniform(size=(steps, cells, k))
    x[:, :, 0] = np.clip(y + rng.normal(0.0, 0.25, (steps, cells)), 0.0, 1.0)
    bound = max(tau, 1 - tau) * (math.sqrt(steps * math.log(k)) + math.log(k))
    uniform = pinball_loss(x.mean(axis=2), y, tau).sum(axis=0)
    best = pinball_loss(x, y[:, :, None], tau).sum(axis=0).min(axis=1)
    assert (uniform - best > bound).all()


@pytest.mark.parametrize("rule", RULES)
def test_scale_free_weights(rule: str) -> None:
    x, y = _noisy(3)
    _, w1 = _run(OnlineAggregator(list("abcd"), cells=3, rule=rule), x, y)
    _, w2 = _run(OnlineAggregator(list("abcd"), cells=3, rule=rule), x * 1e4, y * 1e4)
    np.testing.assert_allclose(w1, w2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_no_look_ahead(rule: str) -> None:
    x, y = _noisy(4, steps=200)
    base, _ = _run(OnlineAggregator(list("abcd"), cells=3, rule=rule), x, y)
    rng = np.random.default_rng(9)
    for t in (0, 1, 50, 198):
        changed = y.copy()
        changed[t:] = rng.uniform(0.0, 1e4, size=changed[t:].shape)
        aggs, _ = _run(OnlineAggregator(list("abcd"), cells=3, rule=rule), x, changed)
        np.testing.assert_array_equal(aggs[: t + 1], base[: t + 1])  # published before y[t]
        assert not np.array_equal(aggs[t + 1 :], base[t + 1 :]) or t == 198


@pytest.mark.parametrize("rule", RULES)
def test_state_round_trip_equals_an_uninterrupted_run(rule: str) -> None:
    x, y = _noisy(5, steps=300)
    whole = OnlineAggregator(list("abcd"), cells=3, rule=rule)
    _, w_whole = _run(whole, x, y)
    first = OnlineAggregator(list("abcd"), cells=3, rule=rule)
    _run(first, x[:137], y[:137])
    restored = OnlineAggregator.from_dict(json.loads(json.dumps(first.to_dict())))
    _, w_rest = _run(restored, x[137:], y[137:])
    np.testing.assert_array_equal(w_rest, w_whole[137:])
    np.testing.assert_array_equal(restored.weights(), whole.weights())
    assert restored.to_dict() == whole.to_dict()


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.update(version=99), "version"),
        (lambda s: s.pop("v"), "malformed"),
        (lambda s: s["v"][0].append(1.0), "shape"),
        (lambda s: s["b"].__setitem__(0, [float("nan")] * len(s["b"][0])), "non-finite"),
        (lambda s: s["v"].__setitem__(0, [-1.0] * len(s["v"][0])), ">= 0"),
        (lambda s: s.update(rule="ml_poly"), "rule"),
        (lambda s: s.update(names=[1, 2, 3, 4]), "names"),
        (lambda s: s.update(updates=[1]), "updates"),
    ],
)
def test_malformed_state_is_refused(edit: object, match: str) -> None:
    agg = OnlineAggregator(list("abcd"), cells=2, rule="boa")
    x, y = _noisy(6, steps=20, cells=2)
    _run(agg, x, y)
    state = json.loads(json.dumps(agg.to_dict()))
    edit(state)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=match):
        OnlineAggregator.from_dict(state)


@pytest.mark.parametrize("rule", RULES)
def test_late_joiner_starts_at_its_share_and_learns_from_then(rule: str) -> None:
    x, y = _noisy(7, steps=200)
    agg = OnlineAggregator(["a", "b", "c"], cells=3, rule=rule)
    _run(agg, x[:100, :, :3], y[:100])
    before = agg.weights()
    agg.add_expert("exact")
    w = agg.weights()
    np.testing.assert_allclose(w[:, 3], 0.25)  # 1 / K of the new K
    np.testing.assert_allclose(w[:, :3].sum(axis=1), 0.75)  # the others keep the rest
    if rule == "fixed_share":  # and their ratios (BOA's rates change with ln K)
        np.testing.assert_allclose(w[:, :3], before * 0.75)
    late = x[100:].copy()
    late[:, :, 3] = y[100:]
    _, weights = _run(agg, late, y[100:])
    assert (weights[-1, :, 3] > (0.99 if rule == "boa" else 0.8)).all(), weights[-1, :, 3]
    with pytest.raises(ConfigError, match="already"):
        agg.add_expert("exact")


@pytest.mark.parametrize("rule", RULES)
def test_nan_expert_is_left_out_and_not_scored(rule: str) -> None:
    x, y = _noisy(8, steps=100)
    x[:, :, 2] = np.nan  # expert c is never warm
    x[:50, 0, 3] = np.nan  # expert d is cold in cell 0 for the first 50 steps
    agg = OnlineAggregator(list("abcd"), cells=3, rule=rule)
    aggs, weights = _run(agg, x, y)
    assert np.isfinite(aggs).all()
    if rule == "boa":  # an expert that never forecast keeps its prior and is never scored
        np.testing.assert_allclose(weights[:, :, 2], 0.25)
        state = agg.to_dict()
        assert all(row[2] == 0.0 for key in ("v", "b", "regret") for row in state[key])
        assert all(row[k] > 0 for row in state["v"] for k in (0, 1, 3))  # the others were
    p = weights[10, 0]
    expected = (p[:2] * x[10, 0, :2]).sum() / p[:2].sum()  # renormalised over a and b
    assert aggs[10, 0] == pytest.approx(expected)


def test_no_forecast_no_update() -> None:
    agg = OnlineAggregator(["a", "b"], cells=2)
    state = agg.to_dict()
    x = np.array([[np.nan, np.nan], [np.nan, np.nan]])
    assert np.isnan(agg.aggregate(x)).all()
    agg.update(x, np.array([1.0, 2.0]))
    agg.update(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([np.nan, np.nan]))
    assert agg.to_dict() == state


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="rule"):
        OnlineAggregator(["a"], rule="ewa")
    with pytest.raises(ConfigError, match="quantile"):
        OnlineAggregator(["a"], tau=1.0)
    with pytest.raises(ConfigError, match="at least one expert"):
        OnlineAggregator([])
    with pytest.raises(ValueError, match="cells, K"):
        OnlineAggregator(["a", "b"], cells=2).aggregate(np.zeros((2, 3)))


# --- log1p space ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_log1p_space_is_the_raw_rule_on_log1p_values(rule: str) -> None:
    x, y = _noisy(8, steps=150)
    x = np.maximum(x, 0.0)
    in_log = OnlineAggregator(list("abcd"), cells=3, rule=rule, space="log1p")
    on_logs = OnlineAggregator(list("abcd"), cells=3, rule=rule)
    for t in range(len(y)):
        published = in_log.aggregate(x[t])
        want = on_logs.aggregate(np.log1p(x[t]))
        np.testing.assert_allclose(published, np.expm1(want), rtol=1e-12)
        in_log.update(x[t], y[t], published)
        on_logs.update(np.log1p(x[t]), np.log1p(y[t]), want)
        np.testing.assert_allclose(in_log.weights(), on_logs.weights(), rtol=1e-9, atol=1e-12)


def test_log1p_space_sheds_a_wildly_wrong_expert() -> None:
    # a trend extrapolated in log space: right at first, then off by orders of magnitude
    rng = np.random.default_rng(9)
    steps = 300
    y = rng.gamma(4.0, 25.0, size=(steps, 1))
    good = y * rng.uniform(0.8, 1.2, size=(steps, 1))
    wild = np.where(rng.uniform(size=(steps, 1)) < 0.2, 1e8, y)
    x = np.stack([good, wild], axis=2)  # [T, 1, 2]
    mae = {}
    for space in ("raw", "log1p"):
        aggs, _ = _run(OnlineAggregator(["good", "wild"], space=space), x, y)
        mae[space] = float(np.abs(aggs[100:] - y[100:]).mean())
    good_mae = float(np.abs(good[100:] - y[100:]).mean())
    assert mae["log1p"] < 1.5 * good_mae
    assert mae["raw"] > 100.0 * good_mae  # what the per-expert rate allows in raw space


def test_log1p_space_survives_the_round_trip_and_old_states_read_as_raw() -> None:
    x, y = _noisy(10, steps=60)
    agg = OnlineAggregator(list("abcd"), cells=3, space="log1p")
    _run(agg, np.maximum(x, 0.0), y)
    restored = OnlineAggregator.from_dict(json.loads(json.dumps(agg.to_dict())))
    assert restored.space == "log1p" and restored.to_dict() == agg.to_dict()
    old = agg.to_dict()
    del old["space"]
    assert OnlineAggregator.from_dict(old).space == "raw"
    with pytest.raises(ConfigError, match="space"):
        OnlineAggregator(["a"], space="log")


def test_weights_are_recomputed_after_every_change_and_never_shared() -> None:
    """Weights are kept between updates; a copy goes out, and every update, new expert or
    renewal gives the weights of the new state (as computed afresh)."""
    for rule in ("boa", "fixed_share"):
        agg = OnlineAggregator(["a", "b"], cells=2, rule=rule, space="log1p")
        rng = np.random.default_rng(1)
        for step in range(30):
            x = rng.uniform(0, 10, size=(2, agg.k))
            before = agg.weights()
            before[:] = -1.0  # a caller's copy: writing to it changes nothing
            agg.aggregate(x)
            agg.update(x, rng.uniform(0, 10, size=2))
            np.testing.assert_array_equal(agg.weights(), agg._compute_weights())
            if step == 10:
                agg.add_expert("c")
                np.testing.assert_array_equal(agg.weights(), agg._compute_weights())
            if step == 20:
                agg.renew_expert("a")
                np.testing.assert_array_equal(agg.weights(), agg._compute_weights())
        clone = OnlineAggregator.from_dict(agg.to_dict())
        np.testing.assert_array_equal(clone.weights(), agg.weights())
