"""The ``ensemble`` row of the load walk-forward, its ratio to the best single expert,
and the Poisson floor of requests/s.

**Ensemble.** Every expert the walk-forward scored (networks, baselines, AutoETS when
present, peers; not ``best``, which only picks among the networks) is aggregated by
:func:`predictor.ensemble.replay`: per stream and horizon, BOA on the pinball loss of
level 0.5 in ``log1p`` space, replayed in time from the first priming origin
(``prime_bins`` before the test period), each horizon updated only by its own
forecasts once their outcome is known. The interval is the online conformal
calibration every forecaster gets (:func:`trainer.evaluation.walk.calibrated_walk`),
around a zero-width interval at the point: its widening is then a rolling quantile
of the point's own ``log1p`` errors, with the adaptive level driving coverage to 80 %.

**Ratios.** Per quantity and horizon: the ensemble's MAE over the best single
expert's in hindsight (lowest MAE on the same test bins among all experts), with a
90 % paired block-bootstrap interval (:func:`trainer.evaluation.stats.ratio_interval`,
blocks at least ``h`` bins).

**Poisson floor** (requests/s only): the MAE a forecaster would reach if requests
arrived as a Poisson process whose rate it knew exactly. The rate of bin ``t`` is
estimated from the counts themselves by a leave-one-out centred mean (the
:data:`FLOOR_HALF_WIDTH` bins either side, bin ``t`` itself left out so its own noise
does not leak in; fewer at the ends), and the floor is the exact ``E|N - m|`` for
``N ~ Poisson(λ)`` with ``m`` its median (the MAE-optimal point), averaged over the
test bins and divided by the bin size. It is a reference, not a bound: traffic
burstier than Poisson (the synthetic traces' Gamma gaps, real bursts) has more
irreducible noise, and a rate that moves within ±5 bins makes the estimate noisier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predictor.ensemble import RULE, SPACE, TAU, replay
from predictor.load import LOAD_QUANTITIES
from predictor.models.base import Prediction
from trainer.evaluation.load_config import LoadBacktestConfig
from trainer.evaluation.stats import ratio_interval
from trainer.evaluation.walk import Primed, calibrated_walk

#: rows that are not experts of the ensemble
NOT_EXPERTS = ("best", "ensemble")
ENSEMBLE = "ensemble"
AGGREGATION = (
    f"{RULE.upper()} over every expert (pinball tau {TAU}, {SPACE} space), one aggregator "
    "per stream and horizon, updated when each forecast's outcome is known; primed from "
    "prime_bins before the test period; interval: online conformal around the point"
)
#: bins either side of the leave-one-out rate estimate of the Poisson floor
FLOOR_HALF_WIDTH = 5
#: the columns of :func:`ratio_lines` and what they mean
RATIO_COLUMNS = (
    "quantity | h | ensemble / best | 90 % interval | best expert | cov 80 % | Poisson floor / best"
)
RATIO_ALIGN = "---|---:|---:|---|---|---:|---:"
RATIO_NOTE = (
    "Interval: 90 % paired block bootstrap of the MAE ratio (n/a: too few blocks); cov: "
    "share of outcomes inside the ensemble's online-calibrated 80 % interval. Poisson "
    "floor: the requests/s MAE of a forecaster knowing the Poisson rate exactly (rate: "
    f"leave-one-out centred mean of ±{FLOOR_HALF_WIDTH} bins), over the best expert's MAE."
)


def ensemble_walk(primed: Mapping[str, Sequence[Primed]], cfg: LoadBacktestConfig) -> list[Primed]:
    """The ensemble's forecasts over every stream's primed walk, calibrated online."""
    names = [n for n in primed if n not in NOT_EXPERTS]
    parts, skip = [], []
    for k, (series, start, _, _, prime) in enumerate(primed[names[0]]):
        experts = np.stack([primed[n][k][2].point for n in names], axis=-1)  # [T, H, C, K]
        point = replay(series, start, experts, cfg.horizons, names)
        parts.append((series, start, Prediction(point, point.copy(), point.copy())))
        skip.append(prime)
    return calibrated_walk(ENSEMBLE, parts, skip, cfg)


def ensemble_ratios(
    results: Sequence[Mapping[str, Any]],
    errors: Mapping[tuple[str, str, int], np.ndarray],
    streams: Mapping[str, tuple[np.ndarray, int]],
    cfg: LoadBacktestConfig,
) -> dict[str, Any]:
    """Per quantity and horizon the ensemble's MAE ratio to the best expert (module
    docstring), and the Poisson floor of requests/s."""
    floor = poisson_floor(streams, cfg.bin_s)
    rows = []
    for q in LOAD_QUANTITIES:
        for h in cfg.horizons:
            cell = [r for r in results if r["target"] == q and r["horizon"] == h]
            ens = next((r for r in cell if r["model"] == ENSEMBLE), None)
            experts = [r for r in cell if r["model"] not in NOT_EXPERTS and r["mae"] is not None]
            if ens is None or ens["mae"] is None or not experts:
                continue
            best = min(experts, key=lambda r: r["mae"])
            row: dict[str, Any] = {
                "target": q,
                "horizon": h,
                "ensemble_mae": ens["mae"],
                "best_expert": best["model"],
                "best_expert_kind": best["kind"],
                "best_expert_mae": best["mae"],
                "ratio": ens["mae"] / best["mae"] if best["mae"] > 0 else None,
                "ratio_interval": ratio_interval(
                    errors[(ENSEMBLE, q, h)], errors[(best["model"], q, h)], block=h
                ),
                "coverage": ens["coverage"],
                "n": ens["n"],
            }
            if q == LOAD_QUANTITIES[0] and floor is not None and best["mae"] > 0:
                row["poisson_floor_mae"] = floor
                row["floor_ratio"] = floor / best["mae"]
            rows.append(row)
    return {"aggregation": AGGREGATION, "poisson_floor_mae": floor, "ratios": rows}


def poisson_floor(streams: Mapping[str, tuple[np.ndarray, int]], bin_s: float) -> float | None:
    """The Poisson floor of the requests/s MAE over the test bins (module docstring)."""
    devs = []
    for series, cut in streams.values():
        counts = np.rint(series[:, 0] * bin_s)
        devs.append(poisson_abs_dev(loo_centred_mean(counts, FLOOR_HALF_WIDTH)[cut:]))
    dev = np.concatenate(devs) if devs else np.empty(0)
    return float(dev.mean() / bin_s) if len(dev) else None


def loo_centred_mean(x: np.ndarray, half: int) -> np.ndarray:
    """Mean of the ``half`` values either side of each value, itself left out.

    >>> loo_centred_mean(np.array([0.0, 10.0, 2.0, 4.0]), 1).tolist()
    [10.0, 1.0, 7.0, 2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(n)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, n)
    count = hi - lo - 1
    total = cs[hi] - cs[lo] - x
    return np.divide(total, count, out=x.copy(), where=count > 0)


def poisson_abs_dev(mu: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``E|N - median(N)|`` for ``N ~ Poisson(mu)``, per rate (exact up to a far tail).

    >>> poisson_abs_dev(np.array([0.0, 1.0])).round(4).tolist()  # 2/e at mu = 1
    [0.0, 0.7358]
    """
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 0.0)
    out = np.zeros(len(mu))
    if not len(mu):
        return out
    top = float(mu.max())
    k = np.arange(int(np.ceil(top + 12.0 * np.sqrt(top) + 30.0)) + 1, dtype=np.float64)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(k[1:]))])
    for lo in range(0, len(mu), chunk):
        m = mu[lo : lo + chunk, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_pmf = k * np.log(m) - m - log_fact
        pmf = np.where(m > 0, np.exp(np.nan_to_num(log_pmf, nan=-np.inf)), k == 0)
        median = np.argmax(np.cumsum(pmf, axis=1) >= 0.5, axis=1)
        out[lo : lo + chunk] = (pmf * np.abs(k - median[:, None])).sum(axis=1)
    return out


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def ratio_lines(ensemble: Mapping[str, Any], first: Sequence[str] = ()) -> list[str]:
    """Markdown rows of :data:`RATIO_COLUMNS` per quantity and horizon, after the cells ``first``."""
    order = {q: i for i, q in enumerate(LOAD_QUANTITIES)}
    lines = []
    for r in sorted(ensemble["ratios"], key=lambda r: (order[r["target"]], r["horizon"])):
        iv = r.get("ratio_interval")
        cells = [
            *first,
            r["target"],
            str(r["horizon"]),
            _f(r["ratio"]),
            f"{iv[0]:.3f}-{iv[1]:.3f}" if iv else "n/a",
            r["best_expert"],
            _f(r["coverage"]),
            _f(r["floor_ratio"]) if "floor_ratio" in r else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
