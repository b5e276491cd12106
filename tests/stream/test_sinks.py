"""File sinks of the embedded pipeline: JSON Lines per topic, the rest to a default sink,
and a tee to several sinks."""

from __future__ import annotations

from pathlib import Path

from stream.sinks import JsonlSink, TeeSink


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushes: list[float] = []
        self.closed = False

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushes.append(timeout_s)

    def close(self) -> None:
        self.closed = True


def test_each_topic_is_appended_to_its_own_file_one_value_a_line(tmp_path: Path) -> None:
    out, dlq = tmp_path / "a" / "forecasts.jsonl", tmp_path / "b" / "dlq.jsonl"
    sink = JsonlSink({"forecasts": out, "dlq": dlq})  # missing directories are made
    sink.send("forecasts", b"k", b'{"n": 1}')
    sink.send("forecasts", None, b'{"n": 2}')
    sink.send("dlq", b"k", b'{"bad": true}')
    sink.flush()
    assert out.read_bytes() == b'{"n": 1}\n{"n": 2}\n'  # flushed: readable before close
    assert dlq.read_bytes() == b'{"bad": true}\n'
    assert sink.counts == {"forecasts": 2, "dlq": 1}
    sink.close()
    again = JsonlSink({"forecasts": out})  # a second run appends, it does not truncate
    again.send("forecasts", None, b'{"n": 3}')
    again.close()
    assert out.read_bytes().splitlines() == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


def test_other_topics_go_to_the_default_sink_and_are_flushed_with_it(tmp_path: Path) -> None:
    default = _Recorder()
    sink = JsonlSink({"forecasts": tmp_path / "f.jsonl"}, default=default)
    sink.send("models", b"lstm", b"weights")
    sink.flush(7.0)
    assert default.sent == [("models", b"lstm", b"weights")] and default.flushes == [7.0]
    assert "models" not in sink.counts and (tmp_path / "f.jsonl").read_bytes() == b""
    sink.close()


def test_tee_sends_flushes_and_closes_every_sink() -> None:
    a, b = _Recorder(), _Recorder()
    tee = TeeSink(a, b)
    tee.send("t", b"k", b"v")
    tee.send("u", None, b"w")
    tee.flush(5.0)
    tee.close()
    for r in (a, b):
        assert r.sent == [("t", b"k", b"v"), ("u", None, b"w")]
        assert r.flushes == [5.0] and r.closed
