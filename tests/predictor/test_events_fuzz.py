"""Seeded fuzzing of the event decoder: whatever bytes come in (random bytes, deep nesting,
huge numbers, odd unicode, huge strings, mutations of valid events), a valid
:class:`RequestEvent` or a typed :class:`InvalidEvent` with a known reason comes out, never
another exception. Every case is drawn from a seed, so a failure names a reproducible one."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest

from predictor.errors import InvalidEvent
from predictor.events import (
    INVALID_REASONS,
    MAX_TIMESTAMP_S,
    MAX_TOKENS,
    RequestEvent,
    decode_event,
)

CASES = 3000

VALID = [
    b'{"timestamp": 5, "request_tokens": 472, "response_tokens": 18}',
    b'{"timestamp": 1700000000.25, "request_tokens": 0, "response_tokens": 0, "model": "ChatGPT",'
    b' "log_type": "Conversation log", "session_id": "s-1"}',
    b'{"model": "GPT-4", "timestamp": 12.5, "request_tokens": 9.0, "response_tokens": 3,'
    b' "extra": [1, {"a": null}]}',
]

NUMBERS = [
    "0", "-0", "1e308", "1e309", "-1e309", "1e-400", "NaN", "Infinity", "-Infinity",
    "9" * 5000, "1" + "0" * 400, "1e12", "9e11", "0.1", "-1", "1.5", "true", "null", '"5"',
    "[]", "{}", "1E+2", "0x10", "01", ".5", "5.", "+1", "1_000",
]  # fmt: skip

ODD = [
    "\ud800", "\udfff", "\ufeff", "\u0000", "\u202e", "\U0001f600", "é", "\uffff", "\\",
    '"', "\n", "\x7f",
]  # fmt: skip


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 8, 64, 1024]))


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([10, 500, 1000, 5000, 100_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}"), (b'{"timestamp":[', b"]}")])
    body = opener * depth + rng.choice([b"1", b""]) + closer * rng.choice([0, depth])
    if rng.random() < 0.5:  # nested inside an otherwise valid event
        return b'{"timestamp": 5, "request_tokens": 1, "response_tokens": 1, "x": ' + body + b"}"
    return body


def _huge_number(rng: random.Random) -> bytes:
    field = rng.choice(["timestamp", "request_tokens", "response_tokens", "model", "session_id"])
    obj = {
        "timestamp": "5",
        "request_tokens": "1",
        "response_tokens": "2",
        field: rng.choice(NUMBERS),
    }
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in obj.items()) + "}").encode()


def _odd_unicode(rng: random.Random) -> bytes:
    text = "".join(rng.choice(ODD) for _ in range(rng.randint(1, 20)))
    obj = {"timestamp": 5, "request_tokens": 1, "response_tokens": 2}
    obj[rng.choice(["model", "log_type", "session_id", text])] = text
    raw = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    return raw.encode("utf-8", errors=rng.choice(["surrogatepass", "replace", "ignore"]))


def _huge_string(rng: random.Random) -> bytes:
    size = rng.choice([10_000, 300_000])
    value = rng.choice(["x", "é", "\\u00e9", "\\ud800"]) * size
    field = rng.choice(["model", "session_id", "timestamp", "nope"])
    return (
        '{"timestamp": 5, "request_tokens": 1, "response_tokens": 2, "' + field + '": "'
        + value + '"}'
    ).encode()  # fmt: skip


def _mutation(rng: random.Random) -> bytes:
    raw = bytearray(rng.choice(VALID))
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        i = rng.randrange(len(raw) + 1)
        if op == 0 and raw:  # flip a byte
            raw[min(i, len(raw) - 1)] = rng.randrange(256)
        elif op == 1:  # insert printable or structural bytes
            raw[i:i] = rng.choice([b"[", b"{", b'"', b",", b":", b"-", b"e9", b"\\u", b"\xff"])
        elif op == 2 and raw:  # delete a run
            del raw[i : i + rng.randint(1, 5)]
        else:  # duplicate a run
            raw[i:i] = raw[i : i + rng.randint(1, 20)]
    return bytes(raw)


GENERATORS: dict[str, Callable[[random.Random], bytes]] = {
    "random_bytes": _random_bytes,
    "deep_nesting": _deep,
    "huge_number": _huge_number,
    "odd_unicode": _odd_unicode,
    "huge_string": _huge_string,
    "mutation": _mutation,
}


def _check(raw: bytes) -> str:
    """Decode ``raw`` as bytes and as text; the outcome ('valid' or the reason)."""
    outcomes = []
    for value in (raw, raw.decode("utf-8", errors="surrogateescape")):
        try:
            ev = decode_event(value)
        except InvalidEvent as exc:
            assert exc.reason in INVALID_REASONS, exc.reason
            outcomes.append(exc.reason)
            continue
        assert isinstance(ev, RequestEvent)
        assert type(ev.timestamp_s) is float and 0 <= ev.timestamp_s < MAX_TIMESTAMP_S
        assert math.isfinite(ev.timestamp_s)
        for tokens in (ev.request_tokens, ev.response_tokens):
            assert type(tokens) is int and 0 <= tokens <= MAX_TOKENS
        for label in (ev.model, ev.log_type, ev.session_id):
            assert label is None or type(label) is str
        json.dumps(ev.to_dict())  # the wire form can be written again
        outcomes.append("valid")
    return outcomes[0]


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_any_bytes_give_an_event_or_an_invalid_event(kind: str) -> None:
    seen: set[str] = set()
    for case in range(CASES // len(GENERATORS)):
        seed = f"{kind}-{case}"
        raw = GENERATORS[kind](random.Random(seed))
        try:
            seen.add(_check(raw))
        except Exception as exc:  # name the case: random.Random(seed) draws it again
            raise AssertionError(f"case {seed!r} ({raw[:80]!r}...): {exc!r}") from exc
    assert len(seen) > 1 or kind == "random_bytes", seen  # the cases do reach the checks


def test_the_poison_pill_of_the_issue() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(b"[" * 1000)
    assert err.value.reason == "undecodable"
