"""Forecast messages: what reqcast publishes, as frozen dataclasses with explicit units.

``confidence`` is the fraction of this model's recent outcomes that fell inside
its intervals (held-out validation coverage after training, replaced by rolling
online coverage once the service has scored forecasts). A user can check it:
over many forecasts, about ``confidence`` of actual values land inside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: JSON Schema of each message lives in ``stream/schemas/``.
NEXT_REQUEST = "next_request"
LOAD = "load"


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
        """The wire form (``stream/schemas/forecast.schema.json``)."""
        ts = self.event_timestamp_s
        return {
            "kind": NEXT_REQUEST,
            "stream": self.stream,
            "model": self.model,
            "model_version": self.model_version,
            "source": {"partition": self.source_partition, "offset": self.source_offset},
            "event_timestamp": ts,
            "timestamp": ts + self.gap_s,
            "gap_s": self.gap_s,
            "request_tokens": self.request_tokens,
            "response_tokens": self.response_tokens,
            "interval": {
                "timestamp": [ts + self.gap_interval_s[0], ts + self.gap_interval_s[1]],
                "gap_s": list(self.gap_interval_s),
                "request_tokens": list(self.request_tokens_interval),
                "response_tokens": list(self.response_tokens_interval),
            },
            "nominal_coverage": 0.8,
            "confidence": self.confidence,
            "warm": self.warm,
            "produced_at": self.produced_at_s or time.time(),
        }
