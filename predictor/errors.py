"""The exception tree shared by every reqcast package.

One root, :class:`ReqcastError`, and a few children that say what went wrong.
The CLI turns any of them into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class ReqcastError(Exception):
    """Root of every error reqcast raises on purpose."""


class ConfigError(ReqcastError):
    """A flag, preset, environment variable or argument is not usable."""


class InputError(ReqcastError):
    """A trace file or an event is not usable: missing, unreadable or malformed."""


class InvalidEvent(InputError):
    """One event failed validation; ``reason`` is a short, low-cardinality label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ModelLoadError(ReqcastError):
    """A model artifact is missing, corrupt or incompatible."""


class TrainingError(ReqcastError):
    """Training could not produce a usable model (too little data, NaN loss, OOM)."""


class BrokerError(ReqcastError):
    """The Kafka broker could not be reached or refused an operation."""
