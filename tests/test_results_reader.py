"""The results reader against the real broker: records are produced straight onto
`tables` / `reports.dlq` (no worker involved), so every case is exact."""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import pytest

from ops.kafka import consumer_config
from ops.results import ReaderError, ReadOptions, Result, read_results
from tests.harness import DLQ, TABLES, TestStack, unique
from worker.models import DeadLetter, Ledger, Metric, Source, SourceRef, TableRecord

TABLE = "| Metric | Value | Unit |\n|---|---|---|\n| Revenue | 12500000 | USD |\n| Churn | 2.1 | % |"
# Every record here is a report of its own: its own input coordinates (the reader's identity of a report).
_offsets = itertools.count(random.randrange(10**9, 2 * 10**9))


def source() -> Source:
    return Source(topic="reports", partition=0, offset=next(_offsets))


def table_record(report_id: str, at: Source | None = None, replay_of: SourceRef | None = None) -> TableRecord:
    return TableRecord(
        report_id=report_id,
        table=TABLE,
        metrics=[Metric(name="Revenue", value=12_500_000, unit="USD"), Metric(name="Churn", value=2.1, unit="%")],
        source=at or source(),
        invocation_id=f"inv_{next(_offsets)}",
        ledger=Ledger.of([]),
        replay_of=replay_of,
    )


def dead_letter(report_id: str, at: Source | None = None) -> DeadLetter:
    return DeadLetter(
        report_id=report_id,
        reason="invalid_schema",
        error='"message" must be a string, it is missing',
        failed_step="Extract metrics",
        source=at or source(),
        invocation_id=f"inv_{next(_offsets)}",
        original_value='{"id": "x"}',
    )


def encode(record: TableRecord | DeadLetter) -> bytes:
    # As the worker publishes: compact, key-sorted JSON.
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture
def published(stack: TestStack) -> tuple[str, str]:
    """A table published twice under one key (the at-least-once duplicate) and a dead letter."""
    table_id, dead_id = unique("res-table"), unique("res-dead")
    table = encode(table_record(table_id))
    stack.send(table, key=table_id, topic=TABLES)
    stack.send(table, key=table_id, topic=TABLES)
    stack.send(encode(dead_letter(dead_id)), key=dead_id, topic=DLQ)
    stack.flush()
    return table_id, dead_id


def run_results(args: Sequence[str], bootstrap: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return subprocess.run(
        [sys.executable, "-m", "ops.results", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_json_output_prints_each_id_once_with_its_kind(stack: TestStack, published: tuple[str, str]) -> None:
    table_id, dead_id = published
    result = run_results(["--json", "--id", table_id, "--id", dead_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((line["report_id"], line["kind"]) for line in lines) == sorted(
        [(table_id, "table"), (dead_id, "dead_letter")]
    )
    table = next(line for line in lines if line["kind"] == "table")
    assert table["table"] == TABLE and table["metrics"][0] == {"name": "Revenue", "value": 12_500_000, "unit": "USD"}
    dead = next(line for line in lines if line["kind"] == "dead_letter")
    assert (dead["reason"], dead["failed_step"]) == ("invalid_schema", "Extract metrics")


def test_human_output_shows_the_table_and_the_dead_letter(stack: TestStack, published: tuple[str, str]) -> None:
    table_id, dead_id = published
    result = run_results(["--id", table_id, "--id", dead_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"## {table_id}\n") == 1
    assert f"## {table_id}\n{TABLE}\n" in result.stdout
    expected = f'## {dead_id}\nDEAD LETTER invalid_schema at Extract metrics: "message" must be a string, it is missing'
    assert expected in result.stdout


def test_without_ids_it_stops_when_caught_up_and_deduplicates(stack: TestStack, published: tuple[str, str]) -> None:
    table_id, dead_id = published
    result = run_results(["--json", "--timeout", "50"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    ids = [line["report_id"] for line in lines]
    assert ids.count(table_id) == 1 and ids.count(dead_id) == 1
    reports = [line["origin"] for line in lines]
    assert len(reports) == len(set(reports)), "a report shown twice"


def test_missing_id_times_out_with_exit_1(stack: TestStack, published: tuple[str, str]) -> None:
    table_id, _ = published
    missing = unique("res-missing")
    started = time.monotonic()
    result = run_results(["--id", table_id, "--id", missing, "--timeout", "3"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 1
    assert time.monotonic() - started < 15
    assert f"## {table_id}" in result.stdout  # what did arrive is still shown
    assert f"1 report(s) did not arrive: {missing}" in result.stderr


def test_from_now_waits_for_new_results_and_says_so(stack: TestStack, published: tuple[str, str]) -> None:
    """`--from-now` alone used to exit at once with nothing: it now waits, like --follow, and says it does."""
    late_id = unique("res-from-now")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = stack.cfg.kafka_bootstrap
    reader = subprocess.Popen(
        [sys.executable, "-m", "ops.results", "--json", "--from-now", "--max", "1", "--timeout", "60"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stderr is not None
    note = reader.stderr.readline()  # printed once the reader is positioned at the end of the topics
    assert "reading results published from now on" in note, note
    stack.send(encode(table_record(late_id)), key=late_id, topic=TABLES)
    stack.flush()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert [json.loads(line)["report_id"] for line in out.splitlines()] == [late_id]
    assert published[0] not in out  # published before it started


def test_max_stops_after_n_results(stack: TestStack, published: tuple[str, str]) -> None:
    result = run_results(
        ["--json", "--max", "1", "--id", published[0], "--id", published[1]], stack.cfg.kafka_bootstrap
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_library_follow_sees_new_results_as_they_arrive(stack: TestStack) -> None:
    late_id = unique("res-late")
    seen: list[Result] = []
    stop = threading.Event()

    def on_result(result: Result) -> None:
        seen.append(result)
        stop.set()

    options = ReadOptions(from_beginning=False, follow=True, ids=frozenset({late_id}), timeout=30)
    positioned = threading.Event()
    reader = threading.Thread(
        target=read_results,
        args=(consumer_config(stack.cfg.kafka_bootstrap, {}), options, on_result, stop, positioned.set),
    )
    reader.start()
    assert positioned.wait(timeout=30), "the reader did not position itself at the end of the topics"
    stack.send(encode(table_record(late_id)), key=late_id, topic=TABLES)
    stack.flush()
    reader.join(timeout=40)
    assert [(r.report_id, r.kind) for r in seen] == [(late_id, "table")]
    assert isinstance(seen[0].record, TableRecord) and seen[0].record.metrics[0].value == 12_500_000
    assert seen[0].timestamp_ms is not None


def test_library_counts_duplicates_and_skips_foreign_records(stack: TestStack) -> None:
    dup_id, junk_id = unique("res-dup"), unique("res-junk")
    stack.send(b"not a table record", key=junk_id, topic=TABLES)
    table = encode(table_record(dup_id))
    for _ in range(3):
        stack.send(table, key=dup_id, topic=TABLES)
    stack.flush()
    summary = read_results(consumer_config(stack.cfg.kafka_bootstrap, {}), ReadOptions(timeout=30))
    assert summary.duplicates >= 2 and summary.skipped >= 1 and not summary.timed_out


def test_unknown_topic_and_unreachable_broker_exit_1(stack: TestStack) -> None:
    result = run_results(["--tables-topic", unique("no-such-topic"), "--timeout", "10"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 1 and "cannot read topic" in result.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = run_results(["--timeout", "2"], f"127.0.0.1:{port}")
    assert result.returncode == 1 and "cannot reach Kafka" in result.stderr
    assert time.monotonic() - started < 15
    with pytest.raises(ReaderError):
        read_results(consumer_config(f"127.0.0.1:{port}", {}), ReadOptions(timeout=1))


def test_help_and_usage_errors() -> None:
    result = run_results(["--help"], "127.0.0.1:1")
    assert result.returncode == 0
    for option in (
        "--tables-topic",
        "--dlq-topic",
        "--from-beginning",
        "--from-now",
        "--follow",
        "--json",
        "--id",
        "--max",
    ):
        assert option in result.stdout
    assert run_results(["--max", "0"], "127.0.0.1:1").returncode == 2
    assert run_results(["--from-now", "--from-beginning"], "127.0.0.1:1").returncode == 2


def test_a_replayed_report_shows_its_table_not_its_earlier_dead_letter(stack: TestStack) -> None:
    # The dead letter comes first; the table arrives much later on a topic with more data
    # than one fetch, as after `report-replay`. The report's outcome is the table.
    report_id = unique("res-replayed")
    first = source()
    stack.send(encode(dead_letter(report_id, at=first)), key=report_id, topic=DLQ)
    filler = encode(table_record(unique("res-filler")))
    for _ in range(3000):
        stack.send(filler, key="filler", topic=TABLES)
    replayed = SourceRef(topic="reports", partition=0, offset=first.offset or 0)
    stack.send(encode(table_record(report_id, replay_of=replayed)), key=report_id, topic=TABLES)
    stack.flush()
    result = run_results(["--json", "--id", report_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [(line["report_id"], line["kind"], line["origin"]) for line in lines] == [
        (report_id, "table", str(replayed))
    ]
    human = run_results(["--id", report_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert f"## {report_id}  (replay of {replayed})\n" in human.stdout


def test_two_reports_with_one_id_are_both_shown_and_flagged(stack: TestStack) -> None:
    report_id = unique("res-reused")
    stack.send(encode(table_record(report_id)), key=report_id, topic=TABLES)
    stack.send(encode(dead_letter(report_id)), key=report_id, topic=DLQ)
    stack.send(encode(table_record(report_id)), key=report_id, topic=TABLES)
    stack.flush()
    result = run_results(["--json", "--id", report_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["kind"] for line in lines) == ["dead_letter", "table", "table"]
    assert len({line["origin"] for line in lines}) == 3
    assert [line["id_reused"] for line in lines].count(True) == 2  # flagged from the second one on
    assert "1 report id(s) carried by more than one report" in result.stderr


def test_ids_and_tables_are_printed_safely(stack: TestStack) -> None:
    # An id that would clear the screen, and a metric name with a terminal escape in the table.
    report_id = unique("res-esc") + "\x1b[2J\u202e"
    record = table_record(report_id).model_copy(update={"table": TABLE + "\n| \x1b[31mRed | 1 | |"})
    stack.send(encode(record), key=report_id, topic=TABLES)
    stack.flush()
    result = run_results(["--id", report_id, "--timeout", "30"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b[2J\\u202e" in result.stdout and "| \\x1b[31mRed | 1 | |" in result.stdout
    assert TABLE in result.stdout  # newlines of the table are kept
