"""When a task's next refit is due: by time, by event count, on request (drift), or cold.

A refit is due ``every_s`` seconds after the last one started, after ``every_events``
new events, as soon as something :meth:`Schedule.request`\\ s one (the serving model's
error drifted up), or, while the schedule is :attr:`~Schedule.cold` (a slot of its task has
no model yet), as soon as there is enough data to train one (:meth:`Schedule.cold_ready`),
not at the next interval; but never sooner than the last refit's own duration after it ended: a
refit that took T seconds is followed by at least T seconds without one, so training
(and what it takes from the serving path) never runs more than half the time, however
fast events arrive.

>>> s = Schedule(every_s=10.0, now=0.0)
>>> s.next_due(0.0)
10.0
>>> s.started(10.0); s.finished(40.0)   # a refit that took 30 s
>>> s.next_due(40.0)                     # 10 s after its start, but not before 40 + 30
70.0
>>> c = Schedule(every_s=600.0, now=0.0); c.cold = True
>>> c.next_due(5.0)                      # cold, but not enough data yet: the interval
600.0
>>> c.cold_ready(); c.next_due(5.0)      # enough data for a first version: now
True
5.0
>>> c.reason()                           # what made it due (the refit counter's label)
'cold'
"""

from __future__ import annotations

import threading
import time


class Schedule:
    """One task's refit schedule (times are ``time.monotonic()`` seconds)."""

    def __init__(
        self,
        every_s: float | None = None,
        every_events: int | None = None,
        now: float | None = None,
    ) -> None:
        now = time.monotonic() if now is None else now
        self.every_s, self.every_events = every_s or None, every_events or None
        self.last_start = self.last_end = now
        self.last_duration = 0.0
        self.since_events = 0
        self.requested = False
        #: what asked for the pending request: ``drift`` or ``cold``
        self.requested_by = ""
        self.rounds = 0
        #: a slot of the task has no model yet (the worker keeps this current): enough data
        #: for a refit (:meth:`cold_ready`) makes one due at once instead of at the interval
        self.cold = False
        #: requests come from the serving thread, rounds start on the refit worker's: every
        #: change of ``requested`` holds it (re-entrant, so a caller may hold it across a
        #: :meth:`reason` and :meth:`started`)
        self.lock = threading.RLock()

    @property
    def active(self) -> bool:
        """Whether anything can ever make a refit due."""
        return bool(self.every_s or self.every_events) or self.requested

    def count(self, n: int) -> bool:
        """``n`` new events; True if that makes a refit due by count."""
        self.since_events += n
        return bool(self.every_events) and self.since_events >= (self.every_events or 0)

    def request(self, reason: str = "drift") -> None:
        """Ask for a refit as soon as the minimum gap allows (drift); ``reason`` labels the
        round (over a pending cold request: a model is serving and drifted)."""
        with self.lock:
            self.requested, self.requested_by = True, reason

    def cold_ready(self) -> bool:
        """There is enough data for a refit now: while :attr:`cold`, that makes one due as
        soon as the minimum gap allows (a first version need not wait for the interval).
        True if this newly made one due."""
        with self.lock:
            if not self.cold or self.requested:
                return False
            self.requested, self.requested_by = True, "cold"
            return True

    def set_cold(self, cold: bool) -> None:
        """Whether a slot of the task still has no model (the worker says so after each
        round). Once none lacks one, a pending cold request is dropped: made while the
        first round ran, it would only start another at once."""
        with self.lock:
            self.cold = cold
            if not cold and self.requested and self.requested_by == "cold":
                self.requested, self.requested_by = False, ""

    def reason(self) -> str:
        """What makes a refit due now: ``drift`` or ``cold`` (a request), ``events`` (the
        count), else ``schedule`` (the interval, or a refit started by hand)."""
        if self.requested:
            return self.requested_by or "drift"
        if self.every_events and self.since_events >= self.every_events:
            return "events"
        return "schedule"

    def earliest(self) -> float:
        """No refit starts before the last one's end plus its duration."""
        return self.last_end + self.last_duration

    def next_due(self, now: float) -> float | None:
        """When the next refit is due (``now`` or earlier: now), None if nothing is asking."""
        wanted = []
        if self.every_s:
            wanted.append(self.last_start + self.every_s)
        if self.every_events and self.since_events >= self.every_events:
            wanted.append(now)
        if self.requested:
            wanted.append(now)
        if not wanted:
            return None
        return max(min(wanted), self.earliest())

    def skipped(self, now: float) -> None:
        """Due, but not enough data yet: wait for the next interval or count."""
        with self.lock:
            self.last_start, self.since_events, self.requested = now, 0, False
            self.requested_by = ""

    def started(self, now: float | None = None) -> None:
        with self.lock:
            self.last_start = time.monotonic() if now is None else now
            self.since_events, self.requested = 0, False
            self.requested_by = ""
            self.rounds += 1

    def finished(self, now: float | None = None) -> None:
        self.last_end = time.monotonic() if now is None else now
        self.last_duration = max(0.0, self.last_end - self.last_start)
