"""A loopback TCP proxy that a test can cut and restore, to simulate a broker outage.

Start a broker whose advertised listener is the proxy's port, so that every client
connection (bootstrap and afterwards) goes through the proxy. :meth:`TcpProxy.cut`
closes every live connection and refuses new ones; :meth:`TcpProxy.restore` accepts
again. One thread accepts, one thread per connection pumps both directions; the
number of connections is capped.

>>> import socket
>>> echo = socket.create_server(("127.0.0.1", 0))
>>> proxy = TcpProxy(0, "127.0.0.1", echo.getsockname()[1])
>>> proxy.start()
>>> client = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
>>> server, _ = echo.accept()
>>> client.sendall(b"ping"); server.recv(4)
b'ping'
>>> proxy.cut(); client.recv(4)
b''
>>> proxy.stop(); client.close(); server.close(); echo.close()
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.kafka_io import KafkaConfig

LOOPBACK = ("127.0.0.1", "localhost")
POLL_S = 0.1


class TcpProxy:
    """Forwards ``127.0.0.1:listen_port`` to ``target_host:target_port`` (loopback only)."""

    def __init__(
        self, listen_port: int, target_host: str, target_port: int, max_connections: int = 64
    ) -> None:
        if target_host not in LOOPBACK:
            raise ValueError(f"TcpProxy forwards to loopback only, not {target_host!r}")
        self.port = listen_port
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._pumps: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._accepting = threading.Event()

    def start(self) -> None:
        """Listen and forward; ``port`` holds the real port when ``listen_port`` was 0."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept")
        self._acceptor.daemon = True
        self._acceptor.start()

    def cut(self) -> None:
        """Close every connection and refuse new ones (the port stops listening)."""
        self._accepting.clear()
        if self._acceptor is not None:
            self._acceptor.join()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, pumps = list(self._conns), list(self._pumps)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for pump in pumps:
            pump.join(timeout=2)

    def restore(self) -> None:
        """Accept and forward again, on the same port."""
        if self._listener is None:
            self.start()

    def stop(self) -> None:
        self.cut()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                full = len(self._pumps) >= self.max_connections
            if full or not self._accepting.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            pump = threading.Thread(target=self._pump, args=(client, upstream), name="proxy-pump")
            pump.daemon = True
            with self._lock:
                self._conns.update((client, upstream))
                self._pumps.add(pump)
            pump.start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            for sock in peers:
                sock.settimeout(5)
                sel.register(sock, selectors.EVENT_READ, sock)
            try:
                while self._accepting.is_set():
                    for key, _ in sel.select(POLL_S):
                        source: socket.socket = key.data
                        data = source.recv(65536)
                        if not data:
                            return
                        peers[source].sendall(data)
            except OSError:
                return
            finally:
                with self._lock:
                    self._conns.difference_update(peers)
                    self._pumps.discard(threading.current_thread())
                for sock in peers:
                    sock.close()


def proxied_config(bootstrap: str, topics: dict[str, int]) -> KafkaConfig:
    """Client settings for the broker behind a proxy (``bootstrap``), once it answers,
    with ``topics`` (name -> partitions) created."""
    from stream.kafka_admin import ensure_topics, wait_for_broker
    from stream.kafka_io import KafkaConfig

    config = KafkaConfig(bootstrap)
    wait_for_broker(config, timeout_s=5)
    ensure_topics(config, topics)
    return config
