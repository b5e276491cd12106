"""Distributing accepted models: a compacted model topic and a model-directory watcher.

An accepted model is published to the model topic as one JSON message (key =
model name) holding its metadata and its weights in base64; its task (metadata ``task``)
routes it to the next-request slots or, where the instance serves load forecasts, the
load slots. Followers write it
to a temporary directory and load it exactly like a file artifact (checksum,
``weights_only=True``), so a message can never run code. A model is installed
only if its version is newer than the serving one; anything that fails to load
is rejected, counted and logged, and the old model keeps serving.

A message is at most :data:`MAX_MODEL_MESSAGE_BYTES` (checked before it is parsed);
its metadata must pass :func:`~predictor.artifacts.validate_meta` (finite numbers, a
positive integer version, an architecture of bounded size: checked before any module
is built). Whatever a message holds, :func:`parse_message` and :func:`load_message`
raise nothing but :class:`~predictor.errors.ModelLoadError`, and the follower goes on
with the next message.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from predictor.artifact_meta import MAX_META_BYTES, MAX_WEIGHTS_BYTES, artifact_header
from predictor.artifacts import (
    META,
    WEIGHTS,
    ArtifactInfo,
    list_artifacts,
    load_artifact,
    validate_meta,
)
from predictor.background import BackgroundWorker, PeriodicWorker
from predictor.errors import ModelLoadError
from predictor.models.base import Forecaster
from predictor.models.neural import NeuralForecaster
from predictor.slot import ModelSlot
from predictor.tasks import LOAD, NEXT_REQUEST
from stream.metrics import Metrics
from stream.model_slots import install, reject_artifact
from stream.transport import Sink

log = logging.getLogger(__name__)

#: the largest model-topic message read: the largest weights file in base64, the largest
#: metadata, and the envelope; a longer one is rejected before it is parsed
MAX_MODEL_MESSAGE_BYTES = 4 * (MAX_WEIGHTS_BYTES // 3 + 1) + MAX_META_BYTES + 1024


def encode_artifact(info: ArtifactInfo) -> bytes:
    """The model-topic message for an artifact directory."""
    weights = (info.path / WEIGHTS).read_bytes()
    return json.dumps(
        {"meta": info.meta, "weights_b64": base64.b64encode(weights).decode()}
    ).encode()


class ModelPublisher:
    """Publishes accepted artifacts to the model topic and waits for the acknowledgement."""

    def __init__(self, sink: Sink, topic: str) -> None:
        self.sink, self.topic = sink, topic

    def __call__(self, info: ArtifactInfo) -> None:
        self.sink.send(self.topic, info.model.encode(), encode_artifact(info))
        self.sink.flush()
        log.info("published %s (version %d) to %s", info.path.name, info.version, self.topic)


#: why an artifact cannot serve here (None: it can), checked before it is installed
Compatibility = Callable[[dict[str, Any], Forecaster], "str | None"]


def reject(metrics: Metrics, model: str, reason: str, what: str, error: object) -> None:
    metrics.swaps.labels(model, "rejected", reason).inc()
    log.error("rejected model %s: %s", what, error)


@dataclass(frozen=True)
class ModelMessage:
    """A parsed model-topic message: its header checked, the rest not yet."""

    model: str
    version: int
    task: str
    meta: dict[str, Any]
    weights: bytes


def parse_message(value: bytes) -> ModelMessage:
    """The header (model, version, task), metadata and weights of a model-topic message;
    :class:`ModelLoadError` for anything else, however malformed."""
    if len(value) > MAX_MODEL_MESSAGE_BYTES:
        raise ModelLoadError(
            f"message of {len(value)} bytes is larger than {MAX_MODEL_MESSAGE_BYTES}"
        )
    try:
        body = json.loads(value)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        raise ModelLoadError(f"not JSON ({type(exc).__name__})") from exc
    if not isinstance(body, dict):
        raise ModelLoadError("not a JSON object")
    meta, encoded = body.get("meta"), body.get("weights_b64")
    if not isinstance(meta, dict):
        raise ModelLoadError("no 'meta' object")
    if not isinstance(encoded, str):
        raise ModelLoadError("no 'weights_b64' string")
    model, version, task = artifact_header(meta)
    try:
        weights = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error, or a non-ASCII character
        raise ModelLoadError(f"weights_b64 is not base64 ({exc})") from exc
    return ModelMessage(model, version, task, meta, weights)


def load_message(
    message: ModelMessage, device: str = "cpu"
) -> tuple[NeuralForecaster, dict[str, Any]]:
    """Load a parsed message exactly like an artifact directory (through a temporary copy);
    :class:`ModelLoadError` if it does not load."""
    validate_meta(message.meta)  # before anything is written, let alone built
    try:
        with tempfile.TemporaryDirectory(prefix="reqcast-model-") as tmp:
            # a fixed name: the message's own name must not pick the path (``../x``, ``a/b``)
            path = Path(tmp) / "artifact"
            path.mkdir()
            (path / WEIGHTS).write_bytes(message.weights)
            (path / META).write_text(json.dumps(message.meta))
            return load_artifact(path, device=device)
    except OSError as exc:
        raise ModelLoadError(f"cannot write a temporary copy ({exc})") from exc


def _describe(meta: dict[str, Any]) -> str:
    """The message's artifact name for a log line, if it is a plain short one."""
    name = meta.get("name")
    ok = isinstance(name, str) and 0 < len(name) <= 255 and name.isprintable()
    return f"{name if ok else 'message'} from the model topic"


def install_message(
    value: bytes,
    slots: dict[str, ModelSlot[Forecaster]],
    metrics: Metrics,
    device: str = "cpu",
    load_slots: dict[str, ModelSlot[Forecaster]] | None = None,
    load_compatible: Compatibility | None = None,
) -> bool:
    """Load one model-topic message and install it if newer; False if not installed. The
    message's task routes it: next-request models to ``slots``, load models to
    ``load_slots`` (if this instance serves load forecasts; ``load_compatible`` says why a
    load model cannot serve here). A bad message is rejected, counted (as its model's when
    that is served here, else as ``unknown``) and logged once; nothing it holds makes this
    raise."""
    try:
        message = parse_message(value)
    except ModelLoadError as exc:
        reject(
            metrics,
            "unknown",
            "load_error",
            "message from the model topic",
            f"malformed message ({exc})",
        )
        return False
    model, meta = message.model, message.meta
    if message.task == LOAD:
        slot, compatible = (load_slots or {}).get(model), load_compatible
    elif message.task == NEXT_REQUEST:
        slot, compatible = slots.get(model), None
    else:
        return False
    if slot is None or message.version <= slot.version:
        return False  # not served here, or not newer: replays of the compacted topic land here
    try:
        fc, meta = load_message(message, device)
    except ModelLoadError as exc:
        reject(metrics, model, "load_error", _describe(meta), exc)
        return False
    why = compatible(meta, fc) if compatible is not None else None
    if why is not None:
        reject(metrics, model, "incompatible", _describe(meta), why)
        return False
    if install(slot, fc, meta, metrics, reason="model topic"):
        metrics.swaps.labels(model, "accepted", "model_topic").inc()
        return True
    return False


class ModelTopicFollower(BackgroundWorker):
    """Reads the compacted model topic from the beginning and keeps following it, on its
    own thread (``model-topic``) between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        kafka: Any,
        topic: str,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: Metrics,
        device: str = "cpu",
        load_slots: dict[str, ModelSlot[Forecaster]] | None = None,
        load_compatible: Compatibility | None = None,
    ) -> None:
        super().__init__("model-topic", stop_timeout_s=10.0)
        #: load models from the topic go here (None: this instance serves no load forecasts)
        self.load_slots, self.load_compatible = load_slots, load_compatible
        self.kafka, self.topic, self.slots, self.metrics, self.device = (
            kafka,
            topic,
            slots,
            metrics,
            device,
        )
        self.installed = 0

    def _loop(self) -> None:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer(
                        **self.kafka.client_kwargs(),
                        group_id=None,
                        enable_auto_commit=False,
                        fetch_max_bytes=64 << 20,
                        max_partition_fetch_bytes=64 << 20,
                    )
                    parts = consumer.partitions_for_topic(self.topic) or {0}
                    tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                    consumer.assign(tps)
                    consumer.seek_to_beginning(*tps)
                for msgs in consumer.poll(timeout_ms=500).values():
                    for m in msgs:
                        self._handle(m.value)
            except KafkaError as exc:
                log.warning("model topic %s: %s; retrying", self.topic, exc)
                self._stop.wait(2.0)
            except Exception:  # the follower outlives anything; its models keep serving
                log.exception("model topic %s: unexpected error; retrying", self.topic)
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()

    def _handle(self, value: bytes | None) -> None:
        """One message: installed, ignored or rejected, never a reason to stop following."""
        if not value:
            return
        try:
            if install_message(
                value, self.slots, self.metrics, self.device, self.load_slots, self.load_compatible
            ):
                self.installed += 1
        except Exception as exc:  # a bug, not the message: still count it and go on
            log.exception("model topic %s: message not handled", self.topic)
            reject(self.metrics, "unknown", "load_error", "message from the model topic", exc)


class ModelDirWatcher(PeriodicWorker):
    """Polls the model directory every ``interval_s`` seconds (on its own thread between
    :meth:`start` and :meth:`stop`, or once per :meth:`check` call) and installs newer
    versions of ``task``'s models into ``slots``; corrupt or (by ``compatible``)
    incompatible ones are rejected once."""

    def __init__(
        self,
        model_dir: str | Path,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: Metrics,
        interval_s: float = 5.0,
        device: str = "cpu",
        task: str = "next_request",
        compatible: Compatibility | None = None,
    ) -> None:
        super().__init__(f"model-dir-{task}", interval_s, stop_timeout_s=10.0)
        self.model_dir, self.slots, self.metrics = Path(model_dir), slots, metrics
        self.device, self.task = device, task
        self.compatible = compatible
        self._rejected: set[str] = set()

    def tick(self) -> None:
        try:
            self.check()
        except Exception:  # the watcher outlives anything; its models keep serving
            log.exception("model dir %s: check failed; trying again", self.model_dir)

    def check(self) -> int:
        """Install any newer loadable version now; returns how many were installed."""
        installed = 0
        for name, slot in self.slots.items():

            def invalid(path: Path, named: str | None, why: str, name: str = name) -> None:
                reject_artifact(self.metrics, name if named == name else "unknown", path, why, log)

            found = list_artifacts(self.model_dir, name, task=self.task, on_invalid=invalid)
            for info in reversed(found):
                if info.version <= slot.version:
                    break
                if str(info.path) in self._rejected:
                    continue
                try:
                    fc, meta = load_artifact(info.path, device=self.device)
                except ModelLoadError as exc:
                    self._rejected.add(str(info.path))
                    reject_artifact(self.metrics, name, info.path, str(exc), log)
                    continue
                why = self.compatible(meta, fc) if self.compatible is not None else None
                if why is not None:
                    self._rejected.add(str(info.path))
                    reject(self.metrics, name, "incompatible", info.path.name, why)
                    continue
                if install(slot, fc, meta, self.metrics, reason="model dir", where=info.path):
                    self.metrics.swaps.labels(name, "accepted", "model_dir").inc()
                    installed += 1
                break
        return installed
