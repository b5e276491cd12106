"""LoadBins keeps each stream's last ``capacity`` closed bins; reading the last few of them
gives exactly what the whole history's tail gives."""

from __future__ import annotations

from collections import deque

import numpy as np

from predictor.load import LoadBins


def test_history_tail_and_count_match_a_plain_record_of_the_closed_bins() -> None:
    rng = np.random.default_rng(0)
    bins = LoadBins(10.0, capacity=7, max_gap_bins=4)
    kept: dict[str, deque[np.ndarray]] = {"a": deque(maxlen=7), "b": deque(maxlen=7)}
    t = {"a": 0.0, "b": 0.0}
    for _ in range(200):
        s = "a" if rng.random() < 0.6 else "b"
        t[s] += float(rng.exponential(8.0))
        for _, rates in bins.add(s, t[s], float(rng.integers(1, 99)), 3.0):
            kept[s].append(rates.copy())
        for stream, want in kept.items():
            full = np.array(want) if want else np.empty((0, 3))
            np.testing.assert_array_equal(bins.history(stream), full)
            assert bins.closed(stream) == len(want)
            for n in (1, 3, 7, 50):
                np.testing.assert_array_equal(bins.history(stream, last=n), full[-n:])
    assert bins.closed("nobody") == 0 and bins.history("nobody", last=3).shape == (0, 3)


def test_history_is_a_copy() -> None:
    bins = LoadBins(1.0, capacity=4)
    for ts in range(6):
        bins.add("s", float(ts), 1.0, 1.0)
    window = bins.history("s", last=2)
    before = window.copy()
    for ts in range(6, 12):
        bins.add("s", float(ts), 5.0, 5.0)
    np.testing.assert_array_equal(window, before)
