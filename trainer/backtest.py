"""Walk-forward accuracy of the trained models against the baselines, and its report.

The next-request task: per stream, the first ``train_fraction`` of rows train the
networks (all streams' heads together, as offline training does); then, over the
remaining rows, every forecaster makes one forecast per request from the rows up
to and including that request only, and is scored against the next request.
Errors are pooled over streams (each forecast counts once). Each model's MAE
ratio to the best baseline comes with a 90 % interval from a paired block
bootstrap over the forecast origins (:func:`ratio_interval`).

The scoring and the report work on any :class:`Prediction` ``[N, H, C]`` and
outcomes ``[N, H, C]``, so window-level multi-horizon tasks can reuse them.

>>> import numpy as np
>>> pred = Prediction(np.full((2, 1, 1), 2.0), np.full((2, 1, 1), 1.0), np.full((2, 1, 1), 3.0))
>>> score(pred, np.array([[[2.5]], [[4.0]]]), ["gap_s"], task="t", model="m", kind="baseline")
[{'task': 't', 'target': 'gap_s', 'horizon': 1, 'model': 'm', 'kind': 'baseline', 'mae': 1.25, 'coverage': 0.5, 'n': 2}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from predictor.errors import ConfigError, TrainingError
from predictor.features import QUANTITIES
from predictor.models.base import NOMINAL_COVERAGE, Forecaster, Prediction, rolling_predict
from predictor.models.baselines import default_baselines
from predictor.streams import STREAM_KEYS, stream_series
from trainer.offline import check_models
from trainer.train import TrainConfig, train_forecaster

NEXT_REQUEST = "next_request"


def check_split(cfg: Any) -> None:
    """The checks every walk-forward config (next request, load) shares: models, split
    fractions, stream key."""
    check_models(cfg.models)
    if not 0.0 < cfg.train_fraction < 1.0:
        raise ConfigError(f"train fraction must be in (0, 1), got {cfg.train_fraction}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.stream_key not in STREAM_KEYS:
        raise ConfigError(f"unknown stream key {cfg.stream_key!r}")


@dataclass(frozen=True)
class BacktestConfig:
    """How the walk-forward benchmark splits, trains and forecasts."""

    models: tuple[str, ...] = ("lstm", "dlinear")
    train_fraction: float = 0.6
    seq_len: int = 64
    epochs: int = 40
    batch_size: int = 64
    #: fraction of the training head held out for early stopping and calibration
    val_fraction: float = 0.2
    stream_key: str = "model"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_split(self)
        for name in ("seq_len", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


# -- scoring (any task, any horizon) --------------------------------------------------------


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


def _interval(v: Mapping[str, Any]) -> str:
    """``, 90 % interval a-b`` for a verdict row with a ``ratio_interval``."""
    iv = v.get("ratio_interval")
    return "" if not iv else f", {INTERVAL_LEVEL:.0%} interval {iv[0]:.4f}-{iv[1]:.4f}"


def _ratio(mae: float, best: float) -> float | None:
    """``mae / best``; 1 when both are 0, None (not infinity, which JSON lacks) when only best is."""
    if best > 0:
        return mae / best
    return 1.0 if mae == 0 else None


# -- the next-request walk-forward ----------------------------------------------------------


def split_streams(
    df: pd.DataFrame, stream_key: str, train_fraction: float
) -> dict[str, tuple[np.ndarray, int]]:
    """Each stream's raw series ``[N, 3]`` and its cut (rows ``< cut`` may train).

    Streams without at least one training row and one row to forecast are left out.
    """
    out = {}
    for name, s in stream_series(df, stream_key).items():
        cut = int(len(s) * train_fraction)
        if 1 <= cut < len(s):
            out[name] = (s, cut)
    return out


def walk_forward(
    forecaster: Forecaster, streams: Sequence[tuple[np.ndarray, int]]
) -> tuple[Prediction, np.ndarray]:
    """Next-request forecasts after every row ``t`` in ``cut-1 .. N-2`` of each stream, pooled.

    Returns the forecasts ``[M, 1, C]`` and the outcomes (row ``t+1``) ``[M, 1, C]``,
    with ``M`` the sum of ``N - cut`` over the streams.
    """
    points, lowers, uppers, actuals = [], [], [], []
    for series, cut in streams:
        pred = rolling_predict(forecaster, series, start=cut - 1)
        n = len(series) - cut  # the forecast after the last row has no outcome yet
        points.append(pred.point[:n, :1])
        lowers.append(pred.lower[:n, :1])
        uppers.append(pred.upper[:n, :1])
        actuals.append(series[cut:, None, :])  # [n, 1, C]
    if not actuals:
        raise ConfigError("no stream has rows to forecast")
    pooled = Prediction(np.concatenate(points), np.concatenate(lowers), np.concatenate(uppers))
    return pooled, np.concatenate(actuals)


def train_on_heads(
    streams: Mapping[str, tuple[np.ndarray, int]], cfg: BacktestConfig, progress: bool = False
) -> tuple[list[Forecaster], dict[str, dict[str, Any]]]:
    """One network per model in ``cfg``, trained on the streams' heads only; and a summary."""
    # a head trains only if its training part (before the validation split) gives a window
    heads = [
        s[:cut] for s, cut in streams.values() if int(cut * (1 - cfg.val_fraction)) > cfg.seq_len
    ]
    if not heads:
        longest = max((cut for _, cut in streams.values()), default=0)
        raise TrainingError(
            f"too few rows to train: the longest training head has {longest} rows, but "
            f"seq_len={cfg.seq_len} with val_fraction={cfg.val_fraction} needs more than "
            f"{int(cfg.seq_len / (1 - cfg.val_fraction)) + 1}; use more data or a smaller --seq-len"
        )
    models: list[Forecaster] = []
    info: dict[str, dict[str, Any]] = {}
    for name in cfg.models:
        tc = TrainConfig(
            model=name,
            seq_len=cfg.seq_len,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            val_fraction=cfg.val_fraction,
            device=cfg.device,
            seed=cfg.seed,
        )
        result = train_forecaster(heads, tc, progress=progress)
        models.append(result.forecaster)
        info[name] = result.summary()
    return models, info


def next_request_backtest(
    df: pd.DataFrame, cfg: BacktestConfig, progress: bool = False
) -> dict[str, Any]:
    """Train on the heads, forecast the tails; ``{"task_config", "results", "verdict"}``."""
    streams = split_streams(df, cfg.stream_key, cfg.train_fraction)
    if not streams:
        raise ConfigError(
            f"no stream of {len(df)} rows has both training and test rows "
            f"at train fraction {cfg.train_fraction}"
        )
    models, training = train_on_heads(streams, cfg, progress)
    forecasters: list[Forecaster] = [*models, *default_baselines(horizon=1, channels=3)]
    parts = list(streams.values())
    results: list[dict[str, Any]] = []
    errors: dict[tuple[str, str, int], np.ndarray] = {}
    for fc in forecasters:
        pred, actual = walk_forward(fc, parts)
        results += score(pred, actual, QUANTITIES, task=NEXT_REQUEST, model=fc.name, kind=fc.kind)
        err = np.abs(pred.point[:, 0] - actual[:, 0])  # [M, C]
        errors.update({(fc.name, q, 1): err[:, c] for c, q in enumerate(QUANTITIES)})
    task_config = {
        **asdict(cfg),
        "models": list(cfg.models),
        "rows": len(df),
        "baselines": [fc.name for fc in forecasters if fc.kind == "baseline"],
        "nominal_coverage": round(NOMINAL_COVERAGE, 6),
        "streams": {
            name: {"rows": len(s), "train_rows": cut, "forecasts": len(s) - cut}
            for name, (s, cut) in streams.items()
        },
        "forecasts": sum(len(s) - cut for s, cut in parts),
        "training": training,
    }
    return {"task_config": task_config, "results": results, "verdict": verdict(results, errors)}


# -- the report ------------------------------------------------------------------------------


def _num(v: float | None, fmt: str | None = None) -> str:
    if v is None:
        return "n/a"
    if fmt:
        return format(v, fmt)
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.5g}"


def to_markdown(report: Mapping[str, Any]) -> str:
    """One table per task and horizon (rows: forecasters; columns: MAE and coverage per target).

    Rows with ``smape`` add an sMAPE column; rows with ``coverage_raw`` show the
    coverage as ``calibrated (raw)``.
    """
    results = report["results"]
    verdicts = report.get("verdict") or verdict(results)
    lines: list[str] = []
    tables = list(dict.fromkeys((r["task"], r["horizon"]) for r in results))
    for task, horizon in tables:
        rows = [r for r in results if r["task"] == task and r["horizon"] == horizon]
        targets = list(dict.fromkeys(r["target"] for r in rows))
        names = list(dict.fromkeys((r["model"], r["kind"]) for r in rows))
        cell = {(r["model"], r["target"]): r for r in rows}
        best = {
            v["target"]: v["best_baseline"]
            for v in verdicts
            if v["task"] == task and v["horizon"] == horizon
        }
        counts = sorted({r["n"] for r in rows})
        n_text = str(counts[0]) if len(counts) == 1 else ", ".join(map(str, counts))
        lines += [f"### {task}, horizon {horizon} (n = {n_text} forecasts)", ""]
        with_smape = any("smape" in r for r in rows)
        with_raw = any("coverage_raw" in r for r in rows)
        per_target = ["MAE", *(["sMAPE"] if with_smape else []), "cov"]
        head = ["forecaster", "kind"]
        for t in targets:
            head += [f"{t} {m}" for m in per_target]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|---|" + "---:|" * len(per_target) * len(targets))
        for model, kind in names:
            out = [model, kind]
            for t in targets:
                r = cell.get((model, t))
                if r is None:
                    out += [""] * len(per_target)
                    continue
                mark = " *" if best.get(t) == model else ""
                out.append(_num(r["mae"]) + mark)
                if with_smape:
                    out.append(_num(r.get("smape"), ".3f"))
                cov = _num(r["coverage"], ".3f")
                if with_raw:
                    cov += f" ({_num(r.get('coverage_raw'), '.3f')})"
                out.append(cov)
            lines.append("| " + " | ".join(out) + " |")
        note = "`*` best baseline for that target; cov = share of outcomes in the interval"
        if with_raw:
            note += " (online-calibrated; the model's own interval in brackets)"
        if with_smape:
            note += "; sMAPE = mean of 2|y - ŷ| / (|y| + |ŷ|), from 0 to 2"
        lines += ["", note + ".", ""]
        for model, kind in names:
            if kind != "model":
                continue
            mine = [
                v
                for v in verdicts
                if v["task"] == task and v["horizon"] == horizon and v["model"] == model
            ]
            parts = [
                f"{v['target']} {'beats' if v['beats_best_baseline'] else 'LOSES to'} "
                f"{v['best_baseline']} (MAE ratio "
                f"{_num(v['ratio'], '.4f')}{_interval(v)})"
                for v in mine
            ]
            wins = sum(v["beats_best_baseline"] for v in mine)
            lines.append(
                f"- **{model}**: {'; '.join(parts)}; at or below the best baseline on "
                f"{wins}/{len(mine)} targets"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
