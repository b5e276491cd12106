"""Event validation: the one-pass check of the common shape and the field-by-field path
must accept the same events and build the same values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from predictor.errors import InvalidEvent
from predictor.events import MAX_TIMESTAMP_S, MAX_TOKENS, RequestEvent, _parse_checked, decode_event

BASE: dict[str, Any] = {"timestamp": 1_700_000_000.25, "request_tokens": 472, "response_tokens": 18}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"model": "ChatGPT", "log_type": "Conversation log", "session_id": "s-1"},
        {"model": None, "log_type": None, "session_id": None},
        {"timestamp": 0},
        {"timestamp": 5},  # an integer timestamp becomes a float
        {"request_tokens": 0, "response_tokens": 0},  # a failed request is valid traffic
        {"request_tokens": MAX_TOKENS, "response_tokens": MAX_TOKENS},
        {"request_tokens": 472.0},  # integral floats are token counts too
        {"model": 7},  # labels that are not strings become strings
        {"session_id": 3.5},
        {"extra": [1, 2]},  # unknown fields are ignored
    ],
)
def test_valid_events_decode_to_the_checked_values(changes: dict[str, Any]) -> None:
    obj = {**BASE, **changes}
    ev = decode_event(json.dumps(obj).encode())
    assert ev == _parse_checked(obj)
    assert type(ev.timestamp_s) is float
    assert type(ev.request_tokens) is int and type(ev.response_tokens) is int
    assert ev.model is None or type(ev.model) is str


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"timestamp": 5, "request_tokens":', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"timestamp": 5, "request_tokens": 3}', "missing_field"),
        (b'{"timestamp": null, "request_tokens": 3, "response_tokens": 1}', "missing_field"),
        (b'{"timestamp": 5, "request_tokens": "3", "response_tokens": 1}', "wrong_type"),
        (b'{"timestamp": 5, "request_tokens": true, "response_tokens": 1}', "wrong_type"),
        (b'{"timestamp": "5", "request_tokens": 3, "response_tokens": 1}', "wrong_type"),
        (b'{"timestamp": 5, "request_tokens": 3, "response_tokens": 1, "model": {}}', "wrong_type"),
        (b'{"timestamp": 5, "request_tokens": 3, "response_tokens": 1, "model": []}', "wrong_type"),
        (b'{"timestamp": NaN, "request_tokens": 3, "response_tokens": 1}', "not_finite"),
        (b'{"timestamp": 5, "request_tokens": 3, "response_tokens": Infinity}', "not_finite"),
        (
            b'{"timestamp": 5, "request_tokens": 3, "response_tokens": 1' + b"9" * 400 + b"}",
            "not_finite",
        ),
        (
            b'{"timestamp": 1' + b"0" * 400 + b', "request_tokens": 3, "response_tokens": 1}',
            "not_finite",
        ),
        (b'{"timestamp": 5, "request_tokens": -1, "response_tokens": 1}', "negative_tokens"),
        (b'{"timestamp": 5, "request_tokens": 3.5, "response_tokens": 1}', "absurd_tokens"),
        (b'{"timestamp": 5, "request_tokens": 3, "response_tokens": 1e12}', "absurd_tokens"),
        (b'{"timestamp": -1, "request_tokens": 3, "response_tokens": 1}', "absurd_timestamp"),
        (b'{"timestamp": 1e13, "request_tokens": 3, "response_tokens": 1}', "absurd_timestamp"),
    ],
)
def test_invalid_events_name_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw)
    assert err.value.reason == reason


def test_the_bounds_are_inclusive_where_documented() -> None:
    over = {**BASE, "request_tokens": MAX_TOKENS + 1}
    with pytest.raises(InvalidEvent, match="absurd_tokens"):
        decode_event(json.dumps(over))
    late = {**BASE, "timestamp": MAX_TIMESTAMP_S}
    with pytest.raises(InvalidEvent, match="absurd_timestamp"):
        decode_event(json.dumps(late))
    last = {**BASE, "timestamp": math.nextafter(MAX_TIMESTAMP_S, 0)}
    assert decode_event(json.dumps(last)) == RequestEvent(last["timestamp"], 472, 18)
