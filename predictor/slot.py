"""The model slot: the one place a serving model lives, swapped atomically.

Readers take :meth:`ModelSlot.current` once per micro-batch and use that
snapshot for the whole batch, so every forecast names the version that made it.
Writers call :meth:`ModelSlot.offer`; a version never moves backwards.

>>> slot = ModelSlot("lstm")
>>> slot.current() is None
True
>>> slot.offer("model-a", 2), slot.offer("model-b", 1), slot.current().version
(True, False, 2)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A forecaster together with its version and metadata, as served."""

    forecaster: T
    version: int
    meta: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)


class ModelSlot(Generic[T]):
    """Holds the serving version of one model; the swap is a single reference assignment."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._current: Loaded[T] | None = None
        self._lock = threading.Lock()

    def current(self) -> Loaded[T] | None:
        return self._current

    @property
    def version(self) -> int:
        cur = self._current
        return 0 if cur is None else cur.version

    def offer(self, forecaster: T, version: int, meta: dict[str, Any] | None = None) -> bool:
        """Install ``forecaster`` if ``version`` is newer than the one serving; True if installed."""
        with self._lock:
            if self._current is not None and version <= self._current.version:
                return False
            self._current = Loaded(forecaster, version, dict(meta or {}))
            return True
