"""The background-worker base: one daemon thread, a tick per interval, a bounded stop."""

from __future__ import annotations

import threading
import time

from predictor.background import BackgroundWorker, PeriodicWorker


class _Ticks(PeriodicWorker):
    def __init__(self, interval_s: float) -> None:
        super().__init__("ticks", interval_s)
        self.ticks = 0
        self.ticked = threading.Event()

    def tick(self) -> None:
        self.ticks += 1
        self.ticked.set()


class _Waits(BackgroundWorker):
    """A loop that waits on its own event too; ``stop`` must wake it through ``_wake``."""

    def __init__(self) -> None:
        super().__init__("waits", stop_timeout_s=5.0)
        self.due = threading.Event()
        self.woken_after_stop = False

    def _wake(self) -> None:
        self.due.set()

    def _loop(self) -> None:
        self.due.wait()
        self.woken_after_stop = self._stop.is_set()


def test_a_periodic_worker_ticks_until_stopped() -> None:
    w = _Ticks(0.001)
    assert not w.finished  # not started yet
    w.start()
    assert w.ticked.wait(5.0)
    assert w._thread.daemon and w._thread.name == "ticks"
    w.stop()
    assert w.finished
    after = w.ticks
    time.sleep(0.02)
    assert w.ticks == after


def test_the_first_tick_waits_one_interval() -> None:
    w = _Ticks(60.0)
    w.start()
    w.stop(timeout_s=5.0)
    assert w.finished and w.ticks == 0


def test_stop_before_start_and_twice_is_harmless() -> None:
    w = _Ticks(0.01)
    w.stop()
    w.stop()
    assert not w.finished and w.ticks == 0


def test_stop_wakes_a_loop_waiting_on_its_own_event() -> None:
    w = _Waits()
    w.start()
    w.stop()
    assert w.finished and w.woken_after_stop


def test_stop_returns_after_its_timeout_when_the_loop_is_busy() -> None:
    release = threading.Event()

    class Busy(BackgroundWorker):
        def _loop(self) -> None:
            release.wait(10.0)

    w = Busy("busy", stop_timeout_s=0.05)
    w.start()
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 2.0 and not w.finished
    release.set()
    w._thread.join(5.0)
    assert w.finished
