"""Log levels for the command line: expected conditions are information, not warnings.

A refit that the guard rejects because the challenger scored worse than the serving model
is the guard doing its job; :func:`install` lowers that record to INFO on the way out
(:mod:`trainer.refit` logs every rejection as a warning; the other reasons, a non-finite or
misshapen challenger, stay warnings). Kafka's own client loggers are quieted while start-up
waits for a broker (:func:`stream.kafka_admin.wait_for_broker`).
"""

from __future__ import annotations

import logging

#: ``(logger, message format, text in the message)`` of warnings that are expected conditions
EXPECTED: tuple[tuple[str, str, str], ...] = (("trainer.refit", "refit %s", "rejected (worse)"),)


class ExpectedAsInfo(logging.Filter):
    """Lowers the :data:`EXPECTED` warnings of one logger to INFO (it never drops a record)."""

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.rules = [(fmt, text) for name, fmt, text in EXPECTED if name == logger]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(
            record.msg == fmt and text in record.getMessage() for fmt, text in self.rules
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Add :class:`ExpectedAsInfo` to each logger of :data:`EXPECTED` (once)."""
    for name in {name for name, _, _ in EXPECTED}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExpectedAsInfo) for f in logger.filters):
            logger.addFilter(ExpectedAsInfo(name))
