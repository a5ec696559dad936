"""How large a record each output topic accepts, learned from the broker once per process.

A record the broker refuses as too large can never be published, however often it is
retried: the worker bounds every record it publishes by its encoded size instead. The
bound is the topic's `max.message.bytes` (read with the admin API), capped by the
producer's own `message.max.bytes`, minus room for the record batch's framing and for
compression that does not pay off. `OUTPUT_MAX_RECORD_BYTES` replaces the lookup.

The broker applies `max.message.bytes` to a whole batch of records, not to each record,
so the producer's `batch.size` is bounded the same way (worker/publisher.py): otherwise
two records that fit on their own would be refused together.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from worker.settings import get_settings

log = logging.getLogger(__name__)

LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
# A record batch's header (61 bytes) and one record's framing (varints, ~20 bytes), with room to spare.
FRAMING_BYTES = 256
LOOKUP_TIMEOUT_S = 10.0

_learned: dict[str, int] = {}
_lock = threading.Lock()
_lookups: dict[str, asyncio.Future[int]] = {}
"""Lookups in progress: the invocations that need a bound at the same time share one."""


def producer_max_bytes() -> int:
    props = get_settings().kafka.client_config()
    try:
        return int(props.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
    except ValueError:
        return LIBRDKAFKA_MESSAGE_MAX_BYTES


def bound(topic_max: int, producer_max: int) -> int:
    """The largest key + value to publish, given the topic's and the producer's limits."""
    # lz4 can grow incompressible data by ~0.4 %: keep 1 % of the topic's limit free for it.
    return max(1, min(producer_max - FRAMING_BYTES, topic_max - FRAMING_BYTES - topic_max // 100))


async def record_bound(topic: str) -> int:
    """The byte bound for records on `topic`, learned without blocking the event loop (one lookup at a time)."""
    with _lock:
        if topic in _learned:
            return _learned[topic]
    lookup = _lookups.get(topic)
    if lookup is None:
        lookup = asyncio.ensure_future(asyncio.to_thread(max_record_bytes, topic))
        _lookups[topic] = lookup
        lookup.add_done_callback(lambda _: _lookups.pop(topic, None))
    return await asyncio.shield(lookup)


async def batch_bound() -> int:
    """The largest batch the producer may send: one that every output topic accepts."""
    settings = get_settings()
    return min([await record_bound(settings.tables_topic), await record_bound(settings.dead_letter_topic)])


def max_record_bytes(topic: str) -> int:
    """The byte bound for records on `topic` (cached per process once the broker answered)."""
    override = get_settings().output_max_record_bytes
    if override is not None:
        return override
    with _lock:
        if topic in _learned:
            return _learned[topic]
    producer_max = producer_max_bytes()
    topic_max = topic_max_message_bytes(topic)
    if topic_max is None:
        # Not cached: the next invocation asks again. A wrong guess is caught at publish time
        # (the broker's MSG_SIZE_TOO_LARGE makes a minimal dead letter), never a pause.
        return bound(producer_max, producer_max)
    limit = bound(topic_max, producer_max)
    with _lock:
        _learned[topic] = limit
    log.info("records on %s are bounded to %d bytes (max.message.bytes %d, producer %d)",
             topic, limit, topic_max, producer_max)  # fmt: skip
    return limit


def topic_max_message_bytes(topic: str) -> int | None:
    """The topic's `max.message.bytes`, or None when the broker cannot say (unreachable, no DescribeConfigs ACL)."""
    admin = AdminClient({**get_settings().kafka.client_config(), "log_level": "3"})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        configs = admin.describe_configs([resource], request_timeout=LOOKUP_TIMEOUT_S)[resource].result(
            timeout=LOOKUP_TIMEOUT_S
        )
        return int(configs["max.message.bytes"].value)
    except (KafkaException, TimeoutError, KeyError, ValueError, TypeError) as exc:
        log.warning("cannot read max.message.bytes of %s (%s); bounding its records by the producer's limit",
                    topic, exc)  # fmt: skip
        return None
