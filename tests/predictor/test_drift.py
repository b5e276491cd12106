"""The drift policy on made-up error sequences, and where a model's reference error comes from."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.drift import DriftPolicy, reference_mae

Q = ("gap_s", "request_tokens", "response_tokens")
REF = (2.0, 100.0, 50.0)


def _errors(n: int, scale: float = 1.0) -> np.ndarray:
    """``n`` rows of absolute errors, ``scale`` times the reference on every quantity."""
    return np.tile(np.array(REF) * scale, (n, 1))


def test_no_drift_below_the_factor_however_many_forecasts() -> None:
    p = DriftPolicy(Q, factor=1.5, min_count=50)
    for _ in range(20):
        p.observe("lstm", 1, REF, _errors(50, 1.45))
        assert p.check() is None


def test_no_drift_before_min_count_forecasts() -> None:
    p = DriftPolicy(Q, factor=1.5, min_count=50)
    p.observe("lstm", 1, REF, _errors(49, 10.0))
    assert p.check() is None
    p.observe("lstm", 1, REF, _errors(1, 10.0))
    drift = p.check()
    assert drift is not None and drift.count == 50 and drift.model == "lstm"


def test_drift_once_above_then_quiet_until_rearmed_and_counted_afresh() -> None:
    p = DriftPolicy(Q, factor=1.5, min_count=20)
    p.observe("lstm", 3, REF, _errors(20, 1.0))
    assert p.check() is None
    # a level shift on one quantity only: the window's mean climbs past 1.5 x the reference
    shifted = _errors(20, 1.0)
    shifted[:, 1] = 400.0
    found = []
    for i in range(20):
        p.observe("lstm", 3, REF, shifted[i : i + 1])
        if (d := p.check()) is not None:
            found.append((i, d))
    ((i, drift),) = found  # exactly one, not one per check
    assert drift.quantity == "request_tokens" and drift.version == 3
    assert drift.online_mae > 1.5 * 100.0 and drift.reference_mae == 100.0
    # mean of the last 20 = (100 * (19 - i) + 400 * (i + 1)) / 20 > 150 from i = 3 on
    assert i == 3
    p.observe("lstm", 3, REF, _errors(100, 5.0))
    assert p.check() is None  # still drifting, but the refit asked for has not run yet
    p.rearm()
    p.observe("lstm", 3, REF, _errors(19, 5.0))
    assert p.check() is None  # re-armed: errors count from the refit on
    p.observe("lstm", 3, REF, _errors(1, 5.0))
    assert p.check() is not None


def test_a_new_version_starts_its_window_afresh() -> None:
    p = DriftPolicy(Q, factor=1.5, min_count=10)
    p.observe("lstm", 1, REF, _errors(9, 3.0))
    p.observe("lstm", 2, REF, _errors(5, 3.0))  # the errors of version 1 do not count
    assert p.check() is None
    p.observe("lstm", 2, REF, _errors(5, 3.0))
    assert p.check() is not None


def test_a_model_without_reference_and_a_zero_factor_never_drift() -> None:
    p = DriftPolicy(Q, factor=1.5, min_count=5)
    p.observe("lstm", 1, None, _errors(50, 100.0))
    assert p.check() is None
    off = DriftPolicy(Q, factor=0.0, min_count=5)
    off.observe("lstm", 1, REF, _errors(50, 100.0))
    assert not off.enabled and off.check() is None
    with pytest.raises(ValueError):
        DriftPolicy(Q, factor=-1.0)


def test_reference_mae_is_the_larger_held_out_error_on_enough_outcomes() -> None:
    guard = {"challenger_mae": [1.0, 20.0, 3.0], "holdout_rows": 50}
    meta = {"guard": guard, "validation": {"mae": [2.0, 9.0, 9.0]}, "training": {"val_windows": 40}}
    assert reference_mae(meta, 3) == (2.0, 20.0, 9.0)
    # a guard slice of a handful of outcomes is no reference: validation's alone
    few = {**meta, "guard": {**guard, "holdout_rows": 3}}
    assert reference_mae(few, 3) == (2.0, 9.0, 9.0)
    # nor a validation over too few windows; an old artifact's (no count) is taken
    assert reference_mae({**few, "training": {"val_windows": 4}}, 3) is None
    assert reference_mae({"validation": {"mae": [4, 5, 6]}}, 3) == (4.0, 5.0, 6.0)
    assert reference_mae({"guard": {"challenger_mae": [4, 5, 6]}}, 3) is None  # rows unknown
    assert reference_mae({"validation": {"mae": [1.0, None, 2.0]}}, 3) is None
    assert reference_mae({"validation": {"mae": [1.0, 2.0]}}, 3) is None
    assert reference_mae({"validation": {"mae": [1.0, float("nan"), 2.0]}}, 3) is None
    assert reference_mae({}, 3) is None
