"""A small auto-ARIMA in numpy: the ``arima`` load predictor of NVIDIA Dynamo's planner.

Dynamo's SLA planner (``components/planner/src/dynamo/planner/utils/load_predictor.py``)
fits pmdarima's ``auto_arima`` on the last window of each load series and forecasts the
next point. pmdarima (and statsmodels, statsforecast) bring scipy, scikit-learn or a
pandas pin this project does without, so this module is an honest, smaller auto-ARIMA:

- **Order** ``(p, d, q)`` with ``p, q ≤ 2`` and ``d ∈ {0, 1}`` by the AIC of the
  conditional (CSS) Gaussian likelihood, ``n log σ² + 2 (p + q + c + 1)``. Every
  candidate is scored on the one-step errors of the same values ``y_t`` (differencing
  only re-expresses the prediction of ``y_t``), so the AIC also chooses ``d``, where
  pmdarima runs a KPSS test first (which, at 5 %, differences strongly autocorrelated
  but stationary load more often than the AIC does).
- **Fit** by Hannan-Rissanen: a long AR (order about ``log(n)^1.5``) by least squares
  gives residual estimates; ``w_t`` is regressed by OLS on its ``p`` lags, ``q`` lagged
  residuals and (for ``d = 0``) a constant; then once more on the recursive residuals
  of that fit. Candidates that are not stationary or not invertible are dropped; the
  white-noise model always remains. With ``d = 1`` there is no drift term (a drift
  fitted on a short window of bursty load extrapolates badly at long horizons).
- **Forecast** ``h`` steps by the ARMA recursion (future shocks 0), integrated for
  ``d = 1``; the 80 % interval is ``± z_0.9 σ sqrt(Σ ψ_j²)`` with the psi weights of
  the (integrated) model. Forecasts and bounds are clipped at 0.

:meth:`ArimaPeer.predict` (the :class:`~predictor.models.base.Forecaster` protocol)
fits each window afresh. :meth:`ArimaPeer.rolling_predict` fits on the last
``seq_len`` bins before an origin, keeps the parameters for ``refit_every`` origins and
in between updates the state (lags and residuals) point by point, as Dynamo updates its
fitted model; the forecasts of a block are computed together. A window that is too
short (under 10 points) or constant is forecast by its last value with a zero-width
interval. With ``log1p=True`` all of this runs on ``log1p`` of the load and the
forecast is mapped back by ``expm1`` (the name is then ``arima_log1p``).
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import numpy as np

from predictor.errors import ConfigError
from predictor.models.base import QUANTILES, Prediction

#: the standard normal quantile of the upper bound (90 %)
Z_UPPER = 1.2815515655446004
MAX_ORDER = 2
#: largest modulus of an inverse AR or MA root a fitted model may have
STABLE_RADIUS = 0.98
#: fewest points a window needs before a model is fitted
MIN_POINTS = 10

assert math.isclose(QUANTILES[-1], 0.9)  # Z_UPPER belongs to that quantile


@dataclass(frozen=True)
class ArimaFit:
    """A fitted ARIMA(p, d, q): ``w_t = c + Σ φ_i w_{t-i} + e_t + Σ θ_j e_{t-j}``."""

    d: int
    phi: np.ndarray
    theta: np.ndarray
    const: float
    sigma2: float
    aic: float

    @property
    def order(self) -> tuple[int, int, int]:
        return len(self.phi), self.d, len(self.theta)


def _lags(x: np.ndarray, k: int, rows: slice) -> np.ndarray:
    """Columns ``x_{t-1} .. x_{t-k}`` for ``t`` in ``rows`` (``[T, k]``)."""
    t = np.arange(len(x))[rows]
    return np.stack([x[t - i] for i in range(1, k + 1)], axis=1) if k else np.empty((len(t), 0))


def arma_residuals(w: np.ndarray, phi: np.ndarray, theta: np.ndarray, const: float) -> np.ndarray:
    """Conditional residuals of ``w`` (residuals before ``len(phi)`` and lags before 0 are 0)."""
    p, q = len(phi), len(theta)
    n = len(w)
    base = np.zeros(n)
    if n > p:
        base[p:] = w[p:] - const - (_lags(w, p, slice(p, n)) @ phi if p else 0.0)
    if q == 0:
        return base
    t1 = float(theta[0])
    t2 = float(theta[1]) if q > 1 else 0.0
    out = [0.0] * n
    prev1 = prev2 = 0.0
    for t, b in enumerate(base.tolist()):  # the MA part is a recursion: q <= 2 scalar terms
        if t >= p:
            cur = b - t1 * prev1 - t2 * prev2
            out[t] = cur
            prev1, prev2 = cur, prev1
    return np.asarray(out)


def _stable(coef: np.ndarray, sign: float) -> bool:
    """Whether the roots of ``1 - sign (c_1 z + c_2 z²)`` lie outside the unit circle (with a
    margin): stationarity for ``sign = 1`` (AR), invertibility for ``sign = -1`` (MA)."""
    a = [sign * float(v) for v in coef]
    if not a:
        return True
    if len(a) == 1:
        return abs(a[0]) < STABLE_RADIUS
    # inverse roots solve x² - a1 x - a2 = 0
    disc = cmath.sqrt(a[0] * a[0] + 4.0 * a[1])
    return max(abs((a[0] + disc) / 2.0), abs((a[0] - disc) / 2.0)) < STABLE_RADIUS


def _ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def long_ar_residuals(w: np.ndarray, const: bool) -> tuple[np.ndarray, int]:
    """Residuals of a long AR (order ``m`` about ``log(n)^1.5``, at most ``n/3``) fitted by
    least squares, 0 before ``m``; and ``m`` (0 where ``w`` is too short for one)."""
    n = len(w)
    m = min(math.ceil(math.log(max(n, 2)) ** 1.5), n // 3)
    e = np.zeros(n)
    if m < MAX_ORDER + 1:
        return e, 0
    x = _lags(w, m, slice(m, n))
    if const:
        x = np.column_stack([np.ones(n - m), x])
    e[m:] = w[m:] - x @ _ols(x, w[m:])
    return e, m


def fit_arma(
    w: np.ndarray,
    p: int,
    q: int,
    const: bool,
    score_from: int = MAX_ORDER,
    long_ar: tuple[np.ndarray, int] | None = None,
) -> ArimaFit | None:
    """Hannan-Rissanen fit of ARMA(p, q) to ``w``; None where it is unstable or too short.

    ``score_from`` is the first index of ``w`` whose residual enters σ² and the AIC, the
    same for every candidate so that their AICs compare. ``long_ar`` is
    :func:`long_ar_residuals` of ``w``, when the caller has it already.
    """
    n = len(w)
    n_params = p + q + int(const)
    if q:
        e, m = long_ar if long_ar is not None else long_ar_residuals(w, const)
        if m == 0:
            return None
        start = m + q
    else:
        e, start = np.zeros(n), p
    if n - start < 2 * n_params + 4 or n - score_from < 2 * n_params + 4:
        return None
    phi, theta, c = np.zeros(p), np.zeros(q), 0.0
    if n_params:
        for _ in range(2 if q else 1):  # HR, then once more on the recursive residuals
            rows = slice(start, n)
            cols = [_lags(w, p, rows), _lags(e, q, rows)]
            if const:
                cols.insert(0, np.ones(n - start))
            coef = _ols(np.column_stack(cols), w[start:])
            c = float(coef[0]) if const else 0.0
            phi = coef[int(const) : int(const) + p]
            theta = coef[int(const) + p :]
            if not (_stable(phi, 1.0) and _stable(theta, -1.0)):
                return None
            e = arma_residuals(w, phi, theta, c)
            start = max(p, q)
    else:
        e = w.copy()
    scored = e[score_from:]
    sigma2 = float(scored @ scored) / len(scored)
    floor = 1e-12 * (1.0 + float(w @ w) / n)
    aic = len(scored) * math.log(max(sigma2, floor)) + 2.0 * (n_params + 1)
    return ArimaFit(0, np.asarray(phi, float), np.asarray(theta, float), c, sigma2, aic)


def auto_arima(
    y: np.ndarray, max_order: int = MAX_ORDER, ds: tuple[int, ...] = (0, 1)
) -> ArimaFit | None:
    """The ARIMA(p, d, q), ``p, q <= max_order``, ``d`` in ``ds``, of least AIC; None where
    ``y`` is too short, not finite or constant.

    Both ``d`` are scored on the one-step errors of the same values ``y_t``, ``t >= 3``
    (differencing only re-expresses the prediction of ``y_t``), so their AICs compare.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < MIN_POINTS or not np.isfinite(y).all() or np.ptp(y) == 0:
        return None
    best: ArimaFit | None = None
    for d in ds:
        w = np.diff(y) if d else y
        const = d == 0
        long_ar = long_ar_residuals(w, const)
        for p in range(max_order + 1):
            for q in range(max_order + 1):
                fit = fit_arma(w, p, q, const, MAX_ORDER + 1 - d, long_ar)
                if fit is not None and (best is None or fit.aic < best.aic):
                    best = ArimaFit(d, fit.phi, fit.theta, fit.const, fit.sigma2, fit.aic)
    return best


def psi_weights(fit: ArimaFit, horizon: int) -> np.ndarray:
    """``ψ_0 .. ψ_{h-1}`` of the model for ``y`` (cumulated when ``d = 1``)."""
    psi = np.zeros(horizon)
    psi[0] = 1.0
    for j in range(1, horizon):
        v = fit.theta[j - 1] if j <= len(fit.theta) else 0.0
        for i, ph in enumerate(fit.phi, start=1):
            if j - i >= 0:
                v += ph * psi[j - i]
        psi[j] = v
    return np.cumsum(psi) if fit.d else psi


def forecast_origins(
    fit: ArimaFit | None, z: np.ndarray, first: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point, lower and upper ``[M, H]`` after every index ``first .. len(z)-1`` of ``z``.

    The state at each origin (lags and residuals) comes from ``z`` up to that origin only.
    """
    origins = np.arange(first, len(z))
    last = z[origins][:, None] * np.ones((1, horizon))
    if fit is None or len(origins) == 0:
        return last, last, last
    w = np.diff(z) if fit.d else z
    e = arma_residuals(w, fit.phi, fit.theta, fit.const)
    idx = origins - fit.d  # index of the origin in w
    p, q = len(fit.phi), len(fit.theta)
    if (idx < max(p, q)).any():  # not enough history for the state: persistence
        return last, last, last
    wl = [w[idx - i] for i in range(p)]  # most recent first
    el = [e[idx - j] for j in range(q)]
    steps = []
    for _ in range(horizon):
        nxt = fit.const + sum((fit.phi[i] * wl[i] for i in range(p)), np.zeros(len(idx)))
        nxt = nxt + sum((fit.theta[j] * el[j] for j in range(q)), np.zeros(len(idx)))
        steps.append(nxt)
        wl = [nxt, *wl[:-1]] if p else wl
        el = [np.zeros(len(idx)), *el[:-1]] if q else el
    point = np.stack(steps, axis=1)  # [M, H]
    if fit.d:
        point = z[origins][:, None] + np.cumsum(point, axis=1)
    half = Z_UPPER * np.sqrt(fit.sigma2 * np.cumsum(psi_weights(fit, horizon) ** 2))
    return point, point - half[None, :], point + half[None, :]


class ArimaPeer:
    """Auto-ARIMA per channel on the last ``seq_len`` values (module docstring)."""

    kind = "peer"

    def __init__(
        self,
        horizon: int = 1,
        channels: int = 3,
        seq_len: int = 200,
        refit_every: int = 50,
        log1p: bool = False,
        max_order: int = MAX_ORDER,
    ) -> None:
        if horizon < 1 or seq_len < 1 or refit_every < 1 or not 0 <= max_order <= MAX_ORDER:
            raise ConfigError(
                "the ARIMA peer needs horizon, seq_len, refit_every >= 1 and 0 <= max_order <= 2"
            )
        self.horizon, self.channels, self.seq_len = horizon, channels, seq_len
        self.refit_every, self.log1p, self.max_order = refit_every, log1p, max_order
        self.name = "arima_log1p" if log1p else "arima"

    def _to(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.log1p(np.maximum(x, 0.0)) if self.log1p else x

    def _back(self, parts: tuple[np.ndarray, ...]) -> Prediction:
        point, lower, upper = parts
        if self.log1p:
            point, lower, upper = (np.expm1(np.minimum(v, 700.0)) for v in (point, lower, upper))
        point = np.maximum(point, 0.0)
        return Prediction(point, np.clip(lower, 0.0, point), np.maximum(upper, point))

    def predict(self, windows: np.ndarray) -> Prediction:
        """Fit each window ``[B, L, C]`` and channel on its own."""
        z = self._to(windows[:, -self.seq_len :, :])
        b, length, c = z.shape
        out = [np.zeros((b, self.horizon, c)) for _ in range(3)]
        for i in range(b):
            for j in range(c):
                fit = auto_arima(z[i, :, j], self.max_order)
                parts = forecast_origins(fit, z[i, :, j], length - 1, self.horizon)
                for k in range(3):
                    out[k][i, :, j] = parts[k][0]
        return self._back((out[0], out[1], out[2]))

    def _walk(self, x: np.ndarray, start: int) -> tuple[np.ndarray, ...]:
        """Forecasts ``[N - start, H]`` of one channel, refitting every ``refit_every`` origins."""
        n = len(x)
        parts: list[tuple[np.ndarray, ...]] = []
        t = start
        while t < n:
            lo = max(0, t + 1 - self.seq_len)
            fit = auto_arima(x[lo : t + 1], self.max_order)
            short = fit is None and t + 1 - lo < max(self.seq_len, MIN_POINTS)
            end = t + 1 if short else min(n, t + self.refit_every)  # refit while too short
            parts.append(forecast_origins(fit, x[lo:end], t - lo, self.horizon))
            t = end
        if not parts:
            empty = np.empty((0, self.horizon))
            return empty, empty, empty
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))

    def rolling_predict(self, series: np.ndarray, start: int = 0) -> Prediction:
        """Forecast after every row ``t >= start`` of ``series [N, C]`` from rows ``<= t`` only."""
        x = self._to(series)
        walked = [self._walk(x[:, j], start) for j in range(x.shape[1])]
        return self._back(tuple(np.stack([w[k] for w in walked], axis=2) for k in range(3)))
