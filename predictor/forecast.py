"""Forecast messages: what reqcast publishes, as frozen dataclasses with explicit units.

``confidence`` is the fraction of this model's recent outcomes that fell inside
its intervals (held-out validation coverage after training, replaced by rolling
online coverage once the service has scored forecasts). A user can check it:
over many forecasts, about ``confidence`` of actual values land inside.

JSON has no NaN or Infinity: a number that is not finite (a model whose output
overflows, say) is written as ``null``, so every message is strict JSON (the schemas
allow ``null`` for each forecast value).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from predictor.tasks import NEXT_REQUEST

#: JSON Schema of each message lives in ``stream/schemas/``.


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or ``None`` where it is missing or not finite (NaN, ±inf).

    >>> finite_or_none(2), finite_or_none(float("nan")), finite_or_none(float("-inf"))
    (2.0, None, None)
    """
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pair(values: tuple[float, float]) -> list[float | None]:
    return [finite_or_none(values[0]), finite_or_none(values[1])]


@dataclass(frozen=True, slots=True)
class NextRequestForecast:
    """When the next request of a stream arrives and how large it is, with 80 % intervals."""

    stream: str
    model: str
    model_version: int
    event_timestamp_s: float
    gap_s: float
    gap_interval_s: tuple[float, float]
    request_tokens: float
    request_tokens_interval: tuple[float, float]
    response_tokens: float
    response_tokens_interval: tuple[float, float]
    confidence: float | None
    warm: bool = True
    source_partition: int | None = None
    source_offset: int | None = None
    produced_at_s: float = 0.0

    @property
    def timestamp_s(self) -> float:
        """Predicted arrival time of the next request (seconds, same clock as the events)."""
        return self.event_timestamp_s + self.gap_s

    def to_dict(self) -> dict[str, Any]:
        """The wire form (``stream/schemas/forecast.schema.json``); numbers that are not
        finite are ``None`` (``null``)."""
        ts, gap = self.event_timestamp_s, self.gap_interval_s
        return {
            "kind": NEXT_REQUEST,
            "stream": self.stream,
            "model": self.model,
            "model_version": self.model_version,
            "source": {"partition": self.source_partition, "offset": self.source_offset},
            "event_timestamp": finite_or_none(ts),
            "timestamp": finite_or_none(ts + self.gap_s),
            "gap_s": finite_or_none(self.gap_s),
            "request_tokens": finite_or_none(self.request_tokens),
            "response_tokens": finite_or_none(self.response_tokens),
            "interval": {
                "timestamp": _pair((ts + gap[0], ts + gap[1])),
                "gap_s": _pair(gap),
                "request_tokens": _pair(self.request_tokens_interval),
                "response_tokens": _pair(self.response_tokens_interval),
            },
            "nominal_coverage": 0.8,
            "confidence": finite_or_none(self.confidence),
            "warm": self.warm,
            "produced_at": finite_or_none(self.produced_at_s or time.time()),
        }


#: the wire form of :meth:`NextRequestForecast.to_dict` in three parts, for the serving
#: loop: what all models share for one event (its source and time), the forecast values,
#: and what one model shares across a batch (confidence, production time). Times carry
#: microseconds, gaps and token counts six significant digits (far below any forecast's
#: error; ``repr`` of every float would cost more than the rest of the message)
_EVENT_PART = '"source": {"partition": %d, "offset": %d}, "event_timestamp": %.6f, '
_VALUES_PART = (
    '"timestamp": %.6f, "gap_s": %.6g, "request_tokens": %.6g, "response_tokens": %.6g, '
    '"interval": {"timestamp": [%.6f, %.6f], "gap_s": [%.6g, %.6g], '
    '"request_tokens": [%.6g, %.6g], "response_tokens": [%.6g, %.6g]}, '
)
_BATCH_PART = '"nominal_coverage": 0.8, "confidence": %s, "warm": %s, "produced_at": %s}'
#: what ``%`` makes of numbers that are not finite; no key of the parts above contains these
_NOT_FINITE = ("nan", "inf")


def _number(fmt: str, value: float) -> str:
    """``fmt % value``, or ``null`` where ``value`` is not finite."""
    return fmt % value if math.isfinite(value) else "null"


def _values_part(
    ts: float, point: Sequence[float], lower: Sequence[float], upper: Sequence[float]
) -> str:
    """:data:`_VALUES_PART` with ``null`` for each value that is not finite (the slow path)."""
    template = _VALUES_PART.replace("%.6f", "%s").replace("%.6g", "%s")
    return template % (
        _number("%.6f", ts + point[0]),
        _number("%.6g", point[0]),
        _number("%.6g", point[1]),
        _number("%.6g", point[2]),
        _number("%.6f", ts + lower[0]),
        _number("%.6f", ts + upper[0]),
        _number("%.6g", lower[0]),
        _number("%.6g", upper[0]),
        _number("%.6g", lower[1]),
        _number("%.6g", upper[1]),
        _number("%.6g", lower[2]),
        _number("%.6g", upper[2]),
    )


class NextRequestEncoder:
    """The JSON bytes of many next-request forecasts of one model and batch, fast.

    ``encode`` gives the message :meth:`NextRequestForecast.to_dict` describes, rounded
    as above, ``null`` for values that are not finite (found by one substring test of
    the formatted part, so finite values cost nothing more). The serving loop formats
    each event's part once (:meth:`event_part`) for all its models and calls
    :meth:`encode_part`.

    >>> import json, math
    >>> enc = NextRequestEncoder("lstm", 3, 0.81, produced_at_s=5.0)
    >>> raw = enc.encode("ChatGPT", 1.7e9, 0, 42, (1.5, 20.25, 7.0), (0.5, 1.0, 2.0),
    ...                  (3.0, 90.0, 9.0), True)
    >>> raw[:81]
    b'{"kind": "next_request", "stream": "ChatGPT", "model": "lstm", "model_version": 3'
    >>> f = NextRequestForecast("ChatGPT", "lstm", 3, 1.7e9, 1.5, (0.5, 3.0), 20.25,
    ...                         (1.0, 90.0), 7.0, (2.0, 9.0), 0.81, True, 0, 42, 5.0)
    >>> json.loads(raw) == f.to_dict()
    True
    """

    def __init__(
        self, model: str, version: int, confidence: float | None, produced_at_s: float
    ) -> None:
        self._model = f', "model": {json.dumps(model)}, "model_version": {int(version)}, '
        conf = json.dumps(finite_or_none(confidence))
        produced = _number("%.6f", produced_at_s)
        self._tails = (
            _BATCH_PART % (conf, "false", produced),
            _BATCH_PART % (conf, "true", produced),
        )
        self._heads: dict[str, str] = {}  # per stream: everything before the event's part

    @staticmethod
    def event_part(partition: int, offset: int, event_timestamp_s: float) -> str:
        """The part of a forecast message every model's forecast of one event shares."""
        if math.isfinite(event_timestamp_s):
            return _EVENT_PART % (partition, offset, event_timestamp_s)
        return _EVENT_PART.replace("%.6f", "null") % (partition, offset)

    def encode(
        self,
        stream: str,
        event_timestamp_s: float,
        partition: int,
        offset: int,
        point: Sequence[float],
        lower: Sequence[float],
        upper: Sequence[float],
        warm: bool,
    ) -> bytes:
        part = self.event_part(partition, offset, event_timestamp_s)
        return self.encode_part(stream, part, event_timestamp_s, point, lower, upper, warm)

    def encode_part(
        self,
        stream: str,
        event_part: str,
        event_timestamp_s: float,
        point: Sequence[float],
        lower: Sequence[float],
        upper: Sequence[float],
        warm: bool,
    ) -> bytes:
        """:meth:`encode` with the event's part already formatted by :meth:`event_part`."""
        head = self._heads.get(stream)
        if head is None:
            head = self._heads[stream] = (
                '{"kind": "' + NEXT_REQUEST + '", "stream": ' + json.dumps(stream) + self._model
            )
        ts = event_timestamp_s
        values = _VALUES_PART % (
            ts + point[0],
            point[0],
            point[1],
            point[2],
            ts + lower[0],
            ts + upper[0],
            lower[0],
            upper[0],
            lower[1],
            upper[1],
            lower[2],
            upper[2],
        )
        if _NOT_FINITE[0] in values or _NOT_FINITE[1] in values:
            values = _values_part(ts, point, lower, upper)
        return (head + event_part + values + self._tails[1 if warm else 0]).encode()
