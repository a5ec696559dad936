"""`report-replay` (`python -m ops.replay`): dead letters go back to the input topic after a fix and come
out as tables under the same report id, marked as the replay of their original record; a second
replay, a dry run and a non-matching selector send nothing.

The pure part (what value is re-sent for which dead letter) is checked without Kafka; the
rest runs the CLI as a subprocess against the session's real stack.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from ops.arguments import since
from ops.replay import Skip, build_parser, replay_value
from testllm import LLMServer, Status
from tests.harness import DLQ, REPORTS, TABLES, TestStack, unique
from worker.models import DeadLetter, Source

LONG_REPORT = (
    "Quarterly review. Revenue was $12.5M, up 22%, with 340 employees across 7 offices. "
    "Gross margin held at 61% while churn fell to 2.1% and the pipeline reached $40.2M. " * 3
)


ORIGIN = {"topic": "reports", "partition": 1, "offset": 7}


def letter(value: str | None, encoding: str = "utf-8", report_id: str = "reports/1/7", **extra: Any) -> DeadLetter:
    return DeadLetter(
        report_id=report_id,
        reason="too_large",
        error="...",
        source=Source(topic="reports", partition=1, offset=7),
        invocation_id="inv_test",
        original_value=value,
        original_encoding=encoding,
        original_bytes=None if value is None or encoding != "utf-8" else len(value.encode()),
        **extra,
    )


# --- What is re-sent (no Kafka) ---------------------------------------------------------------


def test_an_object_keeps_its_fields_and_names_the_record_it_replays() -> None:
    original = '{"id": "q3", "message": "Uptime 99.97%", "extra": [1, 2]}'
    replayed = replay_value(letter(original, report_id="q3"))
    assert isinstance(replayed, bytes)
    assert json.loads(replayed) == {**json.loads(original), "replay_of": ORIGIN}


def test_plain_text_and_objects_without_id_are_wrapped_with_the_report_id() -> None:
    wrapped = replay_value(letter("  Revenue was $4M.\n"))
    assert isinstance(wrapped, bytes)
    assert json.loads(wrapped) == {"id": "reports/1/7", "message": "Revenue was $4M.", "replay_of": ORIGIN}
    wrapped = replay_value(letter('{"message": "Churn fell to 2%"}'))
    assert isinstance(wrapped, bytes)
    assert json.loads(wrapped) == {"message": "Churn fell to 2%", "id": "reports/1/7", "replay_of": ORIGIN}


def test_a_failed_replay_names_the_first_record_not_itself() -> None:
    # The dead letter of a replay: its own source is the replayed record, its origin the first one.
    again = letter('{"id": "q4", "message": "Uptime 99.9%"}', report_id="q4", replay_of=ORIGIN)
    again = again.model_copy(update={"source": Source(topic="reports", partition=3, offset=40)})
    replayed = replay_value(again)
    assert isinstance(replayed, bytes) and json.loads(replayed)["replay_of"] == ORIGIN


def test_an_invocation_that_never_came_from_kafka_is_not_replayed() -> None:
    forged = letter("Revenue was $4M.", report_id="inv_1").model_copy(update={"source": Source()})
    skipped = replay_value(forged)
    assert isinstance(skipped, Skip) and "never came from a Kafka record" in skipped.why


def test_a_dead_letter_that_kept_only_a_prefix_is_not_replayed() -> None:
    cut = letter('{"id": "q5", "message": "Revenue', report_id="q5").model_copy(
        update={"original_bytes": 90_000, "shortened": ["original_value"]}
    )
    skipped = replay_value(cut)
    assert isinstance(skipped, Skip) and "of the original's 90000 bytes" in skipped.why


@pytest.mark.parametrize(
    ("value", "encoding", "why"),
    [
        (None, "none", "null"),
        ("", "utf-8", "empty"),
        ("   ", "utf-8", "empty"),
        (base64.b64encode(b"Revenue \xff 5%").decode(), "base64", "invalid_utf8"),
        ("[1, 2]", "utf-8", "invalid_schema"),
        ("null", "utf-8", "invalid_schema"),
        ('"Revenue 5%"', "utf-8", "invalid_schema"),
        ('{"message": 42}', "utf-8", "invalid_schema"),
        ('{"text": "Revenue 5%"}', "utf-8", "invalid_schema"),
        ("x" * 256 * 1024, "utf-8", "first"),  # a dead letter from before original_bytes existed
    ],
)
def test_values_that_cannot_be_a_report_are_skipped_with_the_reason(value: str | None, encoding: str, why: str) -> None:
    outcome = replay_value(letter(value, encoding).model_copy(update={"original_bytes": None}))
    assert isinstance(outcome, Skip)
    assert why in outcome.why


def test_since_accepts_durations_and_iso_times() -> None:
    parser = build_parser()
    args = parser.parse_args(["--since", "30m"])
    assert abs(time.time() - 1800 - args.since.timestamp()) < 5
    assert since("2024-05-01T08:00:00+00:00").timestamp() == 1714550400
    with pytest.raises(SystemExit):
        parser.parse_args(["--since", "yesterday"])


# --- Against the real stack -------------------------------------------------------------------


def run_cli(stack: TestStack, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = stack.cfg.kafka_bootstrap
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def replay(stack: TestStack, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(stack, "ops.replay", "--timeout", "30", *args)
    print(result.stdout, result.stderr, flush=True)
    return result


def end_offsets(stack: TestStack, topic: str = REPORTS) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": stack.cfg.kafka_bootstrap, "group.id": unique("offsets")})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def send_with_coordinates(stack: TestStack, value: bytes) -> str:
    """Send a record without id; returns the report id the worker derives from where it landed."""
    producer = Producer({"bootstrap.servers": stack.cfg.kafka_bootstrap})
    where: list[str] = []

    def on_delivery(error: KafkaError | None, msg: Message) -> None:
        assert error is None, error
        where.append(f"{REPORTS}/{msg.partition()}/{msg.offset()}")

    producer.produce(REPORTS, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return where[0]


def only_record(stack: TestStack, report_id: str, topic: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for `report_id`'s record on `topic`; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [r for r in stack.outputs.records(report_id) if r.topic == topic]
        if records:
            assert len(records) == 1, f"{report_id}: {len(records)} records on {topic}"
            return records[0].json()
        time.sleep(0.1)
    raise AssertionError(f"no record for {report_id} on {topic} within {timeout} s")


@pytest.fixture
def offline(stack: TestStack) -> Iterator[TestStack]:
    yield stack
    stack.stack.up()
    stack.use_worker_env()


def test_a_too_large_report_replayed_after_raising_the_limit_becomes_one_table(offline: TestStack) -> None:
    stack = offline
    stack.use_worker_env({"MAX_MESSAGE_BYTES": "100"})
    rid = send_with_coordinates(stack, LONG_REPORT.encode())  # plain text: its id is derived
    dead = only_record(stack, rid, DLQ)
    assert dead["reason"] == "too_large"
    stack.use_worker_env()  # the fix: the default limit

    before = end_offsets(stack)
    dry = replay(stack, "--report-id", rid, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would re-send  {rid}" in dry.stdout and "re-sent 0" in dry.stdout
    assert end_offsets(stack) == before, "--dry-run sent something"

    started = time.monotonic()
    first = replay(stack, "--report-id", rid)
    assert first.returncode == 0, first.stderr
    assert "selected 1, re-sent 1, skipped 0, failed 0" in first.stdout
    table = only_record(stack, rid, TABLES)
    replayed_in = time.monotonic() - started
    assert table["report_id"] == rid
    assert table["source"]["key"] == rid  # the replayed record is keyed and named by the same id
    # ... and names the record it replays: readers show this table as that record's outcome.
    assert table["replay_of"] == {k: dead["source"][k] for k in ("topic", "partition", "offset")}
    assert (
        table["source"]["offset"] != dead["source"]["offset"]
        or table["source"]["partition"] != dead["source"]["partition"]
    )
    assert len(table["metrics"]) >= 5

    after_first = end_offsets(stack)
    second = replay(stack, "--report-id", rid)
    assert second.returncode == 0, second.stderr
    assert "a table was published after the dead letter" in second.stdout
    assert "re-sent 0" in second.stdout
    assert end_offsets(stack) == after_first, "the second replay sent the report again"

    shown = run_cli(stack, "ops.results", "--json", "--id", rid, "--timeout", "30")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(line["kind"], line["report_id"]) for line in lines] == [("table", rid)]
    print(f"\n[measured] replay to table: {replayed_in:.1f} s", flush=True)


def test_a_report_dead_lettered_by_a_rejected_key_replays_once_the_llm_accepts_it(offline: TestStack) -> None:
    stack = offline
    server = LLMServer().start()
    try:
        stack.use_worker_env(
            {"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url}
        )
        rid = unique("replay-401")
        server.script(rid, "extract", [Status(401)])
        original = {"id": rid, "message": "Uptime reached 99.95% with 3 incidents and an MTTR of 18 minutes."}
        stack.send(original, key=rid)
        stack.flush()
        dead = only_record(stack, rid, DLQ)
        assert (dead["reason"], dead["failed_step"]) == ("step_failed", "Extract metrics")
        assert len(server.calls(rid, "extract")) == 1

        result = replay(stack, "--report-id", rid, "--reason", "step_failed")
        assert result.returncode == 0, result.stderr
        assert "re-sent 1" in result.stdout
        table = only_record(stack, rid, TABLES)
        assert table["report_id"] == rid
        # The original JSON went back unchanged; now the LLM answers: one successful call per step.
        for step in ("extract", "sort", "format"):
            assert len(server.successful_calls(rid, step)) == 1, step
    finally:
        server.stop()


def test_selectors_choose_only_matching_dead_letters(offline: TestStack) -> None:
    stack = offline
    stack.use_worker_env({"MAX_MESSAGE_BYTES": "100"})
    large, quiet = unique("sel-large"), unique("sel-quiet")
    stack.send({"id": large, "message": LONG_REPORT}, key=large)
    stack.send({"id": quiet, "message": "All quiet this week, nothing to report."}, key=quiet)
    stack.flush()
    assert only_record(stack, large, DLQ)["reason"] == "too_large"
    assert only_record(stack, quiet, DLQ)["reason"] == "no_metrics"
    ids = ["--report-id", large, "--report-id", quiet]

    before = end_offsets(stack)
    by_reason = replay(stack, *ids, "--reason", "no_metrics", "--dry-run")
    assert by_reason.returncode == 0, by_reason.stderr
    assert quiet in by_reason.stdout and large not in by_reason.stdout
    assert "selected 1," in by_reason.stdout

    recent = replay(stack, *ids, "--since", "10m", "--dry-run")
    assert "selected 2," in recent.stdout
    future = replay(stack, *ids, "--since", "2999-01-01T00:00:00+00:00", "--dry-run")
    assert "selected 0," in future.stdout
    assert future.returncode == 1, "asked-for report ids without a dead letter must fail"

    missing = replay(stack, "--report-id", unique("nowhere"), "--dry-run")
    assert missing.returncode == 1 and "no dead letter" in missing.stderr
    usage = replay(stack, "--dry-run")
    assert usage.returncode == 2, "no selector and no --all"
    assert end_offsets(stack) == before, "a dry run sent something"
