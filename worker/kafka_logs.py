"""librdkafka's log lines through Python logging, without the notices of retries that always succeed.

Every Kafka client here passes a logger from `librdkafka_logger` as its `logger` property. On a freshly
started broker the idempotent producer's first PID request gets "Coordinator load in progress" and
librdkafka logs a warning although it retries and succeeds a moment later; such lines are demoted to
DEBUG. Every other warning keeps its level, so what matters (authentication, authorisation, TLS,
unreachable brokers) still shows.
"""

from __future__ import annotations

import logging

# Broker answers that librdkafka retries by itself until the coordinator is ready.
_TRANSIENT = ("Coordinator load in progress", "Coordinator not available", "Not coordinator")


class _TransientRetries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        message = record.getMessage()
        if "retrying" not in message or not any(reason in message for reason in _TRANSIENT):
            return True
        # The logger let it through as a warning; as a DEBUG line it passes only where DEBUG is on.
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def librdkafka_logger(name: str) -> logging.Logger:
    """The logger to hand a client as its `logger` property."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _TransientRetries) for f in logger.filters):
        logger.addFilter(_TransientRetries())
    return logger
