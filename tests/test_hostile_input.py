"""Hostile input through the real stack: every record ends as exactly one table or dead letter
within a minute of arriving, whatever its bytes, and every record the worker publishes fits
the topic it goes to.

Each test prints `[measured]` lines: the time from the broker's ack of the input record to
its outcome on the output topic (`pytest -s` shows them).
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from tests.harness import DLQ, REPORTS, TABLES, OutputRecord, TestStack, unique

OUTCOME_WITHIN_S = 60.0
BROKER_MAX = 1_048_588  # Kafka's default max.message.bytes, which the session's topics keep


@dataclass(frozen=True)
class Sent:
    partition: int
    offset: int
    acked_at: float
    value: bytes

    @property
    def derived_id(self) -> str:
        return f"{REPORTS}/{self.partition}/{self.offset}"


def big_producer(stack: TestStack) -> Producer:
    # Our own producer: hostile records are larger than librdkafka's default message.max.bytes.
    return Producer({"bootstrap.servers": stack.cfg.kafka_bootstrap, "message.max.bytes": "2000000", "log_level": "0"})


def send(producer: Producer, value: bytes, key: bytes | None = None, topic: str = REPORTS) -> Sent:
    acked: list[Sent] = []

    def on_delivery(error: KafkaError | None, msg: Message) -> None:
        assert error is None, error
        acked.append(Sent(msg.partition() or 0, msg.offset() or 0, time.monotonic(), value))

    producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return acked[0]


def outcome(stack: TestStack, sent: Sent, timeout: float = OUTCOME_WITHIN_S) -> tuple[OutputRecord, float]:
    """The one output record whose source is `sent`; fails if there is none in time, or more than one."""
    deadline = sent.acked_at + timeout

    def matching() -> list[OutputRecord]:
        with stack.outputs._lock:
            every = [r for records in stack.outputs.by_key.values() for r in records]
        return [r for r in every if _source_of(r) == (REPORTS, sent.partition, sent.offset)]

    while not (found := matching()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no outcome for {sent.derived_id} within {timeout} s")
        time.sleep(0.1)
    seconds = time.monotonic() - sent.acked_at
    time.sleep(1.0)  # a second outcome would arrive right behind the first
    found = matching()
    assert len(found) == 1, f"{sent.derived_id}: {len(found)} outcomes: {[(r.topic, r.value[:200]) for r in found]}"
    return found[0], seconds


def _source_of(record: OutputRecord) -> tuple[str, int, int] | None:
    try:
        source = json.loads(record.value)["source"]
    except (ValueError, KeyError, TypeError):
        return None
    return (source.get("topic"), source.get("partition"), source.get("offset"))


def check_fits(record: OutputRecord, limit: int = BROKER_MAX) -> None:
    size = len(record.value) + len((record.key or "").encode())
    assert size <= limit, f"{record.topic} record of {size} bytes"


def test_lone_surrogates_in_the_message_and_in_the_id_are_rejected_at_intake(offline_stack: TestStack) -> None:
    stack = offline_stack
    producer = big_producer(stack)
    rid = unique("surrogate")
    in_message = send(producer, f'{{"id": "{rid}", "message": "Revenue was $5M \\ud800 up 3%"}}'.encode())
    in_id = send(producer, b'{"id": "bad-\\udfff-id", "message": "Revenue was $5M, up 3%"}')
    in_other_field = send(producer, f'{{"id": "{rid}-x", "message": "Revenue $5M", "note": ["\\udbff"]}}'.encode())

    for sent, report_id, where in [
        (in_message, rid, "the message"),
        (in_id, in_id.derived_id, 'the "id"'),  # the id cannot name it: the coordinates do
        (in_other_field, f"{rid}-x", "the field 'note[0]'"),
    ]:
        record, seconds = outcome(stack, sent)
        letter = record.json()
        assert record.topic == DLQ
        assert (letter["reason"], letter["report_id"], record.key) == ("lone_surrogate", report_id, report_id)
        assert letter["error"].startswith(where), letter["error"]
        assert letter["original_value"] == sent.value.decode()  # the JSON text, escape and all
        print(f"\n[measured] lone surrogate in {where}: outcome after {seconds:.2f} s", flush=True)


def test_an_id_of_several_hundred_kilobytes_is_rejected(offline_stack: TestStack) -> None:
    stack = offline_stack
    value = json.dumps({"id": "x" * 600_000, "message": "Revenue was $5M, up 3%"}).encode()
    sent = send(big_producer(stack), value)
    record, seconds = outcome(stack, sent)
    letter = record.json()
    assert (record.topic, letter["reason"], letter["report_id"]) == (DLQ, "id_too_long", sent.derived_id)
    assert "600000 bytes, over the limit of 1024" in letter["error"]
    check_fits(record)
    print(f"\n[measured] id of 600 KB: outcome after {seconds:.2f} s", flush=True)


def test_900_kb_of_three_byte_characters_is_one_dead_letter_that_fits(offline_stack: TestStack) -> None:
    stack = offline_stack
    rid = unique("euro")
    # 900 KB as UTF-8; as JSON escapes (\u20ac) a dead letter quoting it would need 1.8 MB.
    value = json.dumps({"id": rid, "message": "€" * 300_000}, ensure_ascii=False).encode()
    sent = send(big_producer(stack), value)
    record, seconds = outcome(stack, sent)
    letter = record.json()
    assert (record.topic, letter["reason"], record.key) == (DLQ, "too_large", rid)
    check_fits(record)
    assert letter["original_bytes"] == len(value)
    assert letter["original_sha256"] == hashlib.sha256(value).hexdigest()
    assert letter["original_value"] == value.decode()
    print(f"\n[measured] 900 KB of 3-byte characters: outcome after {seconds:.2f} s", flush=True)


# --- Output topics with small limits: what does not fit --------------------------------------


@dataclass(frozen=True)
class SmallTopics:
    tables: str
    dlq: str


TABLES_MAX, DLQ_MAX = 30_000, 20_000


def create_topic(stack: TestStack, name: str, max_message_bytes: int) -> None:
    admin = AdminClient({"bootstrap.servers": stack.cfg.kafka_bootstrap})
    topic = NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": str(max_message_bytes)})
    admin.create_topics([topic])[name].result(timeout=30)


def set_max_message_bytes(stack: TestStack, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": stack.cfg.kafka_bootstrap})
    entry = ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def read_all(stack: TestStack, topic: str, count: int, timeout: float = OUTCOME_WITHIN_S) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": stack.cfg.kafka_bootstrap, "group.id": unique("small"), "log_level": "0"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(message)
    finally:
        consumer.close()
    assert len(found) == count, f"{topic}: {len(found)} of {count} records"
    return found


@pytest.fixture
def small_topics(offline_stack: TestStack) -> Iterator[SmallTopics]:
    stack = offline_stack
    topics = SmallTopics(unique("small-tables"), unique("small-dlq"))
    create_topic(stack, topics.tables, TABLES_MAX)
    create_topic(stack, topics.dlq, DLQ_MAX)
    stack.use_worker_env({"TABLES_TOPIC": topics.tables, "DEAD_LETTER_TOPIC": topics.dlq})
    yield topics
    stack.use_worker_env()


def words(size: int) -> str:
    """`size` characters of random lower-case words: no numbers, and nothing compression could shrink."""
    rng = random.Random(size)
    text = ""
    while len(text) < size:
        text += "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) + " "
    return text[:size]


def many_metrics(n: int) -> str:
    return " ".join(f"Region {i} revenue was ${i + 1}.{i % 10}M, up {i % 90 + 1}%." for i in range(n))


def test_what_does_not_fit_the_output_topics_becomes_a_dead_letter_that_does(
    offline_stack: TestStack, small_topics: SmallTopics
) -> None:
    stack = offline_stack
    producer = big_producer(stack)
    fits, too_big, huge_original = unique("fits"), unique("wide"), unique("long")
    send(producer, json.dumps({"id": fits, "message": "Revenue was $5M, up 3%"}).encode())
    # 400 regions: the table record (metrics, markdown, ledger) is larger than the 30,000 bytes of its topic.
    wide = send(producer, json.dumps({"id": too_big, "message": many_metrics(400)}).encode())
    # No numbers, 45,000 bytes: its dead letter cannot carry the whole original in 20,000 bytes.
    text = words(45_000)
    long_value = json.dumps({"id": huge_original, "message": text}).encode()
    send(producer, long_value)

    [table] = read_all(stack, small_topics.tables, 1)
    assert table.key() == fits.encode()
    letters = {m.key(): (m, json.loads(m.value() or b"")) for m in read_all(stack, small_topics.dlq, 2)}
    for message, _ in letters.values():
        assert len(message.key() or b"") + len(message.value() or b"") <= DLQ_MAX

    _, wide_letter = letters[too_big.encode()]
    assert (wide_letter["reason"], wide_letter["failed_step"]) == ("output_too_large", "Publish table")
    assert "over the " in wide_letter["error"] and small_topics.tables in wide_letter["error"]
    assert wide_letter["source"]["offset"] == wide.offset
    assert wide_letter["original_bytes"] == len(wide.value)

    _, long_letter = letters[huge_original.encode()]
    assert long_letter["reason"] == "no_metrics"
    assert "original_value" in long_letter["shortened"]
    assert long_value.decode().startswith(long_letter["original_value"])
    assert len(long_letter["original_value"]) > 10_000, "as much of the original as fits is kept"
    assert (long_letter["original_bytes"], long_letter["original_sha256"]) == (
        len(long_value),
        hashlib.sha256(long_value).hexdigest(),
    )

    # The operator lowers the topic's limit below what the worker learned at its start: the
    # broker refuses the dead letter as too large, and a minimal one goes out instead of a pause.
    set_max_message_bytes(stack, small_topics.dlq, 2_000)
    lowered = unique("lowered")
    sent = send(producer, json.dumps({"id": lowered, "message": text[:15_000]}).encode())
    [_, _, minimal] = read_all(stack, small_topics.dlq, 3)
    letter = json.loads(minimal.value() or b"")
    assert (minimal.key(), letter["reason"], letter["original_value"]) == (lowered.encode(), "no_metrics", None)
    assert "original_value" in letter["shortened"]
    assert letter["original_sha256"] == hashlib.sha256(sent.value).hexdigest()
    print(f"\n[measured] minimal dead letter after the broker refused one: {time.monotonic() - sent.acked_at:.2f} s")


def test_an_unrelated_report_is_untouched(offline_stack: TestStack) -> None:
    # Control: an ordinary report in the same session still becomes a table keyed by its id.
    stack = offline_stack
    rid = unique("plain")
    sent = send(big_producer(stack), json.dumps({"id": rid, "message": "Uptime 99.9%, 3 incidents"}).encode())
    record, _ = outcome(stack, sent)
    assert (record.topic, record.key) == (TABLES, rid)
    assert record.json()["replay_of"] is None
