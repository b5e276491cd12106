"""File sinks: forecasts and dead letters as JSON Lines, for the embedded pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO


class JsonlSink:
    """Writes each topic's values as lines of its own file; other topics go to ``default``.

    ``flush`` flushes the files, which is this sink's acknowledgement.
    """

    def __init__(self, files: dict[str, str | Path], default: object | None = None) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, IO[bytes]] = {}
        for topic, path in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._files[topic] = open(path, "ab")  # noqa: SIM115 (closed in close())
        self.default = default
        self.counts: dict[str, int] = {}

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        fh = self._files.get(topic)
        if fh is None:
            if self.default is not None:
                self.default.send(topic, key, value)  # type: ignore[attr-defined]
            return
        with self._lock:
            fh.write(value + b"\n")
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def flush(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.flush()
        if self.default is not None:
            self.default.flush(timeout_s)  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()


class TeeSink:
    """Sends every record to each of several sinks; flush waits for all of them."""

    def __init__(self, *sinks: object) -> None:
        self.sinks = sinks

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        for s in self.sinks:
            s.send(topic, key, value)  # type: ignore[attr-defined]

    def flush(self, timeout_s: float = 30.0) -> None:
        for s in self.sinks:
            s.flush(timeout_s)  # type: ignore[attr-defined]

    def close(self) -> None:
        for s in self.sinks:
            s.close()  # type: ignore[attr-defined]
