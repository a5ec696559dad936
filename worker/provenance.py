"""Is an invocation really the Kafka record it claims to be? (`VERIFY_KAFKA_SOURCE`, off by default)

Restate's Kafka subscription tells the handler where a record came from in `kafka.*`
headers. Restate's HTTP ingress forwards a caller's request headers the same way, so
anyone who can reach an open ingress can claim any coordinates. Our stacks run Restate
without the HTTP ingress; where it must stay open (a Restate shared with other services),
this check reads the claimed record back from Kafka and compares its value, byte for byte
(by sha256), with what the invocation carries. It runs once per invocation, inside the
journaled `Input message` step.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.kafka_logs import librdkafka_logger
from worker.models import SourceRef
from worker.settings import get_settings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0


class SourceUnavailable(RuntimeError):
    """Kafka could not be asked (retryable: Restate retries the step)."""


_consumer: Consumer | None = None
_lock = threading.Lock()


def _get_consumer() -> Consumer:
    global _consumer
    if _consumer is None:
        config: dict[str, object] = {
            **get_settings().kafka.client_config(),
            # Never joins the group or commits: it only reads single records by assignment.
            "group.id": f"report-chain-verify-{os.getpid()}",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "fetch.wait.max.ms": "10",
            "logger": librdkafka_logger("worker.provenance.librdkafka"),
        }
        _consumer = Consumer(config)
    return _consumer


async def mismatch(claimed: SourceRef, raw: bytes | None) -> str | None:
    """None when the record at `claimed` holds exactly `raw`; otherwise why the claim fails."""
    return await asyncio.to_thread(_mismatch, claimed, raw)


def _mismatch(claimed: SourceRef, raw: bytes | None) -> str | None:
    reports_topic = get_settings().reports_topic
    if claimed.topic != reports_topic:
        return f"it claims to come from topic {claimed.topic!r}, not from {reports_topic!r}"
    with _lock:
        stored = _read(_get_consumer(), claimed)
    if stored is _MISSING:
        return f"{claimed} holds no record"
    # Restate hands a null value (a tombstone) to the handler as an empty body.
    value = stored if isinstance(stored, bytes) else b""
    if hashlib.sha256(value).digest() != hashlib.sha256(raw or b"").digest():
        return f"its value differs from the record at {claimed}"
    return None


class _Missing:
    """No record at the coordinates (never written, deleted by retention or compacted away)."""


_MISSING = _Missing()


def _read(consumer: Consumer, at: SourceRef) -> bytes | _Missing | None:
    """The value of the record at `at` (None for a tombstone), or _MISSING."""
    tp = TopicPartition(at.topic, at.partition, at.offset)
    try:
        low, high = consumer.get_watermark_offsets(tp, timeout=READ_TIMEOUT_S)
    except KafkaException as exc:
        raise SourceUnavailable(f"cannot read the offsets of {at.topic}[{at.partition}]: {exc}") from None
    if not low <= at.offset < high:
        return _MISSING
    consumer.assign([tp])
    try:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return _MISSING  # compacted away
                raise SourceUnavailable(f"reading {at}: {error.str()}")
            offset = message.offset()
            if offset == at.offset:
                return message.value()
            if offset is not None and offset > at.offset:
                return _MISSING  # compacted away: the log skips from before to after it
        raise SourceUnavailable(f"reading {at} did not finish within {READ_TIMEOUT_S:g} s")
    finally:
        consumer.unassign()


def close() -> None:
    global _consumer
    with _lock:
        if _consumer is not None:
            _consumer.close()
            _consumer = None
