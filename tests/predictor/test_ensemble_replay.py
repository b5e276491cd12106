"""The ensemble replay: delayed per-horizon updates, no look-ahead, convergence."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.ensemble import DelayedAggregator, replay

NAMES = ["a", "b", "c"]


def _walk(n: int = 300, horizon: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A positive series ``[n, 2]`` and three noisy experts' forecasts ``[n-1, H, 2, 3]``."""
    rng = np.random.default_rng(seed)
    series = rng.poisson(20.0, size=(n, 2)).astype(np.float64)
    forecasts = rng.uniform(5.0, 40.0, size=(n - 1, horizon, 2, len(NAMES)))
    return series, forecasts


def test_changing_future_outcomes_never_changes_an_earlier_forecast() -> None:
    series, forecasts = _walk()
    horizons = (1, 6)
    before = replay(series, 0, forecasts, horizons, NAMES)
    for cut in (50, 120, 200):
        changed = series.copy()
        changed[cut + 1 :] *= 3.0  # bins after origin `cut` are not known when it forecasts
        later = forecasts.copy()
        later[cut + 1 :] += 7.0
        after = replay(changed, 0, later, horizons, NAMES)
        cols = [h - 1 for h in horizons]
        np.testing.assert_array_equal(after[: cut + 1, cols], before[: cut + 1, cols])
        assert not np.allclose(after[cut + 1 :, cols], before[cut + 1 :, cols])


def test_horizon_h_learns_only_from_forecasts_h_bins_old() -> None:
    """The forecast made at t for t+6 is scored at t+6: until then horizon 6 keeps its prior."""
    agg = DelayedAggregator(NAMES, (1, 6), channels=1)
    x = np.array([[[10.0, 20.0, 30.0]], [[10.0, 20.0, 30.0]]])  # [horizons, C, K]
    for t in range(6):
        agg.observe(np.array([10.0]), t)
        agg.forecast(x, t)
        if t >= 1:  # horizon 1 has matured forecasts from t = 1 on
            assert agg.weights(1)[0, 0] > 1 / 3
        np.testing.assert_allclose(agg.weights(6), 1 / 3)
    agg.observe(np.array([10.0]), 6)  # bin 6: the forecast made at 0 for horizon 6 matures
    assert agg.weights(6)[0, 0] > 1 / 3


def test_a_forecast_whose_target_bin_was_skipped_never_updates() -> None:
    """After a gap (bins 3-9 never observed) the forecasts that targeted them are dropped:
    bin 10's outcome matures only the forecast made for bin 10."""
    agg = DelayedAggregator(NAMES, (1,), channels=1)
    good_first = np.array([[[10.0, 99.0, 99.0]]])
    good_third = np.array([[[99.0, 99.0, 10.0]]])
    agg.observe(np.array([10.0]), 0)
    agg.forecast(good_first, 0)  # targets bin 1
    agg.observe(np.array([10.0]), 1)
    w1 = agg.weights(1)[0].copy()
    assert w1[0] > w1[2]
    agg.forecast(good_first, 2)  # targets bin 3, which never comes
    agg.forecast(good_third, 9)  # targets bin 10
    agg.observe(np.array([10.0]), 10)
    w = agg.weights(1)[0]
    assert w[2] > w1[2]  # learnt from the forecast for bin 10 ...
    assert w[0] < w1[0]  # ... and not from the stale one for bin 3 (that would favour 0)


@pytest.mark.parametrize("horizon", [1, 6, 30])
def test_one_exact_expert_drives_the_error_to_zero(horizon: int) -> None:
    rng = np.random.default_rng(1)
    n = 1500
    series = np.maximum(rng.normal(50.0, 15.0, size=(n, 1)), 0.0)
    t = np.arange(n - 1)
    steps = np.arange(1, horizon + 1)
    idx = np.minimum(t[:, None] + steps[None, :], n - 1)  # [T, H]
    exact = series[idx]  # [T, H, 1]: the outcome itself
    flat = np.broadcast_to(series[t][:, None, :], exact.shape)  # persistence
    noisy = exact * rng.uniform(0.5, 1.5, size=exact.shape)
    forecasts = np.stack([flat, noisy, exact], axis=-1)
    out = replay(series, 0, forecasts, (horizon,), NAMES)[:, horizon - 1, 0]
    tail = slice(n // 2, n - 1 - horizon)
    err = np.abs(out[tail] - exact[tail, horizon - 1, 0]).mean()
    others = min(
        np.abs(f[tail, horizon - 1, 0] - exact[tail, horizon - 1, 0]).mean() for f in (flat, noisy)
    )
    assert err < 0.02 * others


def test_replay_checks_shapes() -> None:
    series, forecasts = _walk(horizon=2)
    with pytest.raises(ValueError, match="names"):
        replay(series, 0, forecasts, (1,), ["a", "b"])
    with pytest.raises(ValueError, match="beyond"):
        replay(series, 0, forecasts, (6,), NAMES)
