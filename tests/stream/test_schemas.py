"""Every message reqcast writes validates against its JSON Schema in stream/schemas/."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from predictor.events import RequestEvent
from predictor.features import Scaler
from predictor.forecast import NextRequestEncoder, NextRequestForecast
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.service import ForecastService, ServeConfig
from stream.transport import MemoryBroker

SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"


def schema(name: str) -> dict:
    s = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def tiny(arch: str) -> NeuralForecaster:
    spec = NeuralSpec(arch, seq_len=8, params={"hidden_size": 4, "num_layers": 1, "kernel_size": 3})
    return NeuralForecaster(
        spec, build_module(spec), Scaler((0.0, 5.0, 5.0), (1.0, 1.0, 1.0)), confidence=0.8
    )


@pytest.fixture
def served() -> tuple[MemoryBroker, ForecastService]:
    from prometheus_client import CollectorRegistry

    broker = MemoryBroker()
    broker.create_topic("in", 2)
    sink = broker.sink()
    events = [
        RequestEvent(float(i), 10 + i, i % 3, "ChatGPT" if i % 4 else "GPT-4") for i in range(30)
    ]
    for ev in events:
        sink.send("in", (ev.model or "").encode(), json.dumps(ev.to_dict()).encode())
    for bad in [
        b"{not json",
        b'{"timestamp": 1, "request_tokens": -5, "response_tokens": 1}',
        b"[1,2]",
    ]:
        sink.send("in", b"x", bad)
    slots = {}
    for arch in ("lstm", "dlinear"):
        slot: ModelSlot = ModelSlot(arch)
        slot.offer(tiny(arch), 1)
        slots[arch] = slot
    service = ForecastService(
        ServeConfig("in", "out"),
        broker.source("in", "g"),
        broker.sink(),
        slots,
        Metrics(CollectorRegistry()),
    )
    stop = threading.Event()
    service.run(stop, max_events=33)
    return broker, service


def test_forecasts_match_schema(served: tuple[MemoryBroker, ForecastService]) -> None:
    broker, _ = served
    records = broker.records("out")
    assert len(records) == 90  # 30 valid events x (lstm, dlinear, best)
    assert {json.loads(r.value)["model"] for r in records} == {"lstm", "dlinear", "best"}
    validator = jsonschema.Draft202012Validator(schema("forecast"))
    for rec in records:
        validator.validate(json.loads(rec.value))


def test_dead_letters_match_schema(served: tuple[MemoryBroker, ForecastService]) -> None:
    broker, _ = served
    letters = [json.loads(r.value) for r in broker.records("in.dlq")]
    assert sorted(d["error"] for d in letters) == [
        "invalid_json",
        "negative_tokens",
        "not_an_object",
    ]
    validator = jsonschema.Draft202012Validator(schema("dead_letter"))
    for d in letters:
        validator.validate(d)


def test_event_schema_agrees_with_the_parser() -> None:
    validator = jsonschema.Draft202012Validator(schema("event"))
    validator.validate(RequestEvent(1.5, 3, 0, "GPT-4", "API log", None).to_dict())
    assert not validator.is_valid({"timestamp": 1, "request_tokens": -1, "response_tokens": 0})


def test_model_meta_matches_schema(tmp_path: Path) -> None:
    from predictor.artifacts import save_artifact

    fc = tiny("dlinear")
    fc.calibration = np.zeros((1, 3))
    info = save_artifact(fc, tmp_path, preset="cpu")
    jsonschema.Draft202012Validator(schema("model_meta")).validate(info.meta)


def test_fast_encoder_writes_what_to_dict_describes() -> None:
    """The serving loop's template encoder against the dataclass's wire form, on values
    across many magnitudes: same keys and types, values within the documented rounding."""
    validator = jsonschema.Draft202012Validator(schema("forecast"))
    rng = np.random.default_rng(3)
    for i in range(300):
        ts = float(rng.choice([0.0, 12.5, 1.7e9])) + float(rng.random())
        p = np.exp(rng.uniform(-12, 12, size=3))
        lo, hi = p * rng.uniform(0, 1, size=3), p * rng.uniform(1, 3, size=3)
        conf = None if i % 5 == 0 else float(rng.random())
        stream = ["ChatGPT", 'we"ird \\ name', "\u00e9t\u00e9"][i % 3]
        enc = NextRequestEncoder("dlinear", i, conf, produced_at_s=1.7e9 + i)
        got = json.loads(
            enc.encode(stream, ts, i % 4, 10 * i, p.tolist(), lo.tolist(), hi.tolist(), i % 2 == 0)
        )
        want = NextRequestForecast(
            stream,
            "dlinear",
            i,
            ts,
            p[0],
            (lo[0], hi[0]),
            p[1],
            (lo[1], hi[1]),
            p[2],
            (lo[2], hi[2]),
            conf,
            i % 2 == 0,
            i % 4,
            10 * i,
            1.7e9 + i,
        ).to_dict()
        validator.validate(got)
        assert got.keys() == want.keys() and got["interval"].keys() == want["interval"].keys()
        flat_got, flat_want = _flatten(got), _flatten(want)
        assert flat_got.keys() == flat_want.keys()
        for key, w in flat_want.items():
            g = flat_got[key]
            if isinstance(w, float) and not isinstance(w, bool):
                tol = 1e-6 if key in TIME_FIELDS else 1e-5 * abs(w)
                assert g == pytest.approx(w, abs=tol), key
            else:
                assert g == w, key


TIME_FIELDS = {
    "event_timestamp",
    "timestamp",
    "produced_at",
    "interval.timestamp.0",
    "interval.timestamp.1",
}


def _flatten(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        return {
            k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()
        }
    if isinstance(obj, list):
        return {
            k: v for j, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}{j}.").items()
        }
    return {prefix.rstrip("."): obj}


def test_non_finite_forecasts_still_get_a_message() -> None:
    """A model whose output is not finite (the template formats finite values only) still
    publishes one message per event, through ``to_dict``, with the same keys."""
    from prometheus_client import CollectorRegistry

    broker = MemoryBroker()
    broker.create_topic("in", 1)
    for i in range(5):
        ev = RequestEvent(float(i), 10 + i, 3, "ChatGPT")
        broker.sink().send("in", b"ChatGPT", json.dumps(ev.to_dict()).encode())
    broken = tiny("dlinear")
    with torch.no_grad():
        next(broken.module.parameters()).fill_(float("nan"))
    slot: ModelSlot = ModelSlot("dlinear")
    slot.offer(broken, 1)
    service = ForecastService(
        ServeConfig("in", "out"),
        broker.source("in", "g"),
        broker.sink(),
        {"dlinear": slot},
        Metrics(CollectorRegistry()),
    )
    service.run(threading.Event(), max_events=5)
    values = [r.value for r in broker.records("out")]
    # strict JSON (issue 13): the values that are not finite are null, never NaN
    assert len(values) == 5 and all(b"null" in v and b"NaN" not in v for v in values)
    fine = NextRequestEncoder("dlinear", 1, None, 0.0).encode(
        "ChatGPT", 0.0, 0, 0, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0), True
    )
    assert all(json.loads(v).keys() == json.loads(fine).keys() for v in values)
    numpy_bool = NextRequestEncoder("dlinear", 1, None, 0.0).encode(
        "ChatGPT",
        0.0,
        0,
        0,
        (1.0, 1.0, 1.0),
        (0.0, 0.0, 0.0),
        (2.0, 2.0, 2.0),
        np.bool_(True),  # type: ignore[arg-type]
    )
    assert numpy_bool == fine
    assert [json.loads(v)["source"]["offset"] for v in values] == list(range(5))
