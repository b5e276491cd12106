"""The serving loop's batching: what a model forecasts does not depend on the batch
layout or on which thread ran it."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from predictor.events import RequestEvent
from predictor.models.base import Prediction
from predictor.models.neural import NeuralForecaster
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.service import ForecastService, ServeConfig
from stream.transport import MemoryBroker
from tests.stream.test_schemas import tiny

EVENTS = [
    RequestEvent(i * 0.7 + (i % 5) * 0.1, 10 + (i * 37) % 900, (i * 11) % 70, ["a", "b"][i % 2])
    for i in range(120)
]


def _serve(models: dict[str, NeuralForecaster], batch_max: int) -> tuple[ForecastService, dict]:
    broker = MemoryBroker()
    broker.create_topic("in", 2)
    sink = broker.sink()
    for ev in EVENTS:
        sink.send("in", (ev.model or "").encode(), json.dumps(ev.to_dict()).encode())
    slots = {}
    for name, fc in models.items():
        slot: ModelSlot = ModelSlot(name)
        slot.offer(fc, 1)
        slots[name] = slot
    service = ForecastService(
        ServeConfig("in", "out", batch_max=batch_max),
        broker.source("in", "g"),
        broker.sink(),
        slots,
        Metrics(CollectorRegistry()),
    )
    service.run(threading.Event(), max_events=len(EVENTS))
    by_model: dict = {}
    for r in broker.records("out"):
        f = json.loads(r.value)
        f.pop("produced_at")
        by_model.setdefault(f["model"], {})[(f["source"]["partition"], f["source"]["offset"])] = f
    return service, by_model


def test_forecasts_do_not_depend_on_the_inference_thread_or_batching() -> None:
    torch.manual_seed(0)
    lstm, dlinear = tiny("lstm"), tiny("dlinear")
    points: dict = {}
    for batch_max in (500, 7):
        # intervals and confidence follow online calibration, which moves batch by batch;
        # alone, a model runs on the loop's thread, beside another one of them runs on the
        # inference thread
        alone_lstm = _serve({"lstm": lstm}, batch_max)[1]["lstm"]
        alone_dlinear = _serve({"dlinear": dlinear}, batch_max)[1]["dlinear"]
        service, both = _serve({"lstm": lstm, "dlinear": dlinear}, batch_max)
        assert service._inference is not None, "with two models one runs on the thread"
        assert both["lstm"] == alone_lstm and len(alone_lstm) == len(EVENTS)
        assert both["dlinear"] == alone_dlinear and len(alone_dlinear) == len(EVENTS)
        for name in ("lstm", "dlinear"):
            got = {k: [f[q] for q in ("gap_s", "request_tokens")] for k, f in both[name].items()}
            assert points.setdefault(name, got) == got  # points: the same in any batches
        assert len(both["best"]) == len(EVENTS)
        for key, f in both["best"].items():  # each quantity from one of the two models
            for q in ("gap_s", "request_tokens", "response_tokens"):
                assert f[q] in (both["lstm"][key][q], both["dlinear"][key][q])


class _Const:
    """A forecaster that always says ``value`` (and takes ``delay_s`` to say it)."""

    kind = "model"
    confidence = 0.8

    def __init__(self, value: float, delay_s: float = 0.0, seq_len: int = 4) -> None:
        self.value, self.delay_s, self.seq_len = value, delay_s, seq_len

    def predict(self, windows: np.ndarray) -> Prediction:
        time.sleep(self.delay_s)
        p = np.full((len(windows), 1, 3), self.value)
        return Prediction(p, p * 0.5, p * 2.0)


def test_best_follows_the_first_model_until_both_are_scored() -> None:
    """Until each model has enough scored forecasts, ``best`` is the first model's (slot
    order), whichever model runs on the inference thread."""
    events = [RequestEvent(float(i), 10, 5, "a") for i in range(40)]
    broker = MemoryBroker()
    broker.create_topic("in", 1)
    sink = broker.sink()
    for ev in events:
        sink.send("in", b"a", json.dumps(ev.to_dict()).encode())
    slots = {}
    for name, fc in (("first", _Const(1.0)), ("slow", _Const(2.0, delay_s=0.01))):
        slot: ModelSlot = ModelSlot(name)
        slot.offer(fc, 1)
        slots[name] = slot
    service = ForecastService(
        ServeConfig("in", "out", batch_max=3),
        broker.source("in", "g"),
        broker.sink(),
        slots,
        Metrics(CollectorRegistry()),
    )
    service.run(threading.Event(), max_events=len(events))
    assert service._cost["slow"] > service._cost["first"]  # "slow" ran on the thread
    best = [json.loads(r.value) for r in broker.records("out")]
    best = [f for f in best if f["model"] == "best"]
    early = [f["gap_s"] for f in best if f["source"]["offset"] < 18]
    assert len(early) == 18 and set(early) == {1.0}
