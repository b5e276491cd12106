"""Request events: the one input type of reqcast, validated once at the edge.

>>> ev = parse_event({"timestamp": 5, "request_tokens": 472, "response_tokens": 18})
>>> ev.timestamp_s, ev.request_tokens, ev.response_tokens, ev.model
(5.0, 472, 18, None)
>>> parse_event({"timestamp": 5, "request_tokens": -1, "response_tokens": 0})
Traceback (most recent call last):
...
predictor.errors.InvalidEvent: negative_tokens: request_tokens=-1
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from predictor.errors import InvalidEvent

#: Largest token count accepted for one request or response. Anything above is
#: not a plausible LLM request (the largest context windows are ~2M tokens).
MAX_TOKENS = 10_000_000

#: Timestamps are seconds; anything at or above this is assumed to be milliseconds
#: or worse (year 33658 in seconds) and is rejected as absurd.
MAX_TIMESTAMP_S = 1e12

#: Reasons an event can be rejected with (the label set of the invalid-event metric).
INVALID_REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "not_finite",
    "negative_tokens",
    "absurd_tokens",
    "absurd_timestamp",
    "too_old",
    "future_timestamp",
    "undecodable",
)

#: Longest stream key used as it is. A longer ``model`` value (or one that is not valid
#: UTF-8) becomes a prefix, ``~`` and a hash: distinct keys stay distinct while a
#: Prometheus label, Kafka key or forecast field made from it stays small.
MAX_STREAM_KEY_CHARS = 128


def bounded_key(name: str, limit: int = MAX_STREAM_KEY_CHARS) -> str:
    """``name`` if it is at most ``limit`` characters of valid UTF-8; else its first
    ``limit - 17`` characters (lone surrogates as ``?``), ``~`` and 16 hex digits of its
    SHA-256.

    >>> bounded_key("gpt-4o")
    'gpt-4o'
    >>> key = bounded_key("m" * 1000); len(key), key[-17]
    (128, '~')
    >>> bounded_key("m" * 1000) != bounded_key("m" * 999)
    True
    """
    if len(name) <= limit and name.isascii():
        return name
    text = name.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate becomes '?'
    if len(name) <= limit and text == name:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: limit - 17]}~{digest}"


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One LLM request: when it arrived and how many tokens went in and out."""

    timestamp_s: float
    request_tokens: int
    response_tokens: int
    model: str | None = None
    log_type: str | None = None
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (docs/design.md, "Messages")."""
        return {
            "timestamp": self.timestamp_s,
            "request_tokens": self.request_tokens,
            "response_tokens": self.response_tokens,
            "model": self.model,
            "log_type": self.log_type,
            "session_id": self.session_id,
        }

    def stream_key(self, by: str) -> str:
        """The key of the stream this event belongs to (``by`` is ``model`` or ``none``),
        at most :data:`MAX_STREAM_KEY_CHARS` characters (see :func:`bounded_key`)."""
        if by == "model" and self.model:
            return bounded_key(self.model)
        return "all"


def _number(obj: Mapping[str, Any], name: str) -> float:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("wrong_type", f"{name} is {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float
        raise InvalidEvent("not_finite", f"{name} is too large for a number") from None
    if not math.isfinite(value):
        raise InvalidEvent("not_finite", name)
    return value


def _tokens(obj: Mapping[str, Any], name: str) -> int:
    value = _number(obj, name)
    if value < 0:
        raise InvalidEvent("negative_tokens", f"{name}={value:g}")
    if value > MAX_TOKENS or value != int(value):
        raise InvalidEvent("absurd_tokens", f"{name}={value:g}")
    return int(value)


def _optional_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise InvalidEvent("wrong_type", f"{name} is {type(value).__name__}")
    return str(value)


def parse_event(obj: Any) -> RequestEvent:
    """Validate a decoded JSON value and build the event, or raise :class:`InvalidEvent`."""
    if type(obj) is dict:
        # the shape nearly every event has (a JSON object, integer token counts, string or
        # null labels), checked in one go; anything else takes the field-by-field path
        # below, which also names what is wrong
        ts, req, resp = obj.get("timestamp"), obj.get("request_tokens"), obj.get("response_tokens")
        model, log_type, session = obj.get("model"), obj.get("log_type"), obj.get("session_id")
        if (
            (type(ts) is float or type(ts) is int)
            and 0 <= ts < MAX_TIMESTAMP_S  # false for NaN
            and type(req) is int
            and type(resp) is int
            and 0 <= req <= MAX_TOKENS
            and 0 <= resp <= MAX_TOKENS
            and (model is None or type(model) is str)
            and (log_type is None or type(log_type) is str)
            and (session is None or type(session) is str)
        ):
            return RequestEvent(float(ts), req, resp, model, log_type, session)
    return _parse_checked(obj)


def _parse_checked(obj: Any) -> RequestEvent:
    if not isinstance(obj, Mapping):
        raise InvalidEvent("not_an_object", type(obj).__name__)
    ts = _number(obj, "timestamp")
    if ts < 0 or ts >= MAX_TIMESTAMP_S:
        raise InvalidEvent("absurd_timestamp", f"timestamp={ts:g}")
    return RequestEvent(
        timestamp_s=ts,
        request_tokens=_tokens(obj, "request_tokens"),
        response_tokens=_tokens(obj, "response_tokens"),
        model=_optional_str(obj, "model"),
        log_type=_optional_str(obj, "log_type"),
        session_id=_optional_str(obj, "session_id"),
    )


def decode_event(raw: bytes | str) -> RequestEvent:
    """Decode one wire message (JSON bytes) into an event, or raise :class:`InvalidEvent`.

    Nothing else escapes, whatever the bytes: JSON the parser cannot hold (nested too deeply
    for its recursion, say) and any other failure are ``undecodable``.

    >>> decode_event(b"[" * 100_000)
    Traceback (most recent call last):
    ...
    predictor.errors.InvalidEvent: undecodable: nested too deeply for the JSON parser
    """
    try:
        obj = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidEvent("invalid_json", str(exc)[:120]) from exc
    except RecursionError:
        raise InvalidEvent("undecodable", "nested too deeply for the JSON parser") from None
    except Exception as exc:  # not bytes or str, say: the message is unusable, not the loop
        raise InvalidEvent("undecodable", type(exc).__name__) from exc
    try:
        return parse_event(obj)
    except InvalidEvent:
        raise
    except Exception as exc:  # a value no check foresaw
        raise InvalidEvent("undecodable", f"{type(exc).__name__}: {str(exc)[:100]}") from exc
