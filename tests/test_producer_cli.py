"""The report producer: line parsing, samples and the generator (unit), and the
CLI against the real Kafka broker of the session stack (integration)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from ops.kafka import consumer_config
from ops.results import watermark_offsets
from producer.generate import generate_reports
from producer.kafka import producer_config
from producer.reports import LineError, OutgoingReport, load_samples, parse_lines, parse_text, with_ids
from producer.send import DeliveryReport, DeliverySummary, send
from tests.harness import REPORTS, OutputRecord, TestStack, unique
from worker.intake import read_report
from worker.models import Report
from worker.providers.offline import extract_metrics
from worker.settings import describe_kafka

# --- line parsing ---------------------------------------------------------------------------------


def test_json_line_keeps_only_id_and_message() -> None:
    line = json.dumps({"id": "r-1", "message": " Revenue was $3M. ", "expected": [{"name": "Revenue"}], "x": 1})
    report = parse_text(line)
    assert report == OutgoingReport(id="r-1", message="Revenue was $3M.")
    assert isinstance(report, OutgoingReport)
    assert json.loads(report.value()) == {"id": "r-1", "message": "Revenue was $3M."}
    assert report.key() == b"r-1"


def test_plain_line_is_sent_as_the_text_itself_without_a_key() -> None:
    report = parse_text("  Uptime was 99.9% in May\n")
    assert isinstance(report, OutgoingReport)
    assert (report.id, report.value(), report.key()) == (None, b"Uptime was 99.9% in May", None)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"id": "r-1"}', '"message" must be a non-empty string'),
        ('{"message": 3}', '"message" must be a non-empty string'),
        ('{"message": "   "}', '"message" must be a non-empty string'),
        ('{"id": true, "message": "3 incidents"}', '"id" must be a non-empty string'),
        ('{"id": " ", "message": "3 incidents"}', '"id" must be a non-empty string'),
        ('{"id": ["a"], "message": "3 incidents"}', '"id" must be a non-empty string'),
    ],
)
def test_invalid_json_objects_are_errors(line: str, error: str) -> None:
    assert parse_text(line) == error


def test_numeric_id_becomes_text_and_blank_lines_are_nothing() -> None:
    assert parse_text('{"id": 42, "message": "3 incidents"}') == OutgoingReport(id="42", message="3 incidents")
    assert parse_text("   \n") is None


@pytest.mark.parametrize("line", ["[1, 2, 3]", "42", '"quoted"', "{not json, revenue $3M", "null"])
def test_lines_that_are_not_json_objects_are_plain_text(line: str) -> None:
    report = parse_text(line)
    assert isinstance(report, OutgoingReport) and report.message == line and report.id is None


@pytest.mark.parametrize(
    "report",
    [
        OutgoingReport(message="Revenue was $3M"),
        OutgoingReport(message="[1, 2, 3]"),  # valid JSON: must be wrapped, or the worker rejects its shape
        OutgoingReport(message="42"),
        OutgoingReport(message="{broken"),
        OutgoingReport(id="r-9", message="Umsatz: 2,5 Mio. EUR"),
    ],
)
def test_the_worker_reads_back_exactly_what_was_sent(report: OutgoingReport) -> None:
    headers = {"kafka.topic": "reports", "kafka.partition": "1", "kafka.offset": "7"}
    read = read_report(report.value(), headers, "inv_1", 64 * 1024)
    assert isinstance(read, Report), read
    assert read.message == report.message
    assert read.report_id == (report.id or "reports/1/7")


def test_parse_lines_numbers_errors_and_skips_blanks() -> None:
    lines: list[str | bytes] = [b"Revenue was $3M\n", b"\n", b'{"id": "a"}\n', b"\xff\xfe bad\n", "3 incidents"]
    items = list(parse_lines(lines))
    assert items[0] == OutgoingReport(message="Revenue was $3M")
    assert items[1] == LineError(3, '"message" must be a non-empty string')
    assert isinstance(items[2], LineError) and items[2].line == 4 and "UTF-8" in items[2].error
    assert items[3] == OutgoingReport(message="3 incidents")
    assert len(items) == 4


def test_id_prefix_names_only_reports_without_an_id() -> None:
    reports = [OutgoingReport(message="a"), OutgoingReport(id="keep", message="b"), OutgoingReport(message="c")]
    assert [r.id for r in with_ids(reports, "run7")] == ["run7-000001", "keep", "run7-000003"]
    assert [r.id for r in with_ids(reports, None)] == [None, "keep", None]


# --- samples and the generator --------------------------------------------------------------------


def test_bundled_samples() -> None:
    samples = load_samples()
    assert [s.id for s in samples] == [f"sample-{i:02d}" for i in range(1, 13)]
    text = " ".join(s.message for s in samples)
    for feature in (
        "$12.5M",
        "$46k",
        "ms",
        "minutes",
        "EUR",
        "million",
        "cubic metres",
        "-$2.3M",
        "2,5 Mio.",
        "percent",
    ):
        assert feature in text, feature
    assert "between $40M and $45M" in text  # a range
    values = {(e.name, e.value, e.unit) for s in samples for e in s.expected}
    assert ("Revenue", 12_500_000, "USD") in values  # fully scaled
    assert ("Revenue", 2_500_000, "EUR") in values  # German notation
    assert any(v < 0 for _, v, _ in values)
    assert all(s.expected for s in samples)
    # Only id and message go on the wire.
    assert set(json.loads(samples[0].value())) == {"id", "message"}
    assert [s.id for s in load_samples(id_prefix="demo3")][:2] == ["demo3-sample-01", "demo3-sample-02"]


def test_generator_is_deterministic_by_seed() -> None:
    first = list(generate_reports(50, seed=7, id_prefix="g"))
    assert first == list(generate_reports(50, seed=7, id_prefix="g"))
    assert [r.message for r in first] != [r.message for r in generate_reports(50, seed=8)]
    assert [r.id for r in first[:2]] == ["g-000001", "g-000002"]
    assert all(r.id is None for r in generate_reports(3))


def test_generator_is_varied() -> None:
    reports = list(generate_reports(300, seed=1))
    assert len({r.message for r in reports}) == 300
    units = Counter(e.unit for r in reports for e in r.expected)
    assert {"USD", "EUR", "%", "ms", "min", "days", "m3", "MW", ""} <= set(units)
    text = " ".join(r.message for r in reports)
    for feature in ("M ", "k ", "million", "Mio. EUR", "percent", "per cent", "€", "-$", "days"):
        assert feature in text, feature
    assert {len(r.expected) for r in reports} >= {2, 3, 4, 5}


def test_generated_expectations_match_what_the_offline_extractor_reads() -> None:
    # The benchmarks score extraction against `expected`: the text must state exactly those values.
    for report in generate_reports(500, seed=3):
        got = sorted((m.value, m.unit) for m in extract_metrics(report.message))
        assert got == sorted((e.value, e.unit) for e in report.expected), report.message


# --- configs ----------------------------------------------------------------------------------------


def test_configs_copy_the_base_and_apply_overrides() -> None:
    base = {"bootstrap.servers": "a:1", "sasl.password": "s3cret", "linger.ms": "50"}
    before = dict(base)
    producer = producer_config("b:2", base, delivery_timeout=2.5)
    consumer = consumer_config(None, base)
    assert base == before
    assert producer["bootstrap.servers"] == "b:2" and producer["message.timeout.ms"] == "2500"
    assert producer["linger.ms"] == "50"  # the user's value wins over our default
    assert consumer["bootstrap.servers"] == "a:1" and consumer["enable.auto.commit"] == "false"
    assert consumer["group.id"] != consumer_config(None, base)["group.id"]
    assert "s3cret" not in describe_kafka(producer) and "sasl.password=***" in describe_kafka(producer)


def test_config_comes_from_kafka_environment(monkeypatch: pytest.MonkeyPatch, reread_settings: None) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9")
    monkeypatch.setenv("KAFKA_MESSAGE_TIMEOUT_MS", "1234")
    assert producer_config()["bootstrap.servers"] == "env:9"
    assert producer_config()["message.timeout.ms"] == "1234"
    assert producer_config("cli:1")["bootstrap.servers"] == "cli:1"


def test_summary_is_ok_only_when_everything_was_delivered() -> None:
    ok = DeliverySummary(topic="reports", sent=3, delivered=3, failed=0, elapsed_s=0.5)
    assert ok.ok and ok.rate == 6.0
    bad = DeliverySummary(topic="reports", sent=3, delivered=2, failed=1, elapsed_s=1, errors={"Local: timed out": 1})
    assert not bad.ok and "1 x Local: timed out" in bad.describe()


# --- the CLI, without a broker --------------------------------------------------------------------


def run_cli(
    args: Sequence[str], bootstrap: str, stdin: str | bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    data = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        env=env,
        input=data,
        stdin=None if data is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [
        ["--generate", "0"],
        ["--generate", "many"],
        ["text", "--file", "x.jsonl"],
        ["--file", "/no/such/file.jsonl"],
        ["--samples", "--generate", "3"],
        [""],
        ["--bogus"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli(args, "127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "usage: report-producer" in result.stderr


def test_help_describes_every_option() -> None:
    result = run_cli(["--help"], "127.0.0.1:1")
    assert result.returncode == 0
    for option in ("--file", "--generate", "--seed", "--samples", "--id-prefix", "--topic", "--timeout", "--quiet"):
        assert option in result.stdout
    assert "exit codes" in result.stdout


def test_unreachable_broker_exits_1_quickly() -> None:
    started = time.monotonic()
    result = run_cli(["--timeout", "2", "Revenue was $3M"], f"127.0.0.1:{unused_port()}", timeout=30)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 15
    assert "delivered 0 of 1" in result.stderr and "failed 1" in result.stderr
    assert "Message timed out" in result.stderr


# --- the CLI against the real broker -----------------------------------------------------------------


class TopicTail:
    """Records appended to a topic after this object was made (all partitions)."""

    def __init__(self, bootstrap: str, topic: str = REPORTS) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.consumer = Consumer({**consumer_config(bootstrap, {}), "enable.partition.eof": "false"})
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.start = {p: watermark_offsets(self.consumer, TopicPartition(topic, p), 10)[1] for p in partitions}

    def read(self, expected: int, timeout: float = 30) -> list[OutputRecord]:
        """Everything appended since creation: at least `expected` records, plus any that follow within 1 s."""
        self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in self.start.items()])
        records: list[OutputRecord] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < (deadline if quiet_until is None else quiet_until):
            msg = self.consumer.poll(0.1)
            if msg is not None and not msg.error():
                key = msg.key()
                value, partition, offset = msg.value() or b"", msg.partition() or 0, msg.offset() or 0
                records.append(OutputRecord(msg.topic() or "", key.decode() if key else None, value, partition, offset))
            if quiet_until is None and len(records) >= expected:
                quiet_until = time.monotonic() + 1.0  # a duplicate would arrive right behind
        self.consumer.close()
        return records


def mine(records: list[OutputRecord], run: str) -> dict[str | None, list[OutputRecord]]:
    """Records of this test only (other tests share the topic), by key."""
    by_key: dict[str | None, list[OutputRecord]] = {}
    for record in records:
        if run in (record.key or "") or run in record.value.decode(errors="replace"):
            by_key.setdefault(record.key, []).append(record)
    return by_key


def test_args_are_sent_and_become_tables(stack: TestStack) -> None:
    run = unique("cli-args")
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(
        ["--id-prefix", run, "Revenue was $12.5M and churn was 2.1%.", "Tail latency reached 840 ms over 37 minutes."],
        stack.cfg.kafka_bootstrap,
    )
    assert result.returncode == 0, result.stderr
    assert "delivered 2 of 2 records to reports" in result.stderr

    printed = [line.split()[0] for line in result.stdout.splitlines()]
    ids = sorted(printed)
    assert len(ids) == 2 and all(re.fullmatch(rf"{run}-[0-9a-f]{{6}}-00000[12]", i) for i in ids), result.stdout
    by_key = mine(tail.read(2), run)
    assert sorted(k for k in by_key if k) == ids
    assert all(len(records) == 1 for records in by_key.values())
    assert json.loads(by_key[ids[0]][0].value) == {"id": ids[0], "message": "Revenue was $12.5M and churn was 2.1%."}
    # And the worker turned them into tables.
    outputs = stack.outputs.wait_for(ids, timeout=90)
    assert {records[0].topic for records in outputs.values()} == {"tables"}


def test_stdin_lines_json_and_plain(stack: TestStack) -> None:
    run = unique("cli-stdin")
    lines = [
        json.dumps({"id": f"{run}-json", "message": f"{run}: revenue was $3M", "expected": [{"name": "x"}]}),
        "",
        f"{run}: 14 incidents were closed",
        f"{run}: availability was 99.95%",
    ]
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(["-"], stack.cfg.kafka_bootstrap, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr

    by_key = mine(tail.read(3), run)
    assert json.loads(by_key[f"{run}-json"][0].value) == {"id": f"{run}-json", "message": f"{run}: revenue was $3M"}
    plain = sorted(r.value for r in by_key[None])  # no id, no key: sent as the text itself
    assert plain == sorted([f"{run}: 14 incidents were closed".encode(), f"{run}: availability was 99.95%".encode()])


def test_stdin_is_read_without_dash_when_piped(stack: TestStack) -> None:
    run = unique("cli-pipe")
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(["--id-prefix", run, "--quiet"], stack.cfg.kafka_bootstrap, stdin="Revenue was $3M\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""  # --quiet
    [key] = list(mine(tail.read(1), run))
    assert key is not None and key.startswith(f"{run}-") and key.endswith("-000001")


def test_jsonl_file_with_an_invalid_line_sends_the_rest_and_exits_1(stack: TestStack, tmp_path: Path) -> None:
    run = unique("cli-file")
    file = tmp_path / "reports.jsonl"
    file.write_text(
        "\n".join(
            [
                json.dumps({"id": f"{run}-a", "message": "Revenue was $3M"}),
                json.dumps({"id": f"{run}-b"}),  # no message
                json.dumps({"id": f"{run}-c", "message": "Churn was 2%"}),
            ]
        )
    )
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(["--file", str(file)], stack.cfg.kafka_bootstrap)
    assert result.returncode == 1
    assert "line 2" in result.stderr and "1 invalid input line(s) not sent" in result.stderr
    assert "delivered 2 of 2" in result.stderr
    assert sorted(k or "" for k in mine(tail.read(2), run)) == [f"{run}-a", f"{run}-c"]


def test_jsonl_file_is_sent(stack: TestStack, tmp_path: Path) -> None:
    run = unique("cli-file-ok")
    samples = load_samples(id_prefix=run)
    file = tmp_path / "samples.jsonl"
    file.write_text("\n".join(s.model_dump_json() for s in samples) + "\n")
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(["--file", str(file)], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    by_key = mine(tail.read(12), run)
    assert sorted(k or "" for k in by_key) == sorted(s.id or "" for s in samples)
    assert all(set(json.loads(records[0].value)) == {"id", "message"} for records in by_key.values())


def test_generate_sends_n_seeded_reports(stack: TestStack) -> None:
    run = unique("cli-gen")
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    result = run_cli(["--generate", "40", "--seed", "11", "--id-prefix", run], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    assert "delivered 40 of 40" in result.stderr
    by_key = mine(tail.read(40), run)
    prefix = next(iter(by_key)).rsplit("-", 1)[0]  # type: ignore[union-attr]  # run-<token>
    expected = {r.id: r.message for r in generate_reports(40, seed=11, id_prefix=prefix)}
    assert {k: json.loads(v[0].value)["message"] for k, v in by_key.items()} == expected
    assert len({r[0].partition for r in by_key.values()}) > 1  # keyed records spread over the partitions


def test_every_record_is_printed_with_the_id_the_worker_uses_and_its_coordinates(stack: TestStack) -> None:
    """A user can follow each report from report-producer to its table by the id it printed."""
    run = unique("cli-ids")
    tail = TopicTail(stack.cfg.kafka_bootstrap)
    stdin = "\n".join([json.dumps({"id": f"{run}-own", "message": "Revenue was $3M"}), f"{run}: 3 incidents"])
    result = run_cli(["-"], stack.cfg.kafka_bootstrap, stdin=stdin + "\n")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split() for line in result.stdout.splitlines())
    assert next(iter(printed)) == f"{run}-own"  # in input order, whatever order the broker answered in
    records = [r for records in mine(tail.read(2), run).values() for r in records]
    assert printed == {
        (r.key or f"{r.topic}/{r.partition}/{r.offset}"): f"{r.topic}/{r.partition}@{r.offset}" for r in records
    }
    # The printed ids are the worker's report ids: its tables carry them.
    outputs = stack.outputs.wait_for(list(printed), timeout=90)
    assert {json.loads(records[0].value)["report_id"] for records in outputs.values()} == set(printed)


def test_json_output_gives_scripts_the_ids_and_coordinates(stack: TestStack) -> None:
    run = unique("cli-json")
    result = run_cli(["--json", "-q", "--id-prefix", run, "Churn fell to 2.1%"], stack.cfg.kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    delivery = json.loads(line)
    assert set(delivery) == {"report_id", "topic", "partition", "offset", "error"}
    assert delivery["report_id"].startswith(f"{run}-") and delivery["topic"] == REPORTS
    assert isinstance(delivery["offset"], int) and delivery["error"] is None


def test_id_prefix_never_repeats_an_id_across_runs(stack: TestStack) -> None:
    run = unique("cli-rerun")
    first, second = (run_cli(["--id-prefix", run, "Uptime 99.9%"], stack.cfg.kafka_bootstrap) for _ in range(2))
    ids = [result.stdout.split()[0] for result in (first, second)]
    assert all(i.startswith(f"{run}-") for i in ids) and ids[0] != ids[1]


def test_nothing_to_send_says_what_it_expects_and_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for args, stdin in ((["-"], ""), ([], ""), (["--file", str(empty)], None)):
        result = run_cli(args, f"127.0.0.1:{unused_port()}", stdin=stdin)
        assert result.returncode == 2, (args, result.stderr)
        assert "nothing to send" in result.stderr and "--file" in result.stderr, result.stderr
        assert "delivered 0 of 0" not in result.stderr


def test_library_send_reports_each_delivery_and_counts_refused_records(stack: TestStack) -> None:
    run = unique("lib-send")
    reports = [OutgoingReport(id=f"{run}-{i}", message=f"Revenue was ${i}M") for i in range(1, 4)]
    too_big = OutgoingReport(id=f"{run}-big", message="x" * 2_000_000)  # over message.max.bytes: refused locally
    deliveries: list[DeliveryReport] = []
    summary = send([*reports, too_big], producer_config(stack.cfg.kafka_bootstrap, {}), on_delivery=deliveries.append)
    assert (summary.sent, summary.delivered, summary.failed, summary.ok) == (4, 3, 1, False)
    assert any("too large" in error.lower() for error in summary.errors), summary.errors
    delivered = [d for d in deliveries if d.ok]
    assert sorted(d.report_id or "" for d in delivered) == sorted(r.id or "" for r in reports)
    assert all(d.topic == REPORTS and d.offset is not None for d in delivered)
    # The refused record is reported too (every record gets exactly one report), with its error.
    [refused] = [d for d in deliveries if not d.ok]
    assert (refused.report_id, refused.index, refused.offset) == (too_big.id, 3, None)
    assert refused.error and "too large" in refused.error.lower()
    assert sorted(d.index for d in deliveries) == [0, 1, 2, 3]
