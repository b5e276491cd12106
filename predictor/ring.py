"""A fixed-capacity ring of numbers in a numpy array: the last ``size`` values, cheaply.

The serving loop keeps many rolling buffers (errors, interval hits, conformal scores per
model, quantity and horizon) and reads a mean or a quantile of each after every batch;
a numpy ring does both without converting Python objects.

>>> r = Ring(3)
>>> r.extend([1.0, 2.0]); r.extend([3.0, 4.0])
>>> len(r), sorted(r.values().tolist()), r.mean()
(3, [2.0, 3.0, 4.0], 3.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Ring:
    """The last ``size`` values extended into it (order inside is not kept)."""

    def __init__(self, size: int, dtype: type = np.float64) -> None:
        if size < 1:
            raise ValueError(f"a ring needs room for at least one value, got {size}")
        self._buf: np.ndarray = np.zeros(size, dtype=dtype)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def extend(self, values: np.ndarray | Sequence[float]) -> None:
        v = np.asarray(values, dtype=self._buf.dtype).ravel()
        size = len(self._buf)
        if len(v) >= size:
            self._buf[:] = v[-size:]
            self._next, self._count = 0, size
            return
        end = self._next + len(v)
        if end <= size:
            self._buf[self._next : end] = v
        else:
            split = size - self._next
            self._buf[self._next :] = v[:split]
            self._buf[: end - size] = v[split:]
        self._next = end % size
        self._count = min(size, self._count + len(v))

    def values(self) -> np.ndarray:
        """The values held (a view: copy it to keep it)."""
        return self._buf[: self._count]

    def mean(self) -> float:
        return float(self.values().mean()) if self._count else float("nan")
