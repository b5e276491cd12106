"""Bounded rolling windows of recent requests, one per stream.

Each stream keeps its last ``capacity`` raw rows ``[gap_s, request_tokens,
response_tokens]`` and the time of its newest event. :meth:`RollingWindows.extend`
appends a micro-batch of one stream's events and returns, for each of them, the
window that ends with it, ready for a forecaster. Memory is bounded by
``capacity`` rows per stream and ``max_streams`` streams (least recently seen
streams are evicted first, and ``on_evict`` is called with each evicted stream's key
so that the owner can drop what else it keeps per stream).

Events may arrive a little out of order: an event older than the stream's
newest one gets a gap of 0 and does not move the clock back.

>>> import numpy as np
>>> w = RollingWindows(capacity=4)
>>> wins, have, gaps = w.extend("a", np.array([0.0, 1.0, 3.0]), np.array([10, 20, 30]), np.array([1, 2, 3]), seq_len=2)
>>> wins.shape, have.tolist(), gaps.tolist()
((3, 2, 3), [1, 2, 3], [0.0, 1.0, 2.0])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class _Stream:
    rows: np.ndarray  # [n <= capacity, 3]
    last_ts: float
    seen: int  # events ever added


class RollingWindows:
    """Per-stream bounded history of raw request rows."""

    def __init__(
        self,
        capacity: int,
        max_streams: int = 10_000,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.max_streams = max_streams
        self.on_evict = on_evict
        self._streams: OrderedDict[str, _Stream] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream: str) -> bool:
        return stream in self._streams

    def size(self, stream: str) -> int:
        s = self._streams.get(stream)
        return 0 if s is None else len(s.rows)

    def last_timestamp(self, stream: str) -> float | None:
        s = self._streams.get(stream)
        return None if s is None else s.last_ts

    def drop(self, stream: str) -> None:
        self._streams.pop(stream, None)

    def extend(
        self,
        stream: str,
        timestamps_s: np.ndarray,
        request_tokens: np.ndarray,
        response_tokens: np.ndarray,
        seq_len: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append events (in arrival order).

        Returns the windows ``[n, seq_len, 3]`` ending at each event, how many real
        rows each window could draw on (``>= seq_len`` means warm), and the gaps.
        """
        st = self._streams.get(stream)
        ts = np.asarray(timestamps_s, dtype=np.float64)
        # running maximum keeps the stream clock monotonic under small reordering
        prev = ts[0] if st is None else st.last_ts
        clock = np.maximum.accumulate(np.concatenate([[prev], ts]))
        new = np.stack(
            [
                np.diff(clock),
                np.asarray(request_tokens, np.float64),
                np.asarray(response_tokens, np.float64),
            ],
            axis=-1,
        )  # [n, 3]
        if st is None:
            new[0, 0] = 0.0  # the first event of a stream has no previous request
            old = np.empty((0, 3))
        else:
            old = st.rows
            self._streams.move_to_end(stream)
        full = np.concatenate([old, new])  # [m + n, 3]
        m, n = len(old), len(new)
        windows = self.windows_at(full, m, n, seq_len)
        have = np.arange(m + 1, m + n + 1)  # real rows each new event's window can draw on
        self._streams[stream] = _Stream(
            full[-self.capacity :].copy(), float(clock[-1]), (st.seen if st else 0) + n
        )
        while len(self._streams) > self.max_streams:
            gone, _ = self._streams.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(gone)
        return windows, have, new[:, 0].copy()

    @staticmethod
    def windows_at(full: np.ndarray, m: int, n: int, seq_len: int) -> np.ndarray:
        """Windows ``[n, seq_len, C]`` ending at rows ``m .. m+n-1`` of ``full``, left-padded."""
        c = full.shape[1]
        lead = max(0, seq_len - (m + 1))  # padding the first new window needs
        if lead:  # rows before a stream's first event are copies of it (documented padding)
            first = full[:1] if len(full) else np.zeros((1, c))
            full = np.concatenate([np.repeat(first, lead, axis=0), full])
            m += lead
        # [rows - L + 1, C, L] -> [n, L, C]
        view = np.lib.stride_tricks.sliding_window_view(full, seq_len, axis=0)
        start = m + 1 - seq_len
        wins = view[start : start + n].transpose(0, 2, 1)
        return np.ascontiguousarray(wins)

    def history(self, stream: str) -> np.ndarray:
        """The rows kept for ``stream`` ``[n, 3]`` (a copy)."""
        s = self._streams.get(stream)
        return np.empty((0, 3)) if s is None else s.rows.copy()
