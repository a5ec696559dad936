"""Kafka for the reading tools: a consumer config that cannot disturb anyone, and the one metadata lookup."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException

from worker.settings import client_config


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
