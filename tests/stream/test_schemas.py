"""Every message reqcast writes validates against its JSON Schema in stream/schemas/."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from predictor.events import RequestEvent
from predictor.features import Scaler
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
