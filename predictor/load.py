"""Load over time bins: requests/s, request tokens/s and response tokens/s per bin.

Offline, :func:`bin_load` turns a stream of requests into a dense series of
bins (empty bins are zeros, not gaps). Online, :class:`LoadBins` does the same
incrementally per stream and reports each bin as it closes.

>>> import numpy as np
>>> starts, values = bin_load(np.array([0.0, 1.0, 25.0]), np.array([10, 20, 30]), np.array([1, 1, 1]), bin_s=10)
>>> starts.tolist(), values.tolist()
([0.0, 10.0, 20.0], [[0.2, 3.0, 0.2], [0.0, 0.0, 0.0], [0.1, 3.0, 0.1]])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

#: what a load forecast predicts per bin, all per second
LOAD_QUANTITIES = ("requests_per_s", "request_tokens_per_s", "response_tokens_per_s")


def bin_load(
    timestamps_s: np.ndarray,
    request_tokens: np.ndarray,
    response_tokens: np.ndarray,
    bin_s: float,
    start_s: float | None = None,
    end_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bin starts ``[B]`` and per-second rates ``[B, 3]`` from ``start_s`` (default: first bin
    boundary at or before the first event) to ``end_s`` (default: the last event's bin)."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    if len(ts) == 0:
        return np.empty(0), np.empty((0, 3))
    first = np.floor((ts.min() if start_s is None else start_s) / bin_s)
    last = np.floor((ts.max() if end_s is None else end_s) / bin_s)
    n = int(last - first) + 1
    idx = (np.floor(ts / bin_s) - first).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    idx = idx[keep]
    values = np.zeros((n, 3))
    values[:, 0] = np.bincount(idx, minlength=n)
    values[:, 1] = np.bincount(
        idx, weights=np.asarray(request_tokens, np.float64)[keep], minlength=n
    )
    values[:, 2] = np.bincount(
        idx, weights=np.asarray(response_tokens, np.float64)[keep], minlength=n
    )
    return (first + np.arange(n)) * bin_s, values / bin_s


class _StreamBins:
    """One stream's open bin and its last ``capacity`` closed bins' rates.

    The closed bins are a ring written twice (rows ``i`` and ``i + capacity``), so the last
    ``n`` of them are always one contiguous slice: reading a window costs a copy of ``n``
    rows, not a conversion of every bin kept.
    """

    __slots__ = ("_count", "_ring", "capacity", "index", "sums")

    def __init__(self, index: int, capacity: int) -> None:
        self.index = index  # bin number (timestamp // bin_s) of the open bin
        self.sums = np.zeros(3)  # counts and token sums of the open bin
        self.capacity = capacity
        self._ring = np.zeros((2 * capacity, 3))
        self._count = 0  # closed bins appended so far

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    def append(self, rates: np.ndarray) -> None:
        i = self._count % self.capacity
        self._ring[i] = rates
        self._ring[i + self.capacity] = rates
        self._count += 1

    def tail(self, n: int) -> np.ndarray:
        """The last ``n`` closed bins (fewer if fewer are kept), oldest first, a copy."""
        n = min(n, len(self))
        end = (self._count - 1) % self.capacity + self.capacity + 1
        return self._ring[end - n : end].copy()


class LoadBins:
    """Incremental per-stream binning; a bin closes when an event of a later bin arrives.

    Events that belong to an already closed bin are counted in the open one
    (they are late, not lost). A silence longer than ``max_gap_bins`` closes
    that many empty bins and no more (the history is then all zeros anyway). At most
    ``max_streams`` streams are kept: the least recently seen one is evicted first, and
    ``on_evict`` is called with its key.
    """

    def __init__(
        self,
        bin_s: float,
        capacity: int = 512,
        max_gap_bins: int = 1000,
        max_streams: int = 10_000,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.bin_s, self.capacity, self.max_gap_bins = bin_s, capacity, max_gap_bins
        self.max_streams, self.on_evict = max_streams, on_evict
        self._streams: OrderedDict[str, _StreamBins] = OrderedDict()

    def add(
        self, stream: str, timestamp_s: float, request_tokens: float, response_tokens: float
    ) -> list[tuple[int, np.ndarray]]:
        """Count one event; returns ``(bin number, rates [3])`` of every bin it closed."""
        k = int(timestamp_s // self.bin_s)
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _StreamBins(k, self.capacity)
            while len(self._streams) > self.max_streams:
                gone, _ = self._streams.popitem(last=False)
                if self.on_evict is not None:
                    self.on_evict(gone)
        else:
            self._streams.move_to_end(stream)
        closed: list[tuple[int, np.ndarray]] = []
        if k > st.index:
            rates = st.sums / self.bin_s
            st.append(rates)
            closed.append((st.index, rates))
            empty = min(k - st.index - 1, self.max_gap_bins)
            for j in range(empty):
                zero = np.zeros(3)
                st.append(zero)
                closed.append((st.index + 1 + j, zero))
            st.index, st.sums = k, np.zeros(3)
        st.sums += (1.0, request_tokens, response_tokens)
        return closed

    def streams(self) -> list[str]:
        return list(self._streams)

    def history(self, stream: str, last: int | None = None) -> np.ndarray:
        """Closed bins of ``stream`` (the ``last`` of them if given), oldest first, ``[n, 3]``."""
        st = self._streams.get(stream)
        if st is None or not len(st):
            return np.empty((0, 3))
        return st.tail(st.capacity if last is None else last)

    def closed(self, stream: str) -> int:
        """How many closed bins of ``stream`` are kept (``len(history(stream))``)."""
        st = self._streams.get(stream)
        return 0 if st is None else len(st)

    def open_bin(self, stream: str) -> int | None:
        st = self._streams.get(stream)
        return None if st is None else st.index
