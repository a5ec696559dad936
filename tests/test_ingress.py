"""Only Kafka records make tables. Restate runs without its HTTP ingress (restate.toml), so a
forged call is refused at the door; where the ingress must stay open, VERIFY_KAFKA_SOURCE makes
the worker read the claimed record back from Kafka, and a call that is not that record ends as a
`no_source` dead letter without coordinates, never as a table."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.harness import DLQ, REPORTS, TABLES, TestStack, unique

FORGED_TEXT = "Revenue was $999M, up 900%."


def forge(stack: TestStack, body: bytes, **coordinates: object) -> httpx.Response:
    headers = {f"kafka.{name}": str(value) for name, value in coordinates.items()}
    return httpx.post(
        f"{stack.cfg.ingress_url}/ReportChain/process",
        content=body,
        headers={"content-type": "text/plain", **headers},
        timeout=30,
    )


def produce(stack: TestStack, value: bytes, key: str) -> tuple[int, int]:
    producer = Producer({"bootstrap.servers": stack.cfg.kafka_bootstrap, "log_level": "0"})
    where: list[tuple[int, int]] = []

    def on_delivery(error: KafkaError | None, msg: Message) -> None:
        assert error is None, error
        where.append((msg.partition() or 0, msg.offset() or 0))

    producer.produce(REPORTS, key=key.encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return where[0]


def test_the_ingress_is_closed_and_kafka_records_still_make_tables(offline_stack: TestStack) -> None:
    stack = offline_stack
    with pytest.raises(httpx.ConnectError):
        forge(stack, FORGED_TEXT.encode(), topic=REPORTS, partition=0, offset=999_999)
    rid = unique("no-ingress")
    stack.send({"id": rid, "message": "Uptime was 99.95% with 2 incidents."}, key=rid)
    stack.flush()
    [table] = stack.outputs.wait_for([rid])[rid]
    assert table.topic == TABLES


@pytest.fixture
def open_ingress(offline_stack: TestStack) -> Iterator[TestStack]:
    stack = offline_stack
    stack.stack.restate.http_ingress = True
    stack.stack.restart("restate")
    try:
        stack.use_worker_env({"VERIFY_KAFKA_SOURCE": "true"})
        yield stack
    finally:
        stack.stack.restate.http_ingress = False
        stack.stack.restart("restate")
        stack.use_worker_env()


def test_with_the_ingress_open_a_forged_call_makes_no_table(open_ingress: TestStack) -> None:
    stack = open_ingress
    rid = unique("real")
    real = json.dumps({"id": rid, "message": "Churn fell to 2.1% across 480 accounts."}).encode()
    partition, offset = produce(stack, real, rid)
    [table] = stack.outputs.wait_for([rid])[rid]  # verified against Kafka: a real record still becomes a table
    assert table.topic == TABLES

    calls = {
        "other content at a real record's coordinates": forge(
            stack, FORGED_TEXT.encode(), topic=REPORTS, partition=partition, offset=offset
        ),
        "a record that does not exist": forge(stack, FORGED_TEXT.encode(), topic=REPORTS, partition=0, offset=999_999),
        "another topic": forge(stack, FORGED_TEXT.encode(), topic=TABLES, partition=0, offset=0),
        "no coordinates at all": forge(stack, FORGED_TEXT.encode()),
    }
    for what, response in calls.items():
        assert response.status_code == 200, (what, response.text)
        outcome = response.json()
        assert (outcome["outcome"], outcome["reason"]) == ("dead_letter", "no_source"), (what, outcome)
        assert outcome["delivery"]["topic"] == DLQ
        [letter] = stack.outputs.wait_for([outcome["report_id"]])[outcome["report_id"]]
        value = letter.json()
        assert value["report_id"].startswith("inv_"), what  # named by its invocation, not by claimed coordinates
        assert value["source"] == {"topic": None, "partition": None, "offset": None, "timestamp": None, "key": None}
        assert "only records from the Kafka subscription are processed" in value["error"]

    time.sleep(1)  # anything else the forged calls published would have arrived by now
    forged_tables = [
        r
        for records in list(stack.outputs.by_key.values())
        for r in records
        if r.topic == TABLES and "999" in r.json().get("table", "")
    ]
    assert forged_tables == []
    assert [r.topic for r in stack.outputs.records(rid)] == [TABLES], "the real record has exactly its one table"
