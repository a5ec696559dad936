"""Kafka client configs (and the one metadata lookup) for the command-line tools.

They read the same `KAFKA_*` environment variables as the worker
(worker/settings.py), so one environment configures every client.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException

from worker.settings import kafka_properties, redact_kafka_properties

# Defaults a user's KAFKA_* variables may override.
PRODUCER_DEFAULTS = {
    "linger.ms": "5",
    # librdkafka's own retries must not duplicate or reorder records.
    "enable.idempotence": "true",
    "message.timeout.ms": "30000",
}


def client_config(bootstrap_server: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: the KAFKA_* environment) plus an optional bootstrap override, as a new dict."""
    props = dict(kafka_properties() if base is None else base)
    if bootstrap_server:
        props["bootstrap.servers"] = bootstrap_server
    return props


def producer_config(
    bootstrap_server: str | None = None,
    base: Mapping[str, str] | None = None,
    *,
    delivery_timeout: float | None = None,
) -> dict[str, str]:
    """Properties for the report producer; `delivery_timeout` (seconds) bounds each record's delivery."""
    props = {**PRODUCER_DEFAULTS, **client_config(bootstrap_server, base)}
    if delivery_timeout is not None:
        props["message.timeout.ms"] = str(max(1, round(delivery_timeout * 1000)))
    return props


def consumer_config(
    bootstrap_server: str | None = None,
    base: Mapping[str, str] | None = None,
    *,
    group_prefix: str = "report-results",
) -> dict[str, str]:
    """Properties for a read-only consumer that assigns partitions itself.

    The group id is unique and offsets are never committed, so the reader cannot
    disturb any other consumer group.
    """
    return {
        **client_config(bootstrap_server, base),
        "group.id": f"{group_prefix}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": "false",
        "enable.auto.offset.store": "false",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": "true",
    }


def describe(props: Mapping[str, str]) -> str:
    """A one-line, secret-free description of a config, for logs and --verbose."""
    return " ".join(f"{k}={v}" for k, v in sorted(redact_kafka_properties(props).items()))


def topic_partitions(consumer: Consumer, topic: str, timeout: float, error: type[Exception]) -> list[int]:
    """The partitions of `topic`; raises `error` naming the problem when Kafka or the topic is unreachable."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
        raise error(f"cannot reach Kafka: {reason}") from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        reason = info.error.str() if info is not None and info.error is not None else "unknown topic"
        raise error(f"cannot read topic {topic}: {reason}")
    return sorted(info.partitions)
