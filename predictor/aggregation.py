"""Online aggregation of experts: convex weights that track the best forecaster.

One :class:`OnlineAggregator` weighs ``K`` experts for many independent *cells* at
once (one cell per stream × quantity × horizon, say): its state is ``[cells, K]``
arrays and every call is vectorised over the cells. Per cell it publishes the convex
combination ``sum_k w_k x_k`` of the experts' forecasts for one quantile ``tau`` and,
when the outcome ``y`` is known, scores each expert by the pinball loss of level
``tau`` (``tau = 0.5`` is half the absolute loss, so the median aggregate minimises
MAE) and moves the weights.

Both rules work on the linearised loss (the "gradient trick"): with
``g = 1{y < x̂} - tau`` the subgradient of the pinball loss at the aggregate ``x̂``,
expert ``k``'s instantaneous regret is ``r_k = g (x̂ - x_k)`` (positive when the
expert was better). By convexity the aggregate's regret in pinball loss is at most
its regret in these linearised losses, so the guarantees below hold for the pinball
loss itself.

``rule="boa"`` (the default): Bernstein Online Aggregation (Wintenberger 2017, in the
form of EDF's R package opera, ``BOA.R``) with a second-order learning rate per
expert that needs no loss range::

    B_k = max_s |r_k,s|        V_k = sum_s r_k,s^2
    eta_k = min(1 / (2 B_k), sqrt(ln K / V_k))
    R_k += r_k - eta_k r_k^2   (eta after this step's B, V)
    w_k ∝ pi_k exp(eta_k R_k)

Its regret against every expert ``k`` is of order
``sqrt(V_k ln K) + B_k ln K`` (up to log-log factors of the adaptive rates), and
``V_k <= T B_k^2``, so ``O(sqrt(T ln K))`` on bounded losses, and smaller when expert
``k`` is close to the aggregate. Scaling every forecast and outcome by ``c`` scales
``r``, ``B`` and ``sqrt(V)`` by ``c`` and ``eta`` by ``1/c``: the weights do not
change, so one rule serves request counts and token rates without a per-trace
constant. An expert that has no nonzero regret yet (``V_k = 0``) keeps its prior
weight ``pi_k``; the others share the rest.

``rule="fixed_share"``: exponentially weighted average with fixed share (Herbster and
Warmuth 1998): ``log w_k += eta r_k``, renormalise, then ``w <- alpha/K + (1-alpha) w``,
so no weight falls below ``alpha/K`` and a new best expert takes over within a
bounded number of outcomes, as on traffic whose best forecaster changes. Its learning
rate is scale-free and adapts online over the horizon ``1/alpha`` on which the rule
assumes one expert stays best: ``eta = min(1/(2B), sqrt(ln(K/alpha) / V))`` with
``B`` and ``V`` the running maximum and sum of ``max_k r_k^2``, both discounted by
``1 - alpha`` per outcome. ``alpha`` (default ``0.01``) is a dimensionless prior
switching rate, not a scale.

Known limit: BOA's learning rate is per expert, so an expert whose forecasts are
wildly off (a log-space trend extrapolated ``h`` steps, say) gets a rate ``~1/B_k`` of
its own and is down-weighted by only a factor of about ``e`` per "its own scale" of
regret. ``space="log1p"`` feeds ``log1p`` of forecasts (floored at 0) and outcomes to
the rule and publishes ``expm1`` of the aggregate, which bounds such errors; quantiles
are unchanged by a monotone map, so the aggregate still targets the same quantile. On
the Azure code trace and four synthetic traces (every quantity, horizons 1, 6 and 30)
with the flat baselines, the Kalman peers and ARIMA as experts, BOA in raw space was
up to 10^10 times worse than the best expert (a wild ``kalman_log1p`` at long
horizons); in ``log1p`` space its MAE was 0.99 to 1.00 times the best expert's per
synthetic trace (geometric mean; 1.03 at worst) and 1.08 on the short Azure trace. It
is the recommended setting for load, which is never negative; ``space="raw"`` (the
default) suits signed data.

Lifecycle, as the serving loop uses it:

- **Delays.** ``aggregate`` publishes from the current weights; ``update`` takes the
  expert forecasts that *were* combined, the outcome, and (best) the aggregate that was
  published. At horizon ``h`` the outcome of a forecast made at ``t`` is known at
  ``t + h``: the caller keeps the forecasts until then and calls ``update`` when they
  mature (one aggregator per horizon, so each sees its own outcomes in order).
- **Not warm yet.** A NaN forecast means the expert has nothing to say in that cell
  this time: it is left out of the combination (the others' weights are renormalised)
  and its regret and learning rate do not move. A cell with no finite forecast
  aggregates to NaN and is not updated; a NaN outcome leaves its cell untouched.
- **Late joiners.** :meth:`OnlineAggregator.add_expert` adds a column. The newcomer
  gets prior weight ``1/K`` of the new ``K`` (the others' priors shrink by
  ``1 - 1/K``, keeping their relative weights), or the ``prior`` given; its regret,
  ``B`` and ``V`` start at zero then, so it is judged only on what it forecast.
- **Persistence.** :meth:`OnlineAggregator.to_dict` gives plain lists (JSON-safe) and
  :meth:`OnlineAggregator.from_dict` validates shapes and numbers before rebuilding:
  weights after a restore equal those of an uninterrupted run.

>>> import numpy as np
>>> agg = OnlineAggregator(["exact", "off"], cells=1)
>>> for y in np.linspace(10.0, 50.0, 200):
...     agg.update(np.array([[y, y + 5.0]]), np.array([y]))
>>> bool(agg.weights()[0, 0] > 0.99)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predictor.errors import ConfigError

RULES = ("boa", "fixed_share")
#: where the rule sees forecasts and outcomes: as given, or as ``log1p`` (module docstring)
SPACES = ("raw", "log1p")
#: version of the :meth:`OnlineAggregator.to_dict` layout
STATE_VERSION = 1
_STATE_ARRAYS = {"boa": ("prior", "regret", "v", "b"), "fixed_share": ("log_w", "v", "b")}


def pinball_loss(forecast: np.ndarray, outcome: np.ndarray, tau: float) -> np.ndarray:
    """Pinball (quantile) loss of level ``tau``; ``tau = 0.5`` is half the absolute error."""
    diff = outcome - forecast
    return np.maximum(tau * diff, (tau - 1.0) * diff)


class OnlineAggregator:
    """Weights over ``K`` named experts for ``cells`` independent series (module docstring)."""

    def __init__(
        self,
        names: Sequence[str],
        cells: int = 1,
        tau: float = 0.5,
        rule: str = "boa",
        share: float = 0.01,
        space: str = "raw",
    ) -> None:
        if space not in SPACES:
            raise ConfigError(
                f"aggregation space must be one of {', '.join(SPACES)}, not {space!r}"
            )
        if rule not in RULES:
            raise ConfigError(f"aggregation rule must be one of {', '.join(RULES)}, not {rule!r}")
        if not 0.0 < tau < 1.0:
            raise ConfigError(f"aggregation quantile must lie in (0, 1), not {tau}")
        if not 0.0 < share < 1.0:
            raise ConfigError(f"fixed share must lie in (0, 1), not {share}")
        if cells < 1:
            raise ConfigError(f"an aggregator needs at least one cell, not {cells}")
        self.names: list[str] = []
        self.cells, self.tau, self.rule, self.share = int(cells), float(tau), rule, float(share)
        self.space = space
        zeros = np.zeros((self.cells, 0))
        self._prior = zeros.copy()  # boa: prior weight per expert (rows sum to 1)
        self._regret = zeros.copy()  # boa: cumulative regularised regret
        self._log_w = zeros.copy()  # fixed share: log weights (rows: log of a distribution)
        # boa: per expert [cells, K]; fixed share: per cell [cells, 1]
        self._v = np.zeros((self.cells, 0 if rule == "boa" else 1))
        self._b = self._v.copy()
        self.updates = np.zeros(self.cells, dtype=np.int64)
        self._w: np.ndarray | None = None  # the weights, until the state next changes
        for name in names:
            self.add_expert(name)
        if not self.names:
            raise ConfigError("an aggregator needs at least one expert")

    @property
    def k(self) -> int:
        return len(self.names)

    # --- experts ------------------------------------------------------------------

    def add_expert(self, name: str, prior: float | None = None) -> None:
        """Add an expert in every cell, at weight ``prior`` (default ``1/K`` of the new K)."""
        if name in self.names:
            raise ConfigError(f"expert {name!r} is already aggregated")
        k = self.k + 1
        p = 1.0 / k if prior is None else float(prior)
        if not 0.0 < p < 1.0 and not (k == 1 and p == 1.0):
            raise ConfigError(f"the prior weight of a new expert must lie in (0, 1), not {p}")
        if k == 1:
            p = 1.0
        self._w = None
        self.names.append(name)
        column = np.full((self.cells, 1), p)
        self._prior = np.concatenate([self._prior * (1.0 - p), column], axis=1)
        self._regret = np.concatenate([self._regret, np.zeros((self.cells, 1))], axis=1)
        if self.rule == "boa":
            self._v = np.concatenate([self._v, np.zeros((self.cells, 1))], axis=1)
            self._b = np.concatenate([self._b, np.zeros((self.cells, 1))], axis=1)
        else:
            shrink = math.log1p(-p) if k > 1 else 0.0  # nothing to shrink for the first
            self._log_w = np.concatenate([self._log_w + shrink, np.log(column)], axis=1)

    def renew_expert(self, name: str) -> None:
        """Start ``name`` afresh, as :meth:`add_expert` would add it: prior ``1/K`` (the others'
        priors scaled to make room), no regret, nothing seen. For an expert that is replaced
        by a new one under the same name (a new model version): what the old one earned or
        lost does not carry over."""
        j = self.names.index(name)
        p = 1.0 / self.k
        others = np.delete(self._prior, j, axis=1).sum(axis=1, keepdims=True)
        scale = np.divide(1.0 - p, others, out=np.ones_like(others), where=others > 0)
        self._prior = self._prior * scale
        self._prior[:, j] = p
        self._regret[:, j] = 0.0
        if self.rule == "boa":
            self._v[:, j] = 0.0
            self._b[:, j] = 0.0
        else:
            w = self.weights()
            w[:, j] = 0.0
            w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300) * (1.0 - p)
            w[:, j] = p
            self._log_w = np.log(np.maximum(w, 1e-300))
        self._w = None

    # --- weights and the combined forecast ---------------------------------------

    def _boa_eta(self) -> np.ndarray:
        """Per-expert learning rate ``[cells, K]``; ``inf`` where nothing was seen yet."""
        log_k = math.log(max(self.k, 2))
        with np.errstate(divide="ignore"):
            return np.minimum(1.0 / (2.0 * self._b), np.sqrt(log_k / self._v))

    def weights(self) -> np.ndarray:
        """Current weights ``[cells, K]`` over all experts (rows sum to 1)."""
        return self._weights().copy()

    def _weights(self) -> np.ndarray:
        """:meth:`weights`, computed once per change of the state (not to be modified)."""
        if self._w is None:
            self._w = self._compute_weights()
        return self._w

    def _compute_weights(self) -> np.ndarray:
        if self.rule == "fixed_share":
            w = np.exp(self._log_w - self._log_w.max(axis=1, keepdims=True))
            return w / w.sum(axis=1, keepdims=True)
        scored = self._v > 0.0
        eta = np.where(scored, self._boa_eta(), 0.0)
        logit = np.where(scored, np.log(self._prior) + eta * self._regret, -np.inf)
        top = np.max(logit, axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(scored, np.exp(logit - top), 0.0)
        total = e.sum(axis=1, keepdims=True)
        mass = np.where(scored, self._prior, 0.0).sum(axis=1, keepdims=True)
        share = np.divide(e * mass, total, out=np.zeros_like(e), where=total > 0)
        return np.where(scored, share, self._prior)

    def _check(self, forecasts: np.ndarray) -> np.ndarray:
        x = np.asarray(forecasts, dtype=np.float64)
        if x.shape != (self.cells, self.k):
            raise ValueError(f"expert forecasts must be [cells, K] = {(self.cells, self.k)}")
        return self._to_space(x)

    def _to_space(self, v: np.ndarray) -> np.ndarray:
        """Values as the rule sees them (``log1p`` of the floored value in ``log1p`` space)."""
        return np.log1p(np.maximum(v, 0.0)) if self.space == "log1p" else v

    def _mix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Awake mask, weights renormalised over it, and the aggregate (NaN: none awake)."""
        awake = np.isfinite(x)
        w = np.where(awake, self._weights(), 0.0)
        total = w.sum(axis=1, keepdims=True)
        p = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        agg = np.where(total[:, 0] > 0, (p * np.where(awake, x, 0.0)).sum(axis=1), np.nan)
        return awake, p, agg

    def aggregate(self, forecasts: np.ndarray) -> np.ndarray:
        """The combined forecast ``[cells]`` of ``forecasts [cells, K]`` (NaN: not warm),
        in the units of the forecasts whatever the ``space``."""
        agg = self._mix(self._check(forecasts))[2]
        return np.expm1(np.minimum(agg, 700.0)) if self.space == "log1p" else agg

    # --- learning ---------------------------------------------------------------

    def update(
        self,
        forecasts: np.ndarray,
        outcome: np.ndarray,
        published: np.ndarray | None = None,
    ) -> None:
        """Learn from matured ``forecasts [cells, K]`` and their ``outcome [cells]``.

        ``published`` is the aggregate that was published for these forecasts (pass it
        when outcomes arrive late, i.e. at horizons above 1); without it the aggregate
        is recomputed from the current weights. Cells with a NaN outcome, a NaN
        ``published`` value or no finite forecast are left as they were.
        """
        x = self._check(forecasts)
        y = self._to_space(np.asarray(outcome, dtype=np.float64).reshape(self.cells))
        awake, p, agg = self._mix(x)
        if published is not None:
            agg = self._to_space(np.asarray(published, dtype=np.float64).reshape(self.cells))
        live = np.isfinite(y) & np.isfinite(agg) & awake.any(axis=1)
        if not live.any():
            return
        g = np.where(y < agg, 1.0, 0.0) - self.tau  # subgradient of the pinball loss at agg
        on = awake & live[:, None]
        r = np.where(on, g[:, None] * (agg[:, None] - np.where(awake, x, 0.0)), 0.0)
        if self.rule == "boa":
            self._b = np.where(on, np.maximum(self._b, np.abs(r)), self._b)
            self._v = self._v + r * r
            eta = np.where(self._v > 0.0, self._boa_eta(), 0.0)
            self._regret = self._regret + r - eta * r * r
        else:
            self._fixed_share_step(r, p, on, live)
        self.updates = self.updates + live
        self._w = None

    def _fixed_share_step(
        self, r: np.ndarray, p: np.ndarray, on: np.ndarray, live: np.ndarray
    ) -> None:
        keep = 1.0 - self.share
        top = np.max(np.abs(r), axis=1, keepdims=True)  # [cells, 1]
        spread = (p * r * r).sum(axis=1, keepdims=True)  # [cells, 1]
        lv = live[:, None]
        self._b = np.where(lv, np.maximum(keep * self._b, top), self._b)
        self._v = np.where(lv, keep * self._v + spread, self._v)
        log_scale = math.log(max(self.k, 2) / self.share)
        with np.errstate(divide="ignore"):
            eta = np.minimum(1.0 / (2.0 * self._b), np.sqrt(log_scale / self._v))
        eta = np.where(self._v > 0.0, eta, 0.0)
        log_w = self._log_w + np.where(on, eta * r, 0.0)
        log_w = log_w - log_w.max(axis=1, keepdims=True)
        w = np.exp(log_w)
        w = w / w.sum(axis=1, keepdims=True)
        shared = np.log(self.share / self.k + keep * w)
        self._log_w = np.where(lv, shared, self._log_w)

    # --- persistence ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole state as plain, JSON-safe values (lists of floats)."""
        out: dict[str, Any] = {
            "version": STATE_VERSION,
            "rule": self.rule,
            "tau": self.tau,
            "share": self.share,
            "space": self.space,
            "cells": self.cells,
            "names": list(self.names),
            "updates": [int(u) for u in self.updates],
        }
        for key in _STATE_ARRAYS[self.rule]:
            out[key] = getattr(self, f"_{key}").tolist()
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> OnlineAggregator:
        """Rebuild from :meth:`to_dict`; raises :class:`ConfigError` on a malformed state."""
        try:
            if state["version"] != STATE_VERSION:
                raise ConfigError(f"aggregator state version {state['version']} is not supported")
            names = state["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError("aggregator state: names must be a list of strings")
            agg = cls(
                names,
                cells=int(state["cells"]),
                tau=float(state["tau"]),
                rule=str(state["rule"]),
                share=float(state["share"]),
                space=str(state.get("space", "raw")),  # states saved before the option
            )
            updates = np.asarray(state["updates"], dtype=np.int64)
            arrays = {
                key: np.asarray(state[key], dtype=np.float64) for key in _STATE_ARRAYS[agg.rule]
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"aggregator state is malformed: {exc}") from exc
        if updates.shape != (agg.cells,) or (updates < 0).any():
            raise ConfigError("aggregator state: updates must be one count >= 0 per cell")
        for key, value in arrays.items():
            want = agg._v.shape if key in ("v", "b") else (agg.cells, agg.k)
            if value.shape != want:
                raise ConfigError(f"aggregator state: {key} has shape {value.shape}, not {want}")
            if not np.isfinite(value).all():
                raise ConfigError(f"aggregator state: {key} holds a non-finite number")
        if "prior" in arrays and ((arrays["prior"] <= 0).any() or (arrays["prior"] > 1).any()):
            raise ConfigError("aggregator state: prior weights must lie in (0, 1]")
        for key in ("v", "b"):
            if (arrays[key] < 0).any():
                raise ConfigError(f"aggregator state: {key} must be >= 0")
        for key, value in arrays.items():
            setattr(agg, f"_{key}", value)
        agg.updates = updates
        agg._w = None
        return agg
