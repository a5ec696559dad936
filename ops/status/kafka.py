"""Kafka's side of the status: records on the output topics, and the subscription's consumer-group lag."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from ops.status.models import ConsumerGroupLag, KafkaStatus, PartitionLag, StatusError, TopicRecords
from ops.status.restate import TIMEOUT_S
from worker.kafka_logs import librdkafka_logger

librdkafka_log = librdkafka_logger("ops.status.librdkafka")


# The library's OffsetSpec factories are untyped.
LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


OffsetFutures = Mapping[TopicPartition, Future[Any]]


def _request_offsets(admin: AdminClient, specs: Mapping[TopicPartition, OffsetSpec], timeout: float) -> OffsetFutures:
    """Ask for offsets without waiting, so several requests travel at once."""
    return admin.list_offsets(dict(specs), request_timeout=timeout) if specs else {}


def _offsets(futures: OffsetFutures) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}


# The group coordinator needs a moment after a broker starts; these errors go away by themselves.
_COORDINATOR_NOT_READY = frozenset(
    {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE}
)


def committed_offsets(
    config: Mapping[str, str], group_id: str, topic: str, partitions: Sequence[int], timeout: float
) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read with an OffsetFetch that neither joins nor changes the group.

    (AdminClient.list_consumer_group_offsets crashes the interpreter in confluent-kafka 2.16 when the
    coordinator answers NOT_COORDINATOR, as it does right after a broker starts; a consumer that never
    subscribes reports the same error as an exception.)
    """
    consumer_config: dict[str, Any] = {
        **config,
        "group.id": group_id,
        "enable.auto.commit": "false",
        "logger": librdkafka_log,
    }
    consumer = Consumer(consumer_config)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
                return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0 and tp.error is None}
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or error.code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    reason = error.str() if error is not None else str(exc)
                    bootstrap = config.get("bootstrap.servers", "?")
                    raise StatusError(
                        f"reading the committed offsets of group {group_id} from Kafka at {bootstrap} failed: {reason}"
                    ) from None
                time.sleep(0.2)
    finally:
        consumer.close()


def kafka_status(
    config: Mapping[str, str],
    *,
    tables_topic: str,
    dlq_topic: str,
    reports_topic: str,
    group_id: str,
    subscription_id: str | None,
    since_ms: int,
    timeout: float = TIMEOUT_S,
) -> KafkaStatus:
    bootstrap = config.get("bootstrap.servers", "?")
    admin_config: dict[str, Any] = {**config, "logger": librdkafka_log}
    admin = AdminClient(admin_config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise StatusError(f"cannot reach Kafka at {bootstrap}: {reason}") from None
    partitions: dict[str, list[int]] = {}
    for topic in (tables_topic, dlq_topic, reports_topic):
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise StatusError(f"topic {topic} does not exist on Kafka at {bootstrap}")
        partitions[topic] = sorted(info.partitions)
    every = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
    outputs = [tp for tp in every if tp.topic != reports_topic]
    requests = [
        _request_offsets(admin, {tp: LATEST for tp in every}, timeout),
        _request_offsets(admin, {tp: EARLIEST for tp in every}, timeout),
        _request_offsets(admin, {tp: OffsetSpec.for_timestamp(since_ms) for tp in outputs}, timeout),
    ]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-group") as pool:
        group = pool.submit(committed_offsets, config, group_id, reports_topic, partitions[reports_topic], timeout)
        try:
            ends, starts, at_since = (_offsets(r) for r in requests)
        except KafkaException as exc:
            raise StatusError(f"reading offsets from Kafka at {bootstrap} failed: {exc}") from None
        committed = group.result()

    def records(topic: str) -> TopicRecords:
        total = in_window = 0
        for p in partitions[topic]:
            end, start, first = ends[(topic, p)], starts[(topic, p)], at_since[(topic, p)]
            total += end - start
            in_window += 0 if first < 0 else end - max(first, start)
        return TopicRecords(topic=topic, records=total, in_window=in_window)

    lags = []
    for p in partitions[reports_topic]:
        end, start = ends[(reports_topic, p)], starts[(reports_topic, p)]
        done = committed.get((reports_topic, p))
        # Nothing committed yet: the subscription starts at the beginning (auto.offset.reset=earliest).
        lag = max(0, end - (start if done is None else done))
        lags.append(PartitionLag(partition=p, committed=done, end=end, lag=lag))
    return KafkaStatus(
        bootstrap_servers=bootstrap,
        tables=records(tables_topic),
        dead_letters=records(dlq_topic),
        consumer_group=ConsumerGroupLag(
            group_id=group_id,
            topic=reports_topic,
            subscription_id=subscription_id,
            partitions=lags,
            total_lag=sum(lag.lag for lag in lags),
        ),
    )
