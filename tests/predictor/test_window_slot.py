"""Rolling windows give the same windows as the offline path; the model slot only moves forward."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from predictor.features import pad_window, request_matrix
from predictor.models.base import Prediction, rolling_predict
from predictor.slot import ModelSlot
from predictor.window import RollingWindows


class _Recorder:
    """A forecaster that remembers the windows it was asked about and forecasts zeros."""

    name, kind, horizon, channels = "recorder", "baseline", 1, 3

    def __init__(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self.seen: list[np.ndarray] = []

    def predict(self, windows: np.ndarray) -> Prediction:
        self.seen.append(windows.copy())
        zeros = np.zeros((len(windows), self.horizon, self.channels))
        return Prediction(zeros, zeros, zeros)


def _events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_000.0 + np.cumsum(rng.exponential(4.0, size=n))
    return ts, rng.integers(0, 4000, size=n), rng.integers(0, 2000, size=n)


def _feed(
    windows: RollingWindows, stream: str, events: tuple[np.ndarray, ...], seq_len: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed events in micro-batches of random sizes (1..9); concatenated results."""
    ts, req, resp = events
    rng = np.random.default_rng(seed)
    wins, have, gaps = [], [], []
    i = 0
    while i < len(ts):
        j = min(len(ts), i + int(rng.integers(1, 10)))
        w, h, g = windows.extend(stream, ts[i:j], req[i:j], resp[i:j], seq_len)
        assert w.shape == (j - i, seq_len, 3)
        wins.append(w)
        have.append(h)
        gaps.append(g)
        i = j
    return np.concatenate(wins), np.concatenate(have), np.concatenate(gaps)


@pytest.mark.parametrize("seq_len", [1, 5, 16])
@pytest.mark.parametrize("extra_capacity", [0, 7, 500])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_windows_equal_offline_windows(
    seq_len: int, extra_capacity: int, seed: int
) -> None:
    events = _events(120, seed)
    series = request_matrix(*events)  # [N, 3], what training and rolling_predict see

    rw = RollingWindows(capacity=seq_len + extra_capacity)
    wins, have, gaps = _feed(rw, "s", events, seq_len, seed=seed + 10)

    recorder = _Recorder(seq_len)
    rolling_predict(recorder, series, batch_size=13)
    offline = np.concatenate(recorder.seen)
    np.testing.assert_array_equal(wins, offline)
    for t in (0, 1, seq_len - 1, seq_len, len(series) - 1):
        expected, warm = pad_window(series[: t + 1], seq_len)
        np.testing.assert_array_equal(wins[t], expected)
        assert warm == (have[t] >= seq_len)
    np.testing.assert_array_equal(gaps, series[:, 0])
    seen = np.arange(1, len(series) + 1)  # events so far, including this one
    assert (have <= seen).all()
    np.testing.assert_array_equal(have >= seq_len, seen >= seq_len)  # warm exactly when full


def test_streams_are_independent() -> None:
    rw = RollingWindows(capacity=32)
    a = _events(90, 3)
    first = tuple(x[:40] for x in a)
    rest = tuple(x[40:] for x in a)
    wins1, _, _ = _feed(rw, "a", first, 8, seed=0)
    _feed(rw, "b", _events(40, 4), 8, seed=1)  # another stream in between
    wins2, _, _ = _feed(rw, "a", rest, 8, seed=2)
    series = request_matrix(*a)
    for t, got in enumerate(np.concatenate([wins1, wins2])):
        np.testing.assert_array_equal(got, pad_window(series[: t + 1], 8)[0])


def test_capacity_bounds_memory() -> None:
    rw = RollingWindows(capacity=10)
    events = _events(200, 6)
    _feed(rw, "s", events, 4, seed=0)
    assert rw.size("s") == 10
    np.testing.assert_array_equal(rw.history("s"), request_matrix(*events)[-10:])
    assert rw.last_timestamp("s") == events[0][-1]
    assert rw.size("other") == 0 and rw.last_timestamp("other") is None
    assert rw.history("other").shape == (0, 3)


def test_out_of_order_event_gets_gap_zero() -> None:
    rw = RollingWindows(capacity=16)
    _, _, gaps = rw.extend("s", np.array([0.0, 10.0, 5.0, 12.0]), np.ones(4), np.ones(4), 2)
    assert gaps.tolist() == [0.0, 10.0, 0.0, 2.0]
    assert rw.last_timestamp("s") == 12.0
    # across batches too: an event older than the stream's newest one does not move the clock
    _, _, gaps = rw.extend("s", np.array([11.0, 15.0]), np.ones(2), np.ones(2), 2)
    assert gaps.tolist() == [0.0, 3.0]
    assert rw.last_timestamp("s") == 15.0
    assert (rw.history("s")[:, 0] >= 0).all()


def test_least_recently_seen_streams_are_evicted() -> None:
    rw = RollingWindows(capacity=4, max_streams=2)
    one = (np.array([1.0]), np.array([1]), np.array([1]))
    rw.extend("a", *one, seq_len=2)
    rw.extend("b", *one, seq_len=2)
    rw.extend("a", np.array([2.0]), np.array([1]), np.array([1]), seq_len=2)  # a is now newest
    rw.extend("c", *one, seq_len=2)
    assert len(rw) == 2
    assert "b" not in rw and "a" in rw and "c" in rw
    for name in "defgh":
        rw.extend(name, *one, seq_len=2)
        assert len(rw) <= 2
    assert "g" in rw and "h" in rw and "f" not in rw
    # an evicted stream starts afresh: its first event has no previous request
    _, have, gaps = rw.extend("a", np.array([50.0]), np.array([1]), np.array([1]), seq_len=2)
    assert gaps.tolist() == [0.0] and have.tolist() == [1]


# --- ModelSlot -----------------------------------------------------------------------------


def test_slot_versions_only_move_forward() -> None:
    slot: ModelSlot[str] = ModelSlot("lstm")
    assert slot.current() is None and slot.version == 0
    assert slot.offer("v2", 2, {"name": "two"})
    assert not slot.offer("v1", 1)
    assert not slot.offer("v2-again", 2)  # the same version is not a newer one
    assert slot.offer("v5", 5)
    cur = slot.current()
    assert cur is not None and (cur.forecaster, cur.version) == ("v5", 5)
    assert slot.version == 5


def test_concurrent_offers_end_with_the_max_version() -> None:
    slot: ModelSlot[str] = ModelSlot("dlinear")
    versions = list(range(1, 401))
    n_threads = 8
    barrier = threading.Barrier(n_threads + 1)
    stop = threading.Event()
    seen_backwards: list[tuple[int, int]] = []

    def writer(seed: int) -> None:
        mine = versions[:]
        random.Random(seed).shuffle(mine)
        barrier.wait()
        for v in mine:
            slot.offer(f"model-{v}", v)

    def reader() -> None:
        last = 0
        barrier.wait()
        while not stop.is_set():
            cur = slot.current()
            if cur is None:
                continue
            if cur.version < last:
                seen_backwards.append((last, cur.version))
            if cur.forecaster != f"model-{cur.version}":
                seen_backwards.append((-1, cur.version))
            last = cur.version

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    watcher = threading.Thread(target=reader)
    for t in [*writers, watcher]:
        t.start()
    for t in writers:
        t.join(timeout=30)
    stop.set()
    watcher.join(timeout=30)
    assert not any(t.is_alive() for t in [*writers, watcher])
    cur = slot.current()
    assert cur is not None and cur.version == max(versions)
    assert cur.forecaster == f"model-{max(versions)}"
    assert seen_backwards == []


def test_evicted_streams_are_reported_to_on_evict() -> None:
    gone: list[str] = []
    rw = RollingWindows(capacity=4, max_streams=2, on_evict=gone.append)
    one = (np.array([1.0]), np.array([1]), np.array([1]))
    for name in "abac":  # a is seen again before c comes: b is the least recently seen
        rw.extend(name, *one, seq_len=2)
    assert gone == ["b"]
    rw.extend("d", *one, seq_len=2)
    assert gone == ["b", "a"]
