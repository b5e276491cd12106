"""Compressed input and start-up waits of ``reqcast serve`` against a real broker.

Events from producers that compress (gzip, snappy, lz4, zstd: common defaults of Java
and Go clients) are forecast like any others; a codec whose library is missing (simulated
by making kafka-python's availability check say no) stops the reader, and ``serve``, with
one line naming the codec and the package to install, instead of spinning in the Kafka
client. Start-up gives up after ``--broker-wait`` seconds, saying what it waited for, also
when a TLS handshake never completes (``--security-protocol SSL`` against plaintext).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.codec as kafka_codec
import pytest
from kafka import KafkaProducer
from serve_helpers import (
    GROUP_FLAGS,
    PUBLISHED,
    REPO,
    TopicReader,
    child_env,
    create_topics,
    missing_forecasts,
    services,
    synthetic_events,
    train_tiny_models,
)

from predictor.errors import BrokerError
from stream.kafka_admin import read_all, wait_for_broker
from stream.kafka_io import CODEC_PACKAGES, KafkaConfig, KafkaSource, UndecodableBatch
from stream.trace_replay import encode

kafka = pytest.mark.kafka

CODECS = ("gzip", "snappy", "lz4", "zstd")
#: group timings short enough for tansu, where a group join waits for them
FAST_GROUP: dict[str, Any] = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 1000,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("codec_models")
    train_tiny_models(d, seq_len=16)
    return d


def _produce(
    config: KafkaConfig, topic: str, codec: str, rows: int, seed: int = 0
) -> list[tuple[int, int]]:
    """``rows`` events of two streams named after ``codec``, in batches compressed with it;
    their (partition, offset)."""
    events = synthetic_events(rows, [f"{codec}-a", f"{codec}-b"], seed=seed)
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers, compression_type=codec, linger_ms=20
    )
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in map(encode, events)]
        producer.flush(timeout=15)
        return [(m.partition, m.offset) for m in (f.get(timeout=15) for f in futures)]
    finally:
        producer.close(timeout=5)


def _without(monkeypatch: pytest.MonkeyPatch, codec: str) -> None:
    """Make kafka-python believe ``codec``'s library is not installed."""
    monkeypatch.setattr(kafka_codec, f"has_{codec}", lambda: False)


@kafka
def test_compressed_batches_forecast_end_to_end(
    kafka_config: KafkaConfig, topic_name: str, model_dir: Path, tmp_path: Path
) -> None:
    missing_libraries = [c for c in CODECS if not getattr(kafka_codec, f"has_{c}")()]
    assert missing_libraries == [], "reqcast's dependencies include every codec's library"
    out = f"{topic_name}.forecasts"
    create_topics(kafka_config, topic_name, 1, out, f"{topic_name}.dlq")
    sources = {codec: _produce(kafka_config, topic_name, codec, 40) for codec in CODECS}
    every = [pos for positions in sources.values() for pos in positions]
    reader = TopicReader(kafka_config, out)
    try:
        with services(tmp_path, kafka_config.bootstrap_servers, model_dir) as svc:
            serve = svc.start("codecs", topic_name, out, f"g-{topic_name}")
            reader.read_until(lambda r: len(r) >= len(PUBLISHED) * len(every), 90, idle_s=0.3)
            assert serve.alive(), serve.log()
            forecasts = reader.values()
    finally:
        reader.close()
    missing = {codec: missing_forecasts(forecasts, pos) for codec, pos in sources.items()}
    assert missing == {c: [] for c in CODECS}, "events of these codecs were not forecast"
    streams = {f["stream"] for f in forecasts}
    assert streams == {f"{c}-{s}" for c in CODECS for s in "ab"}


@kafka
@pytest.mark.parametrize("codec", sorted(CODEC_PACKAGES))
def test_source_stops_at_a_batch_it_cannot_decode(
    kafka_config: KafkaConfig, topic_name: str, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_topics(kafka_config, topic_name, 1)
    _produce(kafka_config, topic_name, codec, 20)
    _without(monkeypatch, codec)
    source = KafkaSource(kafka_config, topic_name, f"g-{topic_name}", **FAST_GROUP)
    try:
        match = (
            rf"{topic_name!r} holds {codec}-compressed record batches .*"
            rf"`pip install {CODEC_PACKAGES[codec]}`"
        )
        deadline = time.monotonic() + 30
        with pytest.raises(UndecodableBatch, match=match):
            while time.monotonic() < deadline:
                assert source.poll(100, 0.2) == []
        # polling again raises at once: kafka-python 3.0.12 would spin on the batch for ever
        started = time.monotonic()
        with pytest.raises(UndecodableBatch, match=match):
            source.poll(100, 0.2)
        assert time.monotonic() - started < 1.0
    finally:
        source.close()


@kafka
def test_group_less_reads_stop_at_a_batch_they_cannot_decode(
    kafka_config: KafkaConfig, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window warm-up's reads (``read_before``, ``read_all``) say the same as the source."""
    create_topics(kafka_config, topic_name, 1)
    _produce(kafka_config, topic_name, "zstd", 20)
    assert len(read_all(kafka_config, topic_name, timeout_s=10)) == 20
    _without(monkeypatch, "zstd")
    with pytest.raises(UndecodableBatch, match=r"zstd-compressed .*`pip install zstandard`"):
        read_all(kafka_config, topic_name, timeout_s=10)


#: ``reqcast serve`` in a process whose kafka-python cannot decode lz4
WITHOUT_LZ4 = (
    "import sys, kafka.codec; kafka.codec.has_lz4 = lambda: False; "
    "from stream.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _serve(log: Path, bootstrap: str, *argv: str, code: str | None = None) -> tuple[int, float]:
    """Run ``reqcast serve`` (through ``code`` if given) until it exits, 60 s at most; its
    exit status and how long it ran. Its output goes to ``log``."""
    start = [sys.executable, "-c", code] if code else [sys.executable, "-m", "stream.cli"]
    cmd = [*start, "serve", "--bootstrap-servers", bootstrap, "--metrics-port", "0", *argv]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=REPO
        )
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"serve still ran after 60 s:\n{log.read_text()[-5000:]}")
    return rc, time.monotonic() - started


@kafka
def test_serve_exits_at_a_batch_it_cannot_decode(
    kafka_config: KafkaConfig, topic_name: str, model_dir: Path, tmp_path: Path
) -> None:
    create_topics(kafka_config, topic_name, 1, f"{topic_name}.forecasts", f"{topic_name}.dlq")
    _produce(kafka_config, topic_name, "lz4", 20)
    log = tmp_path / "serve.log"
    flags = ["--input-topic", topic_name, "--output-topic", f"{topic_name}.forecasts"]
    flags += ["--group-id", f"g-{topic_name}", "--model-dir", str(model_dir), *GROUP_FLAGS]
    flags += ["--no-refit", "--model-topic", "", "--watch-model-dir", "0"]
    rc, _ = _serve(log, kafka_config.bootstrap_servers, *flags, code=WITHOUT_LZ4)
    text = log.read_text()
    assert rc == 2, text
    errors = [line for line in text.splitlines() if line.startswith("reqcast serve: error:")]
    assert errors == [
        f"reqcast serve: error: input topic {topic_name!r} holds lz4-compressed record batches "
        "and the lz4 codec library is not installed: `pip install lz4` (a dependency of "
        "reqcast: reinstall it)"
    ], text
    assert "Traceback" not in text


@kafka
def test_serve_start_up_gives_up_on_ssl_against_a_plaintext_broker(
    kafka_config: KafkaConfig, model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    bootstrap = kafka_config.bootstrap_servers
    flags = ["--model-dir", str(model_dir), "--security-protocol", "SSL", "--broker-wait", "5"]
    rc, took = _serve(log, bootstrap, *flags)
    text = log.read_text()
    assert rc == 2, text
    assert f"waiting up to 5 s for the Kafka broker at {bootstrap} (SSL)" in text
    errors = [line for line in text.splitlines() if line.startswith("reqcast serve: error:")]
    assert len(errors) == 1, text
    assert f"no Kafka broker answered at {bootstrap} within 5 s" in errors[0]
    assert "--security-protocol (SSL)" in errors[0]
    assert took < 30, text


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """``host:port`` of a socket that accepts connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_wait_for_broker_bounds_a_tls_handshake_that_never_completes(
    silent_listener: str,
) -> None:
    config = KafkaConfig(silent_listener, security_protocol="SSL")
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            wait_for_broker(config, timeout_s=1.0)
        except BaseException as exc:
            raised.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "wait_for_broker hung on the TLS handshake"
    assert time.monotonic() - started < 5
    assert len(raised) == 1 and isinstance(raised[0], BrokerError), raised
    assert "within 1 s" in str(raised[0]) and "TLS handshake" in str(raised[0])
