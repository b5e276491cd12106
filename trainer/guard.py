"""The champion/challenger guard: a refit replaces the serving model only if it is no worse.

Both models forecast the same held-out recent slice (requests the challenger
never trained on); the score is the mean over quantities of the MAE divided by
the mean absolute actual value (so gaps in seconds and tokens weigh alike). A
challenger with non-finite weights or outputs, or whose shape differs from the
serving model, is rejected whatever its score. The challenger's MAE per quantity in real
units (:attr:`Decision.challenger_mae`) is kept with an accepted version: the error the
serving loop's drift check (:mod:`predictor.drift`) compares its online error with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from predictor.models.base import Forecaster, rolling_predict
from predictor.tasks import LOAD, NEXT_REQUEST

#: rejection reasons (the ``reason`` label of the swap metric)
REASONS = (
    "worse",
    "non_finite_weights",
    "non_finite_output",
    "shape_mismatch",
    "training_error",
    "load_error",
    "incompatible",
    "stale_version",
)


@dataclass(frozen=True)
class Decision:
    model: str
    accepted: bool
    reason: str
    challenger_score: float | None = None
    champion_score: float | None = None
    #: which task's model (``next_request`` or ``load``)
    task: str = NEXT_REQUEST
    #: the challenger's MAE per quantity on the held-out slice, in real units (first step)
    challenger_mae: tuple[float, ...] | None = None
    #: outcomes in the held-out slice (what ``challenger_mae`` rests on)
    holdout_rows: int | None = None

    def describe(self) -> str:
        scores = ""
        if self.challenger_score is not None:
            champ = "-" if self.champion_score is None else f"{self.champion_score:.4f}"
            scores = f" (challenger {self.challenger_score:.4f} vs champion {champ})"
        name = f"load {self.model}" if self.task == LOAD else self.model
        return f"{name}: {'accepted' if self.accepted else 'rejected'} ({self.reason}){scores}"


def _holdout_errors(
    fc: Forecaster, series: Sequence[np.ndarray], holdout: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Mean absolute error and mean absolute actual value per quantity ``[C]`` of ``fc``
    forecasting the last ``holdout[i]`` rows of each series, and how many rows that was
    (None: no held-out row)."""
    errors, scales = [], []
    for s, h in zip(series, holdout, strict=True):
        if h <= 0 or len(s) <= h:
            continue
        start = len(s) - h - 1  # the forecast made after row `start` targets row `start + 1`
        pred = rolling_predict(fc, s, start=start)
        point = pred.point[:-1, 0, :]  # [h, C]; the last forecast has no outcome yet
        actual = s[start + 1 :]
        errors.append(np.abs(point - actual))
        scales.append(np.abs(actual))
    if not errors:
        return None
    err = np.concatenate(errors)
    return err.mean(axis=0), np.concatenate(scales).mean(axis=0), len(err)


def _scaled(errors: tuple[np.ndarray, np.ndarray, int] | None) -> float:
    if errors is None:
        return math.nan
    err, scale, _ = errors
    return float((err / np.maximum(scale, 1e-9)).mean())


def holdout_score(fc: Forecaster, series: Sequence[np.ndarray], holdout: Sequence[int]) -> float:
    """Scaled MAE of ``fc`` forecasting the last ``holdout[i]`` rows of each series from what precedes them."""
    return _scaled(_holdout_errors(fc, series, holdout))


def holdout_mae(
    fc: Forecaster, series: Sequence[np.ndarray], holdout: Sequence[int]
) -> tuple[float, ...] | None:
    """``fc``'s MAE per quantity on the held-out rows, in real units (None: none held out)."""
    errors = _holdout_errors(fc, series, holdout)
    return None if errors is None else tuple(float(v) for v in errors[0])


def finite_weights(fc: Forecaster) -> bool:
    module = getattr(fc, "module", None)
    if module is None:
        return True
    return all(
        bool(torch.isfinite(p).all()) for p in module.state_dict().values() if p.is_floating_point()
    )


def judge(
    name: str,
    challenger: Forecaster,
    champion: Forecaster | None,
    series: Sequence[np.ndarray],
    holdout: Sequence[int],
    tolerance: float = 0.0,
    task: str = NEXT_REQUEST,
) -> Decision:
    """Accept ``challenger`` only if it is sound and scores no worse than ``champion`` on the
    slice (for a load model, on its first horizon step)."""
    if not finite_weights(challenger):
        return Decision(name, False, "non_finite_weights", task=task)
    if champion is not None and (
        challenger.channels != champion.channels or challenger.horizon != champion.horizon
    ):
        return Decision(name, False, "shape_mismatch", task=task)
    errors = _holdout_errors(challenger, series, holdout)
    cand = _scaled(errors)
    if not math.isfinite(cand):
        return Decision(name, False, "non_finite_output", cand, task=task)
    held: dict[str, Any] = {"task": task}
    if errors is not None:
        held["challenger_mae"] = tuple(round(float(v), 6) for v in errors[0])
        held["holdout_rows"] = errors[2]
    if champion is None:
        return Decision(name, True, "no_champion", cand, **held)
    champ = holdout_score(champion, series, holdout)
    if math.isfinite(champ) and cand > champ * (1 + tolerance):
        return Decision(name, False, "worse", cand, champ, **held)
    return Decision(name, True, "no_worse", cand, champ, **held)
