"""What the refit worker keeps of the stream: recent raw events (next-request models) and
recent load bins (load models), per stream, both bounded.

:class:`RecentEvents` keeps the last ``capacity`` requests of each stream.
:class:`RecentBins` counts events into time bins of the serving ``bin_s`` as they arrive
(as :class:`predictor.load.LoadBins` does in the serving loop: a bin closes when an event
of a later bin arrives, a late event counts in the open bin, empty bins are zeros) and
keeps the last ``capacity`` closed bins: load models train on bins that span hours, far
more events than a raw buffer could hold at thousands of events per second.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from predictor.events import RequestEvent


class RecentEvents:
    """Thread-safe bounded buffer of recent raw events per stream."""

    def __init__(self, capacity: int, stream_key: str = "model") -> None:
        self.capacity, self.stream_key = capacity, stream_key
        self._lock = threading.Lock()
        self._streams: dict[str, deque[tuple[float, int, int]]] = {}
        self.total = 0

    def add(self, events: Iterable[RequestEvent]) -> int:
        n = 0
        with self._lock:
            for ev in events:
                key = ev.stream_key(self.stream_key)
                buf = self._streams.get(key)
                if buf is None:
                    buf = self._streams[key] = deque(maxlen=self.capacity)
                buf.append((ev.timestamp_s, ev.request_tokens, ev.response_tokens))
                n += 1
            self.total += n
        return n

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._streams.values())

    def snapshot(self) -> dict[str, np.ndarray]:
        """Raw per-request matrices ``[N, 3]`` per stream (the most recent ``capacity`` each)."""
        from predictor.features import request_matrix

        with self._lock:
            copies = {k: np.array(list(v), dtype=np.float64) for k, v in self._streams.items() if v}
        return {k: request_matrix(a[:, 0], a[:, 1], a[:, 2]) for k, a in copies.items()}


@dataclass
class _Bins:
    index: int  # bin number (timestamp // bin_s) of the open bin
    sums: list[float]  # requests, request tokens, response tokens of the open bin
    closed: deque[tuple[int, float, float, float]] = field(default_factory=deque)


class RecentBins:
    """Thread-safe per-stream load bins of ``bin_s`` seconds: the last ``capacity`` closed
    bins of each stream (plain Python sums per event, so counting stays cheap)."""

    def __init__(self, bin_s: float, capacity: int, stream_key: str = "model") -> None:
        if not bin_s > 0 or capacity < 1:
            raise ValueError(f"bins need bin_s > 0 and capacity >= 1, got {bin_s}, {capacity}")
        self.bin_s, self.capacity, self.stream_key = float(bin_s), capacity, stream_key
        self._lock = threading.Lock()
        self._streams: dict[str, _Bins] = {}

    def add(self, events: Iterable[RequestEvent]) -> int:
        n, bin_s = 0, self.bin_s
        with self._lock:
            for ev in events:
                k = int(ev.timestamp_s // bin_s)
                key = ev.stream_key(self.stream_key)
                st = self._streams.get(key)
                if st is None:
                    st = self._streams[key] = _Bins(k, [0.0, 0.0, 0.0], deque(maxlen=self.capacity))
                elif k > st.index:
                    st.closed.append((st.index, *st.sums))  # type: ignore[arg-type]
                    st.index, st.sums = k, [0.0, 0.0, 0.0]
                s = st.sums
                s[0] += 1.0
                s[1] += ev.request_tokens
                s[2] += ev.response_tokens
                n += 1
        return n

    def bins(self) -> int:
        """The most closed bins of any stream (what the longest series would hold)."""
        with self._lock:
            spans = [st.index - st.closed[0][0] for st in self._streams.values() if st.closed]
        return min(self.capacity, max(spans, default=0))

    def snapshot(self) -> dict[str, np.ndarray]:
        """Per-second rates ``[B, 3]`` of each stream's last closed bins (at most ``capacity``,
        empty bins as zeros), oldest first."""
        with self._lock:
            copies = {
                k: (st.index, list(st.closed)) for k, st in self._streams.items() if st.closed
            }
        out = {}
        for key, (open_index, closed) in copies.items():
            last = open_index - 1  # the bins between the last busy one and the open one: zeros
            first = max(closed[0][0], last - self.capacity + 1)
            values = np.zeros((last - first + 1, 3))
            for index, *sums in closed:
                if index >= first:
                    values[index - first] += sums
            out[key] = values / self.bin_s
        return out
