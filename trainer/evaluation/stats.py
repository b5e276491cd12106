"""Scoring a walk-forward: MAE, sMAPE and interval coverage, and the verdict against the
best baseline with a paired block-bootstrap interval of the MAE ratio.

The scoring works on any :class:`Prediction` ``[N, H, C]`` and outcomes ``[N, H, C]``,
so every task (next request, load per bin at several horizons) shares it.

>>> import numpy as np
>>> pred = Prediction(np.full((2, 1, 1), 2.0), np.full((2, 1, 1), 1.0), np.full((2, 1, 1), 3.0))
>>> score(pred, np.array([[[2.5]], [[4.0]]]), ["gap_s"], task="t", model="m", kind="baseline")
[{'task': 't', 'target': 'gap_s', 'horizon': 1, 'model': 'm', 'kind': 'baseline', 'mae': 1.25, 'coverage': 0.5, 'n': 2}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predictor.models.base import Prediction


def score(
    pred: Prediction,
    actual: np.ndarray,
    targets: Sequence[str],
    horizons: Sequence[int] | None = None,
    *,
    task: str,
    model: str,
    kind: str,
    smape: bool = False,
) -> list[dict[str, Any]]:
    """MAE, interval coverage and count per target and horizon step (1-based).

    ``pred`` and ``actual`` are ``[N, H, C]`` with channel ``c`` named ``targets[c]``;
    outcomes that are not finite (a window running past the data) are left out, and
    ``mae`` and ``coverage`` are None where none is left. With ``smape`` each row
    also has ``smape`` (see :func:`smape`).
    """
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != pred.point.shape:
        raise ValueError(f"actual {actual.shape} does not match forecasts {pred.point.shape}")
    if len(targets) != actual.shape[2]:
        raise ValueError(f"{len(targets)} target names for {actual.shape[2]} channels")
    steps = list(horizons) if horizons is not None else list(range(1, actual.shape[1] + 1))
    rows = []
    for c, target in enumerate(targets):
        for h in steps:
            if not 1 <= h <= actual.shape[1]:
                raise ValueError(f"horizon {h} outside 1..{actual.shape[1]}")
            y = actual[:, h - 1, c]
            ok = np.isfinite(y)
            y = y[ok]
            point = pred.point[ok, h - 1, c]
            inside = (pred.lower[ok, h - 1, c] <= y) & (y <= pred.upper[ok, h - 1, c])
            n = len(y)
            row: dict[str, Any] = {
                "task": task,
                "target": target,
                "horizon": h,
                "model": model,
                "kind": kind,
                "mae": float(np.abs(point - y).mean()) if n else None,
            }
            if smape:
                row["smape"] = _smape(point, y) if n else None
            row["coverage"] = float(inside.mean()) if n else None
            row["n"] = n
            rows.append(row)
    return rows


def _smape(point: np.ndarray, actual: np.ndarray) -> float:
    """Mean of ``2|y - ŷ| / (|y| + |ŷ|)`` (0 where both are 0); from 0 to 2.

    >>> _smape(np.array([1.0, 0.0, 0.0]), np.array([3.0, 0.0, 2.0]))
    1.0
    """
    den = np.abs(actual) + np.abs(point)
    num = 2.0 * np.abs(actual - point)
    return float(np.divide(num, den, out=np.zeros_like(num), where=den > 0).mean())


def verdict(
    results: Sequence[Mapping[str, Any]],
    errors: Mapping[tuple[str, str, int], np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Per task, target, horizon and model: is its MAE at most the best baseline's?

    With ``errors`` (absolute errors in time order per ``(forecaster, target, horizon)``)
    each row also gets ``ratio_interval``: a 90 % block-bootstrap interval of its MAE
    ratio (:func:`ratio_interval`), which says how far the test period's length lets
    the ratio be trusted.
    """
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["target"], r["horizon"]), []).append(r)
    out = []
    for (task, target, horizon), rows in groups.items():
        baselines = [r for r in rows if r["kind"] == "baseline" and r["mae"] is not None]
        if not baselines:
            continue
        best = min(baselines, key=lambda r: r["mae"])
        for r in rows:
            if r["kind"] != "model" or r["mae"] is None:
                continue
            row = {
                "task": task,
                "target": target,
                "horizon": horizon,
                "model": r["model"],
                "mae": r["mae"],
                "best_baseline": best["model"],
                "best_baseline_mae": best["mae"],
                "ratio": _ratio(r["mae"], best["mae"]),
                "beats_best_baseline": bool(r["mae"] <= best["mae"]),
            }
            mine, theirs = (
                None if errors is None else errors.get((name, target, horizon))
                for name in (r["model"], best["model"])
            )
            if mine is not None and theirs is not None:
                row["ratio_interval"] = ratio_interval(mine, theirs, block=horizon)
            out.append(row)
    return out


#: bootstrap draws and interval level of :func:`ratio_interval`
BOOTSTRAP_DRAWS = 1000
INTERVAL_LEVEL = 0.9
#: fewer blocks than this give no interval (a handful of blocks resample too little)
MIN_BLOCKS = 10


def ratio_interval(
    errors: np.ndarray, base_errors: np.ndarray, block: int = 1, seed: int = 0
) -> list[float] | None:
    """A 90 % interval of ``mean(errors) / mean(base_errors)`` by a paired moving-block
    bootstrap over forecast origins.

    Both error series (same origins, in time order) are resampled with the same
    blocks of consecutive origins, so what the two forecasters share (a burst, a
    quiet spell) cancels in the ratio. Blocks are at least ``block`` long (the
    horizon: forecasts ``h`` bins ahead from neighbouring origins share outcomes)
    and at least the cube root of the count, a usual choice for serially correlated
    errors. The interval is approximate and runs narrow on short series; None when
    fewer than :data:`MIN_BLOCKS` blocks fit or the baseline's resampled error can be 0.
    Each draw's sums come from prefix sums, so memory grows with the blocks, not the
    origins.

    >>> rng = np.random.default_rng(0)
    >>> base = rng.exponential(1.0, 2000)
    >>> ratio_interval(base * rng.uniform(0.8, 1.0, 2000), base, block=6)  # 10 % better
    [0.8964, 0.9014]
    """
    a, b = np.asarray(errors, dtype=np.float64), np.asarray(base_errors, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired error series needed, got shapes {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = len(a)
    length = max(block, int(np.ceil(n ** (1 / 3))), 1)
    if n < MIN_BLOCKS * length:
        return None
    blocks = -(-n // length)
    last = n - (blocks - 1) * length  # the last block is cut to fill exactly n origins
    starts = np.random.default_rng(seed).integers(0, n - length + 1, size=(BOOTSTRAP_DRAWS, blocks))

    def resampled_mean(x: np.ndarray) -> np.ndarray:
        cs = np.concatenate([[0.0], np.cumsum(x)])
        whole, cut = starts[:, :-1], starts[:, -1]
        total = (cs[whole + length] - cs[whole]).sum(axis=1) + cs[cut + last] - cs[cut]
        return total / n

    num, den = resampled_mean(a), resampled_mean(b)
    if not (den > 0).all():
        return None
    tail = (1 - INTERVAL_LEVEL) / 2
    lo, hi = np.quantile(num / den, [tail, 1 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def _ratio(mae: float, best: float) -> float | None:
    """``mae / best``; 1 when both are 0, None (not infinity, which JSON lacks) when only best is."""
    if best > 0:
        return mae / best
    return 1.0 if mae == 0 else None
