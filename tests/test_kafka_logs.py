"""librdkafka's log lines: notices of retries that always succeed are DEBUG, real warnings stay warnings."""

from __future__ import annotations

import logging

import pytest

from worker.kafka_logs import librdkafka_logger

GETPID = (
    "[rdkafka#producer-4] [thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:19292/1: "
    "Broker: Coordinator load in progress: retrying"
)


@pytest.mark.parametrize(
    ("message", "level"),
    [
        (GETPID, logging.DEBUG),
        (GETPID.replace("Coordinator load in progress", "Coordinator not available"), logging.DEBUG),
        (
            "[rdkafka#producer-1] [thrd:main]: Failed to acquire idempotence PID from broker b:9092/1: "
            "Broker: Cluster authorization failed",
            logging.WARNING,
        ),
        ("[rdkafka#consumer-2] [thrd:sasl_ssl://b:9096/1]: SASL authentication error: Authentication failed", 30),
        ("[rdkafka#producer-1] [thrd:b:9092/1]: Connect to ipv4#10.0.0.1:9092 failed: Connection refused", 30),
    ],
)
def test_only_transient_coordinator_retries_are_demoted(
    message: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    logger = librdkafka_logger("tests.librdkafka")
    with caplog.at_level(logging.DEBUG, logger="tests.librdkafka"):
        logger.warning("%s", message)
    [record] = caplog.records
    assert record.levelno == level


def test_a_warning_level_handler_does_not_print_the_getpid_notice(capsys: pytest.CaptureFixture[str]) -> None:
    logger = librdkafka_logger("tests.librdkafka.stderr")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler())  # stderr, level NOTSET: the handler sees the demoted level
    logger.setLevel(logging.WARNING)
    logger.warning("%s", GETPID)
    logger.warning("%s", "SASL authentication error: Authentication failed")
    err = capsys.readouterr().err
    assert "Coordinator load in progress" not in err and "SASL authentication error" in err
    assert librdkafka_logger("tests.librdkafka.stderr").filters == logger.filters  # one filter, not two
