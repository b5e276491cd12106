"""When a serving model has drifted: its online error well above its held-out error.

A model's reference error is its MAE per quantity on data it never trained on, in real
units: the larger of the refit guard's on its held-out slice when a refit made it
(``meta["guard"]["challenger_mae"]``) and its training validation's
(``meta["validation"]["mae"]``), each if it rests on enough outcomes; see
:func:`reference_mae`. :class:`DriftPolicy` keeps the absolute errors of the last
``min_count`` matured forecasts of each model and quantity, made by the version serving
now, and reports drift when, over a full window, the mean exceeds ``factor`` times the
reference on any quantity. It then stays quiet until :meth:`~DriftPolicy.rearm` (the refit
it asked for has run), after which errors are counted afresh.

>>> import numpy as np
>>> p = DriftPolicy(("gap_s",), factor=1.5, min_count=3)
>>> p.observe("lstm", 1, (2.0,), np.array([[2.0], [2.5]]))
>>> p.check() is None                     # two outcomes: not enough yet
True
>>> p.observe("lstm", 1, (2.0,), np.array([[4.0]]))
>>> p.check() is None                     # mean 2.83 <= 1.5 x 2.0
True
>>> p.observe("lstm", 1, (2.0,), np.array([[5.0]]))
>>> p.check().describe()                  # mean of the last three: 3.83 > 3.0
'lstm v1 gap_s: online MAE 3.833 over 3 forecasts > 1.5 x held-out MAE 2'
>>> p.observe("lstm", 1, (2.0,), np.array([[9.0]])); p.check() is None   # until re-armed
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.ring import Ring

#: online error this many times the held-out error is drift (0: never)
DEFAULT_FACTOR = 1.5
#: matured next-request forecasts (events) a model's window needs before it can drift
MIN_EVENTS = 200
#: matured one-bin-ahead load forecasts (bins) a model's window needs before it can drift
MIN_BINS = 30


#: a held-out MAE over fewer outcomes than this is no reference (a first version's slice
#: can be a handful of bins, and a lucky low error would make noise look like drift)
MIN_REFERENCE_ROWS = 10


def _estimate(values: Any, rows: Any, channels: int) -> tuple[float, ...] | None:
    """``values`` as ``channels`` finite non-negative floats, if ``rows`` (None: unknown)
    is enough outcomes."""
    if not isinstance(values, (list, tuple)) or len(values) != channels:
        return None
    if rows is not None and (not isinstance(rows, (int, float)) or rows < MIN_REFERENCE_ROWS):
        return None
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) and v >= 0 for v in out) else None


def reference_mae(meta: Mapping[str, Any], channels: int) -> tuple[float, ...] | None:
    """A model's held-out MAE per quantity from its artifact metadata: per quantity the
    larger of the refit guard's (``guard.challenger_mae`` over ``guard.holdout_rows``
    outcomes) and training validation's (``validation.mae`` over ``training.val_windows``),
    each only if it rests on at least :data:`MIN_REFERENCE_ROWS` outcomes; None if neither
    does (such a version is not checked for drift)."""

    def section(name: str) -> Mapping[str, Any]:
        part = meta.get(name)
        return part if isinstance(part, Mapping) else {}

    guard, validation, training = section("guard"), section("validation"), section("training")
    found = [
        e
        for e in (
            _estimate(guard.get("challenger_mae"), guard.get("holdout_rows", 0), channels),
            _estimate(validation.get("mae"), training.get("val_windows"), channels),
        )
        if e is not None
    ]
    if not found:
        return None
    return tuple(float(v) for v in np.max(np.array(found), axis=0))


@dataclass(frozen=True)
class Drift:
    """One model's online error above ``factor`` times its reference on ``quantity``."""

    model: str
    version: int
    quantity: str
    online_mae: float
    reference_mae: float
    factor: float
    count: int

    def describe(self) -> str:
        return (
            f"{self.model} v{self.version} {self.quantity}: online MAE {self.online_mae:.4g} "
            f"over {self.count} forecasts > {self.factor:g} x held-out MAE "
            f"{self.reference_mae:.4g}"
        )


@dataclass
class _Tracked:
    version: int
    reference: tuple[float, ...]
    errors: list[Ring]


class DriftPolicy:
    """One task's drift check over its serving models (``quantities``: the columns of the
    errors it is given, in the order of the reference MAE)."""

    def __init__(
        self,
        quantities: Sequence[str],
        factor: float = DEFAULT_FACTOR,
        min_count: int = MIN_EVENTS,
    ) -> None:
        if not factor >= 0 or min_count < 1:
            raise ValueError(
                f"drift needs factor >= 0 and min_count >= 1, got {factor}, {min_count}"
            )
        self.quantities = tuple(quantities)
        self.factor, self.min_count = float(factor), int(min_count)
        self.armed = True
        self._models: dict[str, _Tracked] = {}
        # set from another thread (the refit worker's); applied by the one that observes
        self._rearm = False

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    def rearm(self) -> None:
        """The refit asked for has run (or another did): check again, on errors counted
        from now. Safe to call from any thread."""
        self._rearm = True

    def _apply_rearm(self) -> None:
        if self._rearm:
            self._rearm = False
            self.armed = True
            self._models.clear()

    def observe(
        self,
        model: str,
        version: int,
        reference: Sequence[float] | None,
        errors: np.ndarray,
    ) -> None:
        """Absolute errors ``[n, C]`` of ``model``'s matured forecasts (made by ``version``,
        whose held-out MAE is ``reference``); a new version starts its window afresh. A
        model without a reference is not checked."""
        if not self.enabled:
            return
        self._apply_rearm()
        if reference is None or len(reference) != len(self.quantities):
            self._models.pop(model, None)
            return
        tracked = self._models.get(model)
        if tracked is None or tracked.version != version:
            rings = [Ring(self.min_count) for _ in self.quantities]
            tracked = self._models[model] = _Tracked(version, tuple(reference), rings)
        errors = np.asarray(errors, dtype=np.float64).reshape(-1, len(self.quantities))
        for c, ring in enumerate(tracked.errors):
            col = errors[:, c]
            ring.extend(col[np.isfinite(col)])

    def check(self) -> Drift | None:
        """The first model and quantity that drifted (then nothing until :meth:`rearm`),
        else None."""
        if not self.enabled:
            return None
        self._apply_rearm()
        if not self.armed:
            return None
        for model, tracked in self._models.items():
            for c, ring in enumerate(tracked.errors):
                if len(ring) < self.min_count:
                    continue
                ref, online = tracked.reference[c], ring.mean()
                if ref > 0 and online > self.factor * ref:
                    self.armed = False
                    return Drift(
                        model,
                        tracked.version,
                        self.quantities[c],
                        online,
                        ref,
                        self.factor,
                        len(ring),
                    )
        return None
