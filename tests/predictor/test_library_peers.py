"""The library peers (statsforecast's AutoARIMA, AutoETS, Theta; filterpy's Kalman filter;
Prophet).

With the library installed (CI's second venv, the ``stats`` extra): each forecasts finite,
non-negative values of the right shape, walks without look-ahead, and agrees with our own
numpy peer where both implement the same model. Everywhere: asking for one whose library
is missing is a one-line error that names the extra.
"""

from __future__ import annotations

import numpy as np
import pytest

from predictor import experts
from predictor.errors import ConfigError
from predictor.experts import EXTRAS, LIBRARY_PEERS, check_peers, load_peers
from predictor.models import filterpy_kalman, prophet_peer, sf
from predictor.models.arima import ArimaPeer
from predictor.models.kalman import KalmanTrend
from stream.cli import main
from trainer.evaluation.load_config import LoadBacktestConfig

SF = ("sf_autoarima", "sf_autoets", "sf_theta")


def _ar1(n: int, channels: int, seed: int) -> np.ndarray:
    """AR(1) around 10 (phi 0.7, unit shocks), ``[n, channels]``."""
    rng = np.random.default_rng(seed)
    y = np.full((n, channels), 10.0)
    for t in range(1, n):
        y[t] = 3.0 + 0.7 * y[t - 1] + rng.standard_normal(channels)
    return y


def _bursty(n: int, channels: int, seed: int) -> np.ndarray:
    """Sparse load: mostly empty bins with Poisson bursts (like short bins of a real trace)."""
    rng = np.random.default_rng(seed)
    return rng.poisson(0.6, size=(n, channels)) * rng.exponential(50.0, size=(n, channels))


@pytest.mark.parametrize("name", [*SF, "filterpy_kalman", "prophet"])
def test_library_peer_forecasts_finite_nonnegative(name: str) -> None:
    pytest.importorskip(LIBRARY_PEERS[name])
    (fc,) = load_peers((name,), horizon=4, channels=3)
    assert (fc.name, fc.kind) == (name, "peer")
    series = _bursty(120, 3, seed=1)
    windows = np.stack([series[s : s + 80] for s in (0, 20, 40)])
    for pred in (fc.predict(windows), fc.predict(np.zeros((1, 80, 3)))):
        for part in (pred.point, pred.lower, pred.upper):
            assert part.shape == (len(pred), 4, 3)
            assert np.isfinite(part).all() and (part >= 0).all()
        assert (pred.lower <= pred.point).all() and (pred.point <= pred.upper).all()


@pytest.mark.parametrize("name", SF)
def test_sf_walk_sees_no_later_bins(name: str) -> None:
    pytest.importorskip("statsforecast")
    fc = sf.SfPeer(name, horizon=3, channels=2, seq_len=60, refit_every=20)
    series = _ar1(160, 2, seed=4)
    base = fc.rolling_predict(series, 100)
    assert base.point.shape == (60, 3, 2) and np.isfinite(base.point).all()
    changed = series.copy()
    changed[131:] *= 50.0
    again = fc.rolling_predict(changed, 100)
    np.testing.assert_array_equal(base.point[:31], again.point[:31])
    assert not np.array_equal(base.point[31:], again.point[31:])


def test_sf_autoarima_agrees_with_our_arima_on_ar1() -> None:
    pytest.importorskip("statsforecast")
    y = _ar1(600, 2, seed=3)  # stationary sd 1.4 around 10
    windows = np.stack([y[s : s + 200] for s in range(0, 401, 100)])
    ours = ArimaPeer(5, 2).predict(windows).point
    theirs = sf.SfPeer("sf_autoarima", 5, 2).predict(windows).point
    assert np.abs(ours - theirs).max() < 1.0
    assert np.abs(ours - theirs).mean() < 0.3
    # both revert toward the mean of 10 from where the window ends
    assert np.abs(theirs[:, -1, :] - 10.0).max() < np.abs(windows[:, -1, :] - 10.0).max() + 0.5


def test_filterpy_kalman_equals_our_kalman() -> None:
    pytest.importorskip("filterpy")
    series = np.concatenate([np.zeros((15, 3)), _bursty(100, 3, seed=5)])  # leading idle run
    windows = np.stack([series[s : s + 60] for s in range(0, 56, 5)])
    ours = KalmanTrend(6, 3).predict(windows)
    theirs = filterpy_kalman.FilterpyKalman(6, 3).predict(windows)
    np.testing.assert_allclose(theirs.point, ours.point, rtol=1e-9, atol=1e-9)
    # its own interval widens with the horizon (the filter's h-step variance)
    unclipped = (theirs.lower.min(axis=1) > 0).T  # [C, B]: no bound clipped at 0
    width = (theirs.upper - theirs.lower).transpose(2, 0, 1)[unclipped]  # [K, H]
    assert len(width) and (np.diff(width, axis=1) > 0).all()


@pytest.mark.parametrize("name", list(LIBRARY_PEERS))
def test_missing_library_is_a_one_line_error(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(experts, "library_available", lambda library: False)
    message = f"peer {name} needs {LIBRARY_PEERS[name]}, which is not installed: "
    extra = EXTRAS[LIBRARY_PEERS[name]]
    message += f"pip install 'reqcast[{extra}]'"
    with pytest.raises(ConfigError) as info:
        LoadBacktestConfig(peers=("kalman", name))
    assert str(info.value) == message
    with pytest.raises(ConfigError, match=rf"reqcast\[{extra}\]"):
        load_peers((name,), horizon=1)
    argv = ["bench", "accuracy", "--task", "load", "--peers", "arima", name, "--no-progress"]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.skipif(sf.available(), reason="statsforecast is installed")
def test_sf_peer_without_statsforecast_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"sf_theta needs statsforecast.*reqcast\[stats\]"):
        sf.SfPeer("sf_theta")
    with pytest.raises(ConfigError, match=r"reqcast\[stats\]"):
        check_peers(("sf_autoarima",))


@pytest.mark.skipif(filterpy_kalman.available(), reason="filterpy is installed")
def test_filterpy_peer_without_filterpy_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"filterpy_kalman needs filterpy.*reqcast\[stats\]"):
        filterpy_kalman.FilterpyKalman()


@pytest.mark.skipif(prophet_peer.available(), reason="prophet is installed")
def test_prophet_peer_without_prophet_names_the_extra() -> None:
    with pytest.raises(ConfigError, match=r"prophet needs the prophet library.*reqcast\[prophet\]"):
        prophet_peer.ProphetPeer()


def test_prophet_follows_a_level_shift() -> None:
    pytest.importorskip("prophet")
    y = np.concatenate([np.full(30, 5.0), np.full(30, 50.0)])
    y = y + np.random.default_rng(2).normal(0.0, 0.5, 60)
    pred = prophet_peer.ProphetPeer(horizon=2, channels=1).predict(y[None, :, None])
    assert np.abs(pred.point[0, :, 0] - 50.0).max() < 20.0  # near the new level, not the mean
    assert (pred.lower <= pred.point).all() and (pred.point <= pred.upper).all()


def test_unknown_peer_lists_the_library_peers() -> None:
    with pytest.raises(ConfigError, match="known: kalman, kalman_log1p, arima, sf_autoarima"):
        check_peers(("nope",))
