"""A forecasting task's drift check wired to the refit worker: the serving side of
:mod:`predictor.drift`.

The task hands :meth:`DriftWatch.observe` the absolute errors of its networks' matured
forecasts (next-request: every quantity of each event; load: the one-bin-ahead forecast of
each closed bin); about once a second (the task's ``export_metrics``) :meth:`DriftWatch.check`
asks the policy, and on drift logs one line (a warning the first time for a model
version, then at INFO: a refit that waits for data re-arms the check) and asks the refit worker for a refit of the
task (``request(task)``), which its schedule starts as soon as the minimum gap allows. The
refit worker calls :meth:`DriftWatch.rearm` after each round of the task it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from predictor.drift import Drift, DriftPolicy, reference_mae
from predictor.models.base import Forecaster
from predictor.slot import ModelSlot

log = logging.getLogger(__name__)


class DriftWatch:
    """One task's drift check over its model ``slots``: ``request(task)`` on drift."""

    def __init__(
        self,
        task: str,
        policy: DriftPolicy,
        slots: dict[str, ModelSlot[Forecaster]],
        request: Callable[[str], Any],
    ) -> None:
        self.task, self.policy, self.slots, self.request = task, policy, slots, request
        #: every drift reported, oldest first
        self.detected: list[Drift] = []
        self._refs: dict[tuple[str, int], tuple[float, ...] | None] = {}
        #: the model versions whose drift was logged at WARNING (later ones go to INFO)
        self._warned: set[tuple[str, int]] = set()

    def _reference(self, model: str, version: int | None) -> tuple[int, tuple[float, ...] | None]:
        """The version meant (``None``: the one serving) and its held-out MAE, if known."""
        slot = self.slots.get(model)
        cur = slot.current() if slot is not None else None
        if version is None:
            if cur is None:
                return 0, None
            version = cur.version
        key = (model, version)
        if key not in self._refs:
            if cur is None or cur.version != version:
                return version, None  # a version no longer (or not yet) serving
            self._refs[key] = reference_mae(cur.meta, len(self.policy.quantities))
        return version, self._refs[key]

    def observe(self, model: str, version: int | None, errors: np.ndarray) -> None:
        """Absolute errors ``[n, C]`` of ``model``'s matured forecasts, made by ``version``
        (None: the version serving)."""
        if not self.policy.enabled or model not in self.slots:
            return
        version, ref = self._reference(model, version)
        self.policy.observe(model, version, ref, errors)

    def check(self) -> Drift | None:
        """Ask the policy; on drift log it and request a refit of the task."""
        drift = self.policy.check()
        if drift is None:
            return None
        self.detected.append(drift)
        key = (drift.model, drift.version)
        level = logging.INFO if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(
            level, "drift: %s %s; refit of %s requested", self.task, drift.describe(), self.task
        )
        self.request(self.task)
        return drift

    def rearm(self, task: str) -> None:
        """A refit round of ``task`` ended (the refit worker's ``after_round``)."""
        if task == self.task:
            self.policy.rearm()
