"""Distributing accepted models: a compacted model topic and a model-directory watcher.

An accepted model is published to the model topic as one JSON message (key =
model name) holding its metadata and its weights in base64. Followers write it
to a temporary directory and load it exactly like a file artifact (checksum,
``weights_only=True``), so a message can never run code. A model is installed
only if its version is newer than the serving one; anything that fails to load
is rejected, counted and logged, and the old model keeps serving.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from predictor.artifacts import META, WEIGHTS, ArtifactInfo, list_artifacts, load_artifact
from predictor.errors import ModelLoadError
from predictor.models.base import Forecaster
from predictor.slot import ModelSlot
from stream.metrics import Metrics
from stream.model_slots import install
from stream.transport import Sink

log = logging.getLogger(__name__)


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


def reject(metrics: Metrics, model: str, reason: str, what: str, error: object) -> None:
    metrics.swaps.labels(model, "rejected", reason).inc()
    log.error("rejected model %s: %s", what, error)


def install_message(
    value: bytes, slots: dict[str, ModelSlot[Forecaster]], metrics: Metrics, device: str = "cpu"
) -> bool:
    """Load one model-topic message and install it if newer; False if not installed."""
    try:
        body = json.loads(value)
        meta: dict[str, Any] = body["meta"]
        model, version = str(meta["model"]), int(meta["version"])
        weights = base64.b64decode(body["weights_b64"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        reject(
            metrics,
            "unknown",
            "load_error",
            "message from the model topic",
            f"malformed message ({exc})",
        )
        return False
    slot = slots.get(model)
    if meta.get("task", "next_request") != "next_request":
        return False  # load models are trained and shipped offline
    if slot is None or version <= slot.version:
        return False  # not served here, or not newer: replays of the compacted topic land here
    with tempfile.TemporaryDirectory(prefix="reqcast-model-") as tmp:
        # a fixed name: the message's own name must not pick the path (``../x``, ``a/b``)
        path = Path(tmp) / "artifact"
        path.mkdir()
        (path / WEIGHTS).write_bytes(weights)
        (path / META).write_text(json.dumps(meta))
        try:
            fc, meta = load_artifact(path, device=device)
        except ModelLoadError as exc:
            reject(metrics, model, "load_error", f"{meta.get('name')} from the model topic", exc)
            return False
    if install(slot, fc, meta, metrics, reason="model topic"):
        metrics.swaps.labels(model, "accepted", "model_topic").inc()
        return True
    return False


class ModelTopicFollower:
    """Reads the compacted model topic from the beginning and keeps following it."""

    def __init__(
        self,
        kafka: Any,
        topic: str,
        slots: dict[str, ModelSlot[Forecaster]],
        metrics: Metrics,
        device: str = "cpu",
    ) -> None:
        self.kafka, self.topic, self.slots, self.metrics, self.device = (
            kafka,
            topic,
            slots,
            metrics,
            device,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-topic", daemon=True)
        self.installed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

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
                        if m.value and install_message(
                            m.value, self.slots, self.metrics, self.device
                        ):
                            self.installed += 1
            except KafkaError as exc:
                log.warning("model topic %s: %s; retrying", self.topic, exc)
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close()


#: why an artifact cannot serve here (None: it can), checked before it is installed
Compatibility = Callable[[dict[str, Any], Forecaster], "str | None"]


class ModelDirWatcher:
    """Polls the model directory and installs newer versions of ``task``'s models into
    ``slots``; corrupt or (by ``compatible``) incompatible ones are rejected once."""

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
        self.model_dir, self.slots, self.metrics = Path(model_dir), slots, metrics
        self.interval_s, self.device, self.task = interval_s, device, task
        self.compatible = compatible
        self._rejected: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"model-dir-{task}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def check(self) -> int:
        """Install any newer loadable version now; returns how many were installed."""
        installed = 0
        for name, slot in self.slots.items():
            for info in reversed(list_artifacts(self.model_dir, name, task=self.task)):
                if info.version <= slot.version:
                    break
                if str(info.path) in self._rejected:
                    continue
                try:
                    fc, meta = load_artifact(info.path, device=self.device)
                except ModelLoadError as exc:
                    self._rejected.add(str(info.path))
                    reject(self.metrics, name, "load_error", info.path.name, exc)
                    continue
                why = self.compatible(meta, fc) if self.compatible is not None else None
                if why is not None:
                    self._rejected.add(str(info.path))
                    reject(self.metrics, name, "incompatible", info.path.name, why)
                    continue
                if install(slot, fc, meta, self.metrics, reason="model dir"):
                    self.metrics.swaps.labels(name, "accepted", "model_dir").inc()
                    installed += 1
                break
        return installed
