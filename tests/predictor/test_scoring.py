"""Online scoring: rolling MAE and coverage per model and quantity, and the ``best`` choice."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.scoring import RollingScores, score_key


def _add(
    s: RollingScores, model: str, quantity: str, errors: list[float], hits: list[bool]
) -> None:
    s.add(model, quantity, np.array(errors), np.array(hits))


def test_mae_and_coverage_cover_only_the_last_size_outcomes() -> None:
    s = RollingScores(size=4)
    _add(s, "lstm", "gap_s", [100.0, 100.0], [False, False])
    _add(s, "lstm", "gap_s", [1.0, 2.0, 3.0, 6.0], [True, True, False, True])
    assert s.count("lstm", "gap_s") == 4
    assert s.mae("lstm", "gap_s") == pytest.approx(3.0)  # the two 100s rolled out
    assert s.coverage("lstm", "gap_s") == pytest.approx(0.75)
    assert s.scored == {"lstm": 6}  # every outcome ever scored, not only those kept


def test_nothing_scored_reads_as_none_not_nan() -> None:
    s = RollingScores()
    _add(s, "lstm", "gap_s", [1.0], [True])
    assert s.mae("lstm", "request_tokens") is None and s.coverage("dlinear", "gap_s") is None
    assert s.count("dlinear", "gap_s") == 0 and s.model_coverage("dlinear") is None
    assert s.tracked() == [("lstm", "gap_s")]
    _add(s, "dlinear", "gap_s", [], [])  # an empty batch of outcomes scores nothing either
    assert s.mae("dlinear", "gap_s") is None and s.coverage("dlinear", "gap_s") is None


def test_quantities_and_models_are_kept_apart() -> None:
    s = RollingScores()
    _add(s, "lstm", "gap_s", [1.0, 1.0], [True, True])
    _add(s, "lstm", "request_tokens", [10.0] * 8, [False] * 6 + [True] * 2)
    _add(s, "dlinear", "gap_s", [5.0], [False])
    assert (s.mae("lstm", "gap_s"), s.mae("lstm", "request_tokens")) == (1.0, 10.0)
    assert s.scored == {"lstm": 10, "dlinear": 1}
    # a model's confidence: the mean of its quantities' coverages (1.0 and 0.25), each
    # quantity weighing the same whatever its count; another model's hits do not count
    assert s.model_coverage("lstm") == pytest.approx(0.625)
    assert s.model_coverage("dlinear") == 0.0
    assert sorted(s.tracked()) == [
        ("dlinear", "gap_s"),
        ("lstm", "gap_s"),
        ("lstm", "request_tokens"),
    ]


def test_best_is_the_lowest_mae_among_models_with_enough_outcomes() -> None:
    s = RollingScores()
    _add(s, "lstm", "gap_s", [2.0] * 3, [True] * 3)
    _add(s, "dlinear", "gap_s", [1.0] * 2, [True] * 2)
    assert s.best("gap_s", ["lstm", "dlinear"], min_count=4) is None  # none has 4 yet
    assert s.best("gap_s", ["lstm", "dlinear"], min_count=3) == "lstm"  # dlinear: too few
    assert s.best("gap_s", ["lstm", "dlinear"], min_count=2) == "dlinear"  # lower MAE
    assert s.best("gap_s", ["lstm"], min_count=2) == "lstm"  # only the models named compete
    assert s.best("request_tokens", ["lstm", "dlinear"], min_count=1) is None


def test_score_key_names_a_quantity_at_a_horizon() -> None:
    assert score_key("requests_per_s", 6) == "requests_per_s@6"
