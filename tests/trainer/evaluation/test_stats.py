"""Walk-forward scoring: MAE and coverage by horizon, the ratio interval, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.models import Prediction
from trainer.evaluation.stats import ratio_interval, score, verdict


def test_score_multi_horizon_skips_missing_outcomes() -> None:
    point = np.zeros((3, 2, 1))
    pred = Prediction(point, point - 1, point + 1)
    actual = np.array([[[0.5], [2.0]], [[-3.0], [0.0]], [[1.0], [np.nan]]])
    rows = score(pred, actual, ["load"], task="load", model="m", kind="model")
    h1, h2 = rows
    assert (h1["horizon"], h1["n"], h1["mae"], h1["coverage"]) == (1, 3, 1.5, pytest.approx(2 / 3))
    assert (h2["horizon"], h2["n"], h2["mae"], h2["coverage"]) == (2, 2, 1.0, 0.5)
    assert score(pred, actual, ["load"], [2], task="load", model="m", kind="model") == [h2]


def test_ratio_interval_is_a_paired_block_bootstrap() -> None:
    rng = np.random.default_rng(1)
    base = rng.exponential(1.0, 3000)
    # the same errors: every resample gives 1
    assert ratio_interval(base, base.copy(), block=6) == [1.0, 1.0]
    # uniformly 5 % better: the pairing cancels the shared noise, 1 is far outside
    lo, hi = ratio_interval(0.95 * base, base)
    assert lo == pytest.approx(0.95) and hi == pytest.approx(0.95)
    # as good, but independent: the interval spans 1 and is wider for fewer origins
    other = rng.exponential(1.0, 3000)
    wide, narrow = ratio_interval(other[:300], base[:300]), ratio_interval(other, base)
    assert wide is not None and narrow is not None
    assert wide[0] < 1 < wide[1] and narrow[0] < 1 < narrow[1]
    assert wide[1] - wide[0] > 2 * (narrow[1] - narrow[0])
    # a missing outcome (NaN) in either series drops that origin from both
    with_nan = np.append(base, np.nan)
    assert ratio_interval(with_nan, with_nan, block=6) == [1.0, 1.0]
    one_sided = np.append(0.95 * base, 7.0)
    assert ratio_interval(one_sided, with_nan) == ratio_interval(0.95 * base, base)
    # too few blocks, or a zero baseline: None
    assert ratio_interval(base[:50], base[:50], block=30) is None
    assert ratio_interval(base[:100], np.zeros(100)) is None
    with pytest.raises(ValueError, match="paired"):
        ratio_interval(base, base[:10])


def test_ratio_interval_holds_the_true_ratio_about_as_often_as_it_says() -> None:
    """Model and baseline errors from one distribution (true ratio 1), serially correlated:
    the 90 % interval holds 1 for most of 200 series, and not for all of them (a far too
    wide interval would); a model 30 % worse is told apart almost always."""
    rng = np.random.default_rng(5)

    def correlated(n: int) -> np.ndarray:
        noise = rng.standard_normal(n + 20)
        return np.abs(np.convolve(noise, np.ones(5) / 5, mode="valid")[:n])

    held, told_apart = 0, 0
    for k in range(200):
        a, b = correlated(1000), correlated(1000)
        lo, hi = ratio_interval(a, b, block=5, seed=k)
        held += lo <= 1.0 <= hi
        lo, hi = ratio_interval(1.3 * a, b, block=5, seed=k)
        told_apart += lo > 1.0
    assert 0.8 <= held / 200 < 0.98
    assert told_apart / 200 > 0.95


def test_verdict_intervals_need_both_error_series() -> None:
    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, 500)
    results = [
        {"task": "load", "target": "x", "horizon": 1, "model": m, "kind": k, "mae": mae, "n": 500}
        for m, k, mae in [("lstm", "model", 0.9 * base.mean()), ("a", "baseline", base.mean())]
    ]
    (v,) = verdict(results, {("lstm", "x", 1): 0.9 * base, ("a", "x", 1): base})
    assert v["ratio"] == pytest.approx(0.9) and v["ratio_interval"] == [0.9, 0.9]
    (v,) = verdict(results, {("lstm", "x", 1): 0.9 * base})
    assert "ratio_interval" not in v
