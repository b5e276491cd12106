"""Hostile input in the serving loop: a message the decoder cannot hold and an event stamped
far ahead are dead letters, the loop and the stream go on, and a warm-up from history
(windows and load bins) does not take them back in."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from predictor.errors import InvalidEvent
from predictor.events import INVALID_REASONS, RequestEvent
from stream.admission import TimestampGate
from stream.metrics import Metrics
from stream.service import ForecastService
from stream.transport import MemoryBroker, Record
from tests.stream.test_load_stream import next_request_service, with_load

SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"
DAY = 86_400.0
NOW = time.time()


def _raw(ts: float, model: str | None = None) -> bytes:
    return json.dumps(RequestEvent(ts, 10, 5, model).to_dict()).encode()


def _fill(broker: MemoryBroker, values: list[bytes]) -> list[Record]:
    """Send ``values`` to topic ``in`` (one partition); the records as the broker holds them."""
    broker.create_topic("in", 1)
    sink = broker.sink()
    for v in values:
        sink.send("in", b"s", v)
    return broker.records("in")


def _run(service: ForecastService, n: int) -> None:
    service.run(threading.Event(), max_events=n)


def _forecast_times(broker: MemoryBroker, model: str = "lstm") -> list[float]:
    values = [json.loads(r.value) for r in broker.records("out")]
    return [
        f["event_timestamp"] for f in values if f["kind"] == "next_request" and f["model"] == model
    ]


def _letters(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in broker.records("in.dlq")]


def _gate(max_future_s: float = DAY, max_lateness_s: float = 3600.0) -> TimestampGate:
    return TimestampGate(max_lateness_s, max_future_s)


def _reason(gate: TimestampGate, stream: str, ts: float, latest: float | None, raw: bytes) -> str:
    try:
        gate.check(stream, ts, latest, raw)
    except InvalidEvent as exc:
        return exc.reason
    return "ok"


# -- the gate --------------------------------------------------------------------------------
def test_an_event_ahead_of_the_clock_is_rejected_whatever_the_stream() -> None:
    gate = _gate()
    for latest in (None, 100.0, NOW - 60):
        assert _reason(gate, "s", 9e11, latest, b"x") == "future_timestamp"
        assert _reason(gate, "s", NOW + 2 * 3600, latest, b"x") == "future_timestamp"
    assert _reason(gate, "s", NOW + 60, NOW - 60, b"x") == "ok"  # clock skew is not the future


def test_a_trace_time_jump_is_rejected_unless_the_next_event_confirms_it() -> None:
    gate = _gate()
    assert _reason(gate, "s", 100.0, None, b"a") == "ok"
    assert _reason(gate, "s", 1e8, 100.0, b"poison") == "future_timestamp"
    assert _reason(gate, "s", 1e8, 100.0, b"poison") == "future_timestamp"  # the same again
    assert _reason(gate, "s", 101.0, 100.0, b"b") == "ok"  # the stream goes on
    assert _reason(gate, "s", 1e8 + 1, 101.0, b"c") == "future_timestamp"  # 101 came between
    # a real jump (a gap longer than max_future_s): its second event takes it
    assert _reason(gate, "s", 3 * DAY, 101.0, b"d") == "future_timestamp"
    assert _reason(gate, "s", 3 * DAY + 5, 101.0, b"e") == "ok"
    assert gate.newest_trace == 3 * DAY + 5
    assert _reason(gate, "s", 3 * DAY + 9, 3 * DAY + 5, b"f") == "ok"


def test_a_stream_idle_while_others_run_is_not_ahead_of_itself() -> None:
    gate = _gate(max_future_s=3600.0)
    gate.check("busy", 0.0, None, b"a")
    gate.check("idle", 0.0, None, b"b")
    for t in range(1, 11):
        gate.check("busy", t * 1000.0, (t - 1) * 1000.0, b"c")
    assert _reason(gate, "idle", 10_000.0, 0.0, b"d") == "ok"  # 10,000 s after its last
    assert _reason(gate, "new", 10_500.0, None, b"e") == "ok"  # a new stream, in step
    assert _reason(gate, "new2", 1e7, None, b"f") == "future_timestamp"  # or not


def test_an_epoch_stream_takes_events_after_any_silence_the_clock_allows() -> None:
    gate = _gate(max_future_s=3600.0)
    week_ago = NOW - 7 * DAY
    gate.check("s", week_ago, None, b"a")
    assert _reason(gate, "s", NOW, week_ago, b"b") == "ok"
    # a trace-time stream that switches to epoch time is a jump: confirmed by its next event
    gate.check("t", 50.0, None, b"c")
    assert _reason(gate, "t", NOW, 50.0, b"d") == "future_timestamp"
    assert _reason(gate, "t", NOW + 1, 50.0, b"e") == "ok"


def test_too_old_is_still_too_old() -> None:
    assert _reason(_gate(), "s", 0.0, 5000.0, b"x") == "too_old"


# -- the serving loop --------------------------------------------------------------------------
def test_a_poison_pill_is_a_dead_letter_and_the_loop_goes_on() -> None:
    broker = MemoryBroker()
    values = [_raw(float(t)) for t in range(10)]
    values += [b"[" * 1000, b'{"timestamp": ' * 50_000]
    values += [_raw(float(t)) for t in range(10, 60)]
    _fill(broker, values)
    service = next_request_service(broker, Metrics(CollectorRegistry()))
    _run(service, len(values))
    assert [d["error"] for d in _letters(broker)] == ["undecodable", "undecodable"]
    assert [d["source"]["offset"] for d in _letters(broker)] == [10, 11]
    assert _forecast_times(broker) == [float(t) for t in range(60)]
    assert broker._committed[("g", "in")] == {0: len(values)}


def test_any_exception_of_one_event_makes_it_a_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stream.validation

    real = stream.validation.decode_event

    def flaky(raw: bytes) -> RequestEvent:
        if raw == b"boom":
            raise KeyError("a bug")
        return real(raw)

    monkeypatch.setattr(stream.validation, "decode_event", flaky)
    broker = MemoryBroker()
    values = [_raw(1.0), b"boom", _raw(2.0)]
    _fill(broker, values)
    service = next_request_service(broker, Metrics(CollectorRegistry()))
    _run(service, len(values))
    [letter] = _letters(broker)
    assert letter["error"] == "undecodable" and "KeyError" in letter["detail"]
    assert _forecast_times(broker) == [1.0, 2.0]


def test_a_future_event_is_rejected_and_its_stream_still_forecast_also_after_a_restart() -> None:
    broker = MemoryBroker()
    values = [_raw(float(t)) for t in range(20)] + [_raw(9e11)]
    values += [_raw(float(t)) for t in range(20, 40)]
    records = _fill(broker, values)
    service = next_request_service(broker, Metrics(CollectorRegistry()))
    _run(service, len(values))
    assert [d["error"] for d in _letters(broker)] == ["future_timestamp"]
    assert _forecast_times(broker) == [float(t) for t in range(40)]

    # a restart: windows rebuilt from the partition's history, which holds the future event
    def history(partitions: list[int]) -> list[Record]:
        return list(records)

    metrics = Metrics(CollectorRegistry())
    restarted, load = with_load(broker, metrics, 10.0, history)
    # the same group: resumes after the commits
    restarted.on_assign([0])
    assert restarted.windows.last_timestamp("all") == 39.0
    assert len(load.bins.history("all")) == 3  # bins 0..2 closed, not 9e10 empty ones
    sink = broker.sink()
    for t in range(40, 50):
        sink.send("in", b"s", _raw(float(t)))
    before = len(broker.records("out"))
    _run(restarted, 10)
    assert len(_letters(broker)) == 1
    new = [json.loads(r.value) for r in broker.records("out")[before:]]
    assert sorted({f["event_timestamp"] for f in new if f["kind"] == "next_request"}) == [
        float(t) for t in range(40, 50)
    ]
    assert any(f["kind"] == "load" for f in new)  # bin 3 closed at 40 s: a load forecast


def test_a_trace_time_jump_in_history_is_not_the_newest_event_either() -> None:
    broker = MemoryBroker()
    records = _fill(broker, [_raw(float(t)) for t in range(30)] + [_raw(5e8), b"[" * 1000])
    service = next_request_service(broker, Metrics(CollectorRegistry()), lambda _: records)
    service.on_assign([0])
    assert service.windows.last_timestamp("all") == 29.0
    assert service.gate.newest_trace == 29.0


def test_the_dead_letter_schema_names_every_reason() -> None:
    schema = json.loads((SCHEMAS / "dead_letter.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["error"]["enum"] == list(INVALID_REASONS)
    assert {"undecodable", "future_timestamp"} <= set(INVALID_REASONS)


@pytest.mark.parametrize("argv", [["--max-future", "0"], ["--max-future", "nan"]])
def test_a_max_future_that_is_not_positive_is_a_one_line_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reqcast serve: error:") and "--max-future must be positive" in err
    assert "\n" not in err
