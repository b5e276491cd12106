"""Background workers: one daemon thread each, started once and stopped once.

The periodic trainer, the model-topic follower, the model-directory watcher, the status
line and the benchmarks' version loader all run a loop beside the serving loop. :class:`BackgroundWorker` holds what they share (a named daemon
thread, a stop event its loop watches, a bounded join on stop); :class:`PeriodicWorker`
is the common case, a :meth:`~PeriodicWorker.tick` every ``interval_s`` seconds. No I/O
here: what a worker does is the subclass's business.

Lifecycle: :meth:`~BackgroundWorker.start` at most once; :meth:`~BackgroundWorker.stop`
may be called any number of times, before or after ``start``, and returns after at most
its timeout even when the loop is busy (the thread is a daemon, so it never holds up the
interpreter's exit).

>>> import threading
>>> class Count(PeriodicWorker):
...     def __init__(self) -> None:
...         super().__init__("count", interval_s=0.001)
...         self.ticks, self.ticked = 0, threading.Event()
...     def tick(self) -> None:
...         self.ticks += 1
...         self.ticked.set()
>>> w = Count()
>>> w.start()
>>> w.ticked.wait(5.0)
True
>>> w.stop()
>>> w.finished and w.ticks >= 1
True
"""

from __future__ import annotations

import threading


class BackgroundWorker:
    """A daemon thread named ``name`` that runs :meth:`_loop` until :meth:`stop`.

    The loop should return soon after ``self._stop`` is set (wait on it rather than
    sleep). A loop that also waits on something else wakes in :meth:`_wake`, which
    :meth:`stop` calls after setting the stop event.
    """

    def __init__(self, name: str, stop_timeout_s: float = 10.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the loop to end and wait for it, at most ``timeout_s`` (default
        ``stop_timeout_s``) seconds."""
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout_s if timeout_s is None else timeout_s)

    @property
    def finished(self) -> bool:
        """True once the loop has ended (stopped, or returned by itself)."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def _wake(self) -> None:
        """Wake a loop that waits on more than the stop event (nothing by default)."""

    def _loop(self) -> None:
        raise NotImplementedError


class PeriodicWorker(BackgroundWorker):
    """Calls :meth:`tick` every ``interval_s`` seconds (the first after one interval)
    until stopped."""

    def __init__(self, name: str, interval_s: float, stop_timeout_s: float = 10.0) -> None:
        super().__init__(name, stop_timeout_s)
        self.interval_s = interval_s

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()
