"""Forecast messages are strict JSON: values that are not finite are null, never NaN or
Infinity (which ``json.dumps`` writes by default and strict parsers refuse)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from predictor.features import Scaler
from predictor.forecast import NextRequestEncoder, NextRequestForecast, finite_or_none
from predictor.models.neural import NeuralForecaster, NeuralSpec, build_module
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.service import ForecastService, ServeConfig
from stream.tasks.load import LoadConfig, LoadForecasting
from stream.transport import MemoryBroker

SCHEMA = Path(__file__).resolve().parents[2] / "stream" / "schemas" / "forecast.schema.json"
NOT_FINITE = (math.nan, math.inf, -math.inf)


def _strict(raw: bytes) -> Any:
    """``json.loads`` that refuses NaN, Infinity and -Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(raw, parse_constant=refuse)


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("bad", NOT_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", range(9))
def test_the_fast_encoder_writes_null_for_values_that_are_not_finite(
    bad: float, where: int
) -> None:
    values = [1.5, 20.0, 7.0, 0.5, 1.0, 2.0, 3.0, 90.0, 9.0]
    values[where] = bad
    enc = NextRequestEncoder("lstm", 3, bad if where == 0 else 0.8, produced_at_s=5.0)
    raw = enc.encode("s", 1.7e9, 0, 42, values[0:3], values[3:6], values[6:9], True)
    msg = _strict(raw)
    _validator().validate(msg)
    flat = [msg["gap_s"], msg["request_tokens"], msg["response_tokens"]]
    intervals = msg["interval"]
    lows = [intervals[k][0] for k in ("gap_s", "request_tokens", "response_tokens")]
    highs = [intervals[k][1] for k in ("gap_s", "request_tokens", "response_tokens")]
    assert [*flat, *lows, *highs][where] is None
    assert sum(v is None for v in [*flat, *lows, *highs]) == 1
    if where == 0:
        assert msg["timestamp"] is None and msg["confidence"] is None
    else:
        assert msg["timestamp"] == pytest.approx(1.7e9 + 1.5) and msg["confidence"] == 0.8


def test_a_timestamp_or_production_time_that_is_not_finite_is_null() -> None:
    part = NextRequestEncoder.event_part(0, 1, math.inf)
    enc = NextRequestEncoder("lstm", 3, None, produced_at_s=math.nan)
    raw = enc.encode_part("s", part, math.inf, (1.0,) * 3, (0.0,) * 3, (2.0,) * 3, False)
    msg = _strict(raw)
    assert msg["event_timestamp"] is None and msg["timestamp"] is None
    assert msg["produced_at"] is None and msg["interval"]["timestamp"] == [None, None]


def test_to_dict_writes_null_for_values_that_are_not_finite() -> None:
    f = NextRequestForecast(
        "s", "lstm", 1, 10.0, math.nan, (math.inf, 1.0), 2.0, (-math.inf, 3.0), 1.0,
        (0.0, 2.0), math.nan, True, 0, 1, 5.0,
    )  # fmt: skip
    msg = _strict(json.dumps(f.to_dict()).encode())
    _validator().validate(msg)
    assert msg["gap_s"] is None and msg["timestamp"] is None
    assert msg["interval"]["gap_s"] == [None, 1.0]
    assert msg["interval"]["request_tokens"] == [None, 3.0]
    assert msg["confidence"] is None and msg["request_tokens"] == 2.0


def test_finite_or_none() -> None:
    assert [finite_or_none(v) for v in (*NOT_FINITE, None, 3, 0.5)] == [
        None,
        None,
        None,
        None,
        3.0,
        0.5,
    ]


def _broken(arch: str, horizon: int) -> NeuralForecaster:
    """A model whose every output is NaN (its weights are)."""
    spec = NeuralSpec(
        arch,
        seq_len=8,
        horizon=horizon,
        params={"hidden_size": 4, "num_layers": 1, "kernel_size": 3},
    )
    fc = NeuralForecaster(
        spec, build_module(spec), Scaler((3.0,) * 3, (1.0, 1.0, 1.0)), confidence=0.8
    )
    with torch.no_grad():
        for p in fc.module.parameters():
            p.fill_(math.nan)
    return fc


def _slots(horizon: int) -> dict[str, ModelSlot]:
    out = {}
    for arch in ("lstm", "dlinear"):
        slot: ModelSlot = ModelSlot(arch)
        slot.offer(_broken(arch, horizon), 1)
        out[arch] = slot
    return out


def test_served_forecasts_of_a_broken_model_are_strict_json() -> None:
    """Next-request and load forecasts alike (the load messages wrote NaN, 20 of 20)."""
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    events = [RequestEvent(float(t), 100, 10) for t in range(60)]
    for ev in events:
        broker.sink().send("in", b"s", json.dumps(ev.to_dict()).encode())
    metrics = Metrics(CollectorRegistry())
    service = ForecastService(
        ServeConfig("in", "out", stream_key="none", batch_max=50),
        broker.source("in", "g"),
        broker.sink(),
        _slots(1),
        metrics,
    )
    load = LoadForecasting(LoadConfig("out", 10.0, (1, 3), "none"), _slots(3), metrics)
    service.add_task(load)
    service.run(threading.Event(), max_events=len(events))
    messages = [_strict(r.value) for r in broker.records("out")]
    kinds = {m["kind"] for m in messages}
    assert kinds == {"next_request", "load"}
    validator = _validator()
    for m in messages:
        validator.validate(m)
    loads = [m for m in messages if m["kind"] == "load"]
    broken = [m for m in loads if m["model"] != "ensemble"]
    assert broken and all(h["requests_per_s"] is None for m in broken for h in m["horizons"])
    # the ensemble leaves an expert that forecasts NaN out and publishes from the others
    ensemble = [m for m in loads if m["model"] == "ensemble"]
    assert ensemble and all(
        h["requests_per_s"] is not None for m in ensemble for h in m["horizons"]
    )
