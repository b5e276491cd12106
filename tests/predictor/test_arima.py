"""The numpy auto-ARIMA peer: it recovers simulated ARMA coefficients, its AIC picks the
order on clear cases, its fast walk equals fitting block by block without look-ahead, and
it meets the forecaster contract (shapes, finite, ordered bounds, no look-ahead)."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.errors import ConfigError
from predictor.models import Forecaster
from predictor.models.arima import ArimaFit, ArimaPeer, auto_arima, forecast_origins, psi_weights
from tests.predictor.test_forecaster_contract import SEQ_LEN, C


def _arma(
    phi: list[float], theta: list[float], n: int, seed: int, const: float = 0.0
) -> np.ndarray:
    """A simulated ARMA series (a burn-in of 200 dropped)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n + 200)
    w = np.zeros(n + 200)
    for t in range(2, n + 200):
        w[t] = const + e[t]
        w[t] += sum(p * w[t - 1 - i] for i, p in enumerate(phi))
        w[t] += sum(q * e[t - 1 - j] for j, q in enumerate(theta))
    return w[200:]


def test_recovers_ar1() -> None:
    fit = auto_arima(_arma([0.7], [], 1000, seed=1, const=3.0))
    assert fit is not None and fit.order == (1, 0, 0)
    assert fit.phi[0] == pytest.approx(0.7, abs=0.05)
    assert fit.const / (1 - fit.phi[0]) == pytest.approx(10.0, abs=0.5)  # the mean
    assert fit.sigma2 == pytest.approx(1.0, abs=0.1)


def test_recovers_ma1() -> None:
    fit = auto_arima(_arma([], [0.6], 1000, seed=2) + 50.0)
    assert fit is not None and fit.order == (0, 0, 1)
    assert fit.theta[0] == pytest.approx(0.6, abs=0.07)
    assert fit.const == pytest.approx(50.0, abs=0.2)


def test_recovers_arima110() -> None:
    y = 100.0 + np.cumsum(_arma([0.5], [], 1000, seed=3))
    fit = auto_arima(y)
    assert fit is not None and fit.order == (1, 1, 0)
    assert fit.phi[0] == pytest.approx(0.5, abs=0.06)


@pytest.mark.parametrize(
    ("phi", "theta", "d", "order"),
    [
        ([0.8], [], 0, (1, 0, 0)),
        ([0.6, -0.3], [], 0, (2, 0, 0)),
        ([], [0.8], 0, (0, 0, 1)),
        ([], [], 0, (0, 0, 0)),
        ([], [], 1, (0, 1, 0)),
        ([0.7], [], 1, (1, 1, 0)),
    ],
)
def test_aic_picks_the_order_on_clear_cases(
    phi: list[float], theta: list[float], d: int, order: tuple[int, int, int]
) -> None:
    picked = []
    for seed in range(8):
        w = _arma(phi, theta, 800, seed=10 + seed)
        fit = auto_arima(20.0 + (np.cumsum(w) if d else w))
        assert fit is not None
        picked.append(fit.order)
    assert picked.count(order) >= 5, picked  # the AIC overfits now and then


def test_forecast_decays_to_the_mean_and_the_interval_widens() -> None:
    fit = ArimaFit(0, np.array([0.8]), np.array([]), 2.0, 1.5, 0.0)  # mean 10
    y = _arma([0.8], [], 300, seed=4, const=2.0)
    point, lower, upper = forecast_origins(fit, y, len(y) - 1, 60)
    want = 10.0 + (y[-1] - 10.0) * 0.8 ** np.arange(1, 61)
    np.testing.assert_allclose(point[0], want, rtol=1e-9)
    width = upper[0] - lower[0]
    assert (np.diff(width) > 0).all()
    # the long-run 80 % half-width of an AR(1): z sigma / sqrt(1 - phi^2)
    assert width[-1] / 2 == pytest.approx(1.28155 * np.sqrt(1.5 / (1 - 0.64)), rel=1e-4)


def test_ma_forecast_uses_the_last_shock_then_the_mean() -> None:
    fit = ArimaFit(0, np.array([]), np.array([0.5]), 4.0, 1.0, 0.0)
    y = np.array([4.0, 5.0, 3.0, 6.0])  # residuals 0, 1, -1.5, 2.75
    point = forecast_origins(fit, y, 3, 3)[0][0]
    np.testing.assert_allclose(point, [4.0 + 0.5 * 2.75, 4.0, 4.0])


def test_psi_weights_of_an_integrated_model_accumulate() -> None:
    fit = ArimaFit(1, np.array([0.5]), np.array([]), 0.0, 1.0, 0.0)
    np.testing.assert_allclose(psi_weights(fit, 5), np.cumsum(0.5 ** np.arange(5)), rtol=1e-12)
    y = np.array([10.0, 12.0, 13.0])  # last step +1: then +0.5, +0.25
    np.testing.assert_allclose(forecast_origins(fit, y, 2, 2)[0][0], [13.5, 13.75])


def test_rolling_predict_matches_refits_and_never_looks_ahead() -> None:
    rng = np.random.default_rng(6)
    series = np.abs(50.0 + np.cumsum(rng.normal(0.0, 3.0, size=(400, 2)), axis=0))
    fc = ArimaPeer(horizon=4, channels=2, seq_len=100, refit_every=25)
    walked = fc.rolling_predict(series, start=150)
    assert walked.point.shape == (250, 4, 2)
    # origin 180 uses the fit made at 175 on rows 76..175 and the state up to 180
    fit = auto_arima(series[76:176, 1])
    want = forecast_origins(fit, series[76:181, 1], 104, 4)[0][0]
    np.testing.assert_allclose(walked.point[30, :, 1], np.maximum(want, 0.0), rtol=1e-12)
    # changing rows after t leaves the forecast made at t as it was
    changed = series.copy()
    changed[300:] *= 5.0
    again = fc.rolling_predict(changed, start=150)
    np.testing.assert_array_equal(again.point[:150], walked.point[:150])  # origins < 300
    assert not np.array_equal(again.point[150:], walked.point[150:])


def test_fast_walk_is_fast_and_finite() -> None:
    rng = np.random.default_rng(7)
    series = rng.gamma(2.0, 30.0, size=(3000, 3)) * (1 + np.sin(np.arange(3000) / 200.0))[:, None]
    pred = ArimaPeer(horizon=30, channels=3).rolling_predict(series, start=200)
    assert pred.point.shape == (2800, 30, 3)
    for part in (pred.point, pred.lower, pred.upper):
        assert np.isfinite(part).all()
    assert (pred.lower <= pred.point).all() and (pred.point <= pred.upper).all()
    assert (pred.lower >= 0).all()


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_and_zero_series_give_their_value(value: float) -> None:
    series = np.full((120, 3), value)
    for log1p in (False, True):
        fc = ArimaPeer(horizon=3, channels=3, seq_len=50, refit_every=10, log1p=log1p)
        for pred in (fc.rolling_predict(series, start=0), fc.predict(series[None, -50:])):
            np.testing.assert_allclose(pred.point, value, rtol=1e-12)
            np.testing.assert_allclose(pred.upper - pred.lower, 0.0, atol=1e-12)


def test_log1p_variant_and_kind() -> None:
    fc = ArimaPeer(horizon=2, channels=C, seq_len=SEQ_LEN, log1p=True)
    assert isinstance(fc, Forecaster)
    assert (fc.kind, fc.name) == ("peer", "arima_log1p")
    y = np.exp(_arma([0.6], [], 300, seed=8) * 0.2 + 3.0)
    pred = ArimaPeer(horizon=2, channels=1, seq_len=300, log1p=True).predict(y[None, :, None])
    fit = auto_arima(np.log1p(y))
    want = np.expm1(forecast_origins(fit, np.log1p(y), 299, 2)[0][0])
    np.testing.assert_allclose(pred.point[0, :, 0], want, rtol=1e-12)


def test_short_windows_fall_back_to_the_last_value() -> None:
    series = np.arange(1.0, 31.0)[:, None]
    pred = ArimaPeer(horizon=2, channels=1, seq_len=40).rolling_predict(series)
    np.testing.assert_allclose(pred.point[:9, 0, 0], series[:9, 0])  # under 10 points
    # then a model; a pure trend with d = 1 and no drift is forecast flat
    np.testing.assert_allclose(pred.point[20:, 0, 0], series[20:, 0], rtol=1e-6)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError):
        ArimaPeer(refit_every=0)
    with pytest.raises(ConfigError):
        ArimaPeer(max_order=3)
