"""Forecasting tasks of the serving loop, peers behind one small protocol.

A :class:`ForecastTask` turns each micro-batch's valid events into forecast messages and
keeps the state that needs (windows, bins, pending forecasts, online scores and
calibration). :class:`~stream.service.ForecastService` runs its tasks in the order they
were added, their messages delivered with the batch, and rebuilds them on every partition
assignment. The tasks: :mod:`stream.tasks.next_request` (the next request of each stream)
and :mod:`stream.tasks.load` (binned load over several horizons); code they share is in
:mod:`stream.tasks.common`.
"""

from __future__ import annotations

from typing import Protocol

from predictor.events import RequestEvent
from stream.loop import Message
from stream.validation import Valid


class ForecastTask(Protocol):
    """What the serving loop needs of a forecasting task."""

    def warm(self, events: list[RequestEvent]) -> None:
        """Feed past events (in time order) into the state without publishing anything."""
        ...

    def on_assign(self, events: list[RequestEvent]) -> None:
        """The partitions owned changed: rebuild the state from ``events``, the valid recent
        history of the partitions now owned (oldest first; empty when there is none)."""
        ...

    def process(self, valid: list[Valid]) -> list[Message]:
        """The forecasts of a batch's valid events (in record order); must not block."""
        ...

    def export_metrics(self) -> None:
        """Push rolling scores to the gauges (called about once a second)."""
        ...
