"""`report-replay` (`python -m ops.replay`): send selected dead letters back to the input topic, after a fix.

Each selected dead letter's ORIGINAL value goes back to the reports topic, keyed and
named by the same report id, and marked with the record it first arrived as
(`"replay_of": {"topic", "partition", "offset"}`), so readers show the replay's outcome
as that report's outcome (see ops/identity.py):
- a JSON object keeps all its fields, its `id` included, and gains `replay_of`;
- plain text, or a JSON object without an `id` (the report id was derived from the
  record's coordinates, `reports/<partition>/<offset>`), is sent as
  `{"id": <report id>, "message": <text>, "replay_of": ...}`, because a new record has
  new coordinates.
Values that can never be a report (null, not UTF-8, empty, JSON that is not a report
object), originals the dead letter stored cut short, and invocations that never came
from a Kafka record are skipped, with the reason. A report that already has a table
published after its dead letter is skipped too, so running the same replay twice does
not process a report twice.

Exit codes: 0 every selected dead letter was re-sent or skipped for a stated reason;
1 Kafka error, a re-sent record not delivered, or a --report-id without a dead letter;
2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from ops import arguments
from ops.identity import identity, origin
from ops.kafka import consumer_config, topic_partitions
from ops.terminal import printable
from producer.kafka import producer_config
from worker.intake import read_report
from worker.kafka_logs import librdkafka_logger
from worker.models import DeadLetter, DeadLetterReason, Rejection, TableRecord
from worker.settings import describe_kafka, settings_or_exit

log = logging.getLogger("ops.replay")
librdkafka_log = librdkafka_logger("ops.replay.librdkafka")

# Dead letters written before they carried `original_bytes` kept at most this much of the original.
LEGACY_MAX_ORIGINAL = 256 * 1024
REPLAY_HEADER = "replay-of"
"""Header naming the dead letter a replayed record came from (for people reading the topic)."""


class ReplayError(RuntimeError):
    """Kafka could not be read or written."""


@dataclass(frozen=True)
class Letter:
    """One dead-letter record with where it was stored."""

    letter: DeadLetter
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Selection:
    reasons: frozenset[str] = frozenset()
    report_ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    """Only dead letters whose record timestamp is at or after this (epoch ms)."""

    def matches(self, letter: Letter) -> bool:
        return (
            (not self.reasons or letter.letter.reason in self.reasons)
            and (not self.report_ids or letter.letter.report_id in self.report_ids)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
        )


@dataclass(frozen=True)
class Skip:
    why: str


# --- What to send -----------------------------------------------------------------------------


def original_bytes(letter: DeadLetter) -> bytes | Skip:
    """The input record's value as the worker received it."""
    value, encoding = letter.original_value, letter.original_encoding
    if value is None or encoding == "none":
        return Skip("the original value was null (a tombstone)")
    if encoding == "base64":
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            return Skip("the stored original is not valid base64")
    else:
        raw = value.encode("utf-8")
    # A dead letter too large for its topic keeps only a prefix: a cut-off report is a different report.
    if letter.original_bytes is not None and len(raw) != letter.original_bytes:
        return Skip(f"the dead letter holds only the first {len(raw)} of the original's {letter.original_bytes} bytes")
    if letter.original_bytes is None and len(raw if encoding == "base64" else value) >= LEGACY_MAX_ORIGINAL:
        return Skip(f"the dead letter holds only the first {LEGACY_MAX_ORIGINAL} bytes/characters of the original")
    return raw


def replay_value(letter: DeadLetter) -> bytes | Skip:
    """The record value to re-send, keeping the report id and naming the original record, or why there is none."""
    first = origin(letter)
    if first is None:
        return Skip("it never came from a Kafka record: there is no report to send again")
    raw = original_bytes(letter)
    if isinstance(raw, Skip):
        return raw
    # The worker's own intake, minus the size limits (replays often follow a raised limit):
    # what it rejects here it would reject again.
    intake = read_report(raw, {}, letter.report_id, sys.maxsize, sys.maxsize)
    if isinstance(intake, Rejection):
        return Skip(f"the original cannot be a report ({intake.reason}: {intake.error})")
    if intake.report_id != letter.report_id:
        return Skip(f"the original names another report id ({intake.report_id!r})")
    value = _json_object(raw) or {"message": intake.message}
    value = {**value, "id": value.get("id", letter.report_id), "replay_of": first.model_dump()}
    return json.dumps(value, ensure_ascii=False).encode()


def _json_object(raw: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None  # plain text
    return value if isinstance(value, dict) else None


# --- Reading the topics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def scan(consumer: Consumer, topic: str, since_ms: int | None, timeout: float) -> Iterator[Record]:
    """Every record of `topic` (from `since_ms` when given) up to the end offsets at the start."""
    ends: dict[int, int] = {}
    starts = []
    for partition_id in topic_partitions(consumer, topic, timeout, ReplayError):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition_id), timeout=timeout)
            start = low
            if since_ms is not None:
                # The first offset with a timestamp >= since (-1 when there is none).
                found = consumer.offsets_for_times([TopicPartition(topic, partition_id, since_ms)], timeout=timeout)[0]
                start = found.offset if found.offset >= 0 else high
        except KafkaException as exc:
            raise ReplayError(f"cannot read the offsets of {topic}[{partition_id}]: {exc}") from None
        if start < high:
            ends[partition_id] = high
            starts.append(TopicPartition(topic, partition_id, start))
    consumer.assign(starts)
    deadline = time.monotonic() + timeout
    try:
        while ends:
            if time.monotonic() > deadline:
                raise ReplayError(f"reading {topic} did not finish within {timeout:g} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error, partition, offset = message.error(), message.partition(), message.offset()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    ends.pop(partition, None)
                elif error.fatal():
                    raise ReplayError(f"kafka: {error.str()}")
                continue
            if partition is None or offset is None:
                continue  # only error events lack coordinates
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            yield Record(partition, offset, message.key(), message.value(), message.timestamp()[1])
    finally:
        consumer.unassign()


def read_dead_letters(consumer: Consumer, topic: str, since_ms: int | None, timeout: float) -> dict[str, Letter]:
    """The latest dead letter per report (ops/identity.py: two reports may share an id)."""
    latest: dict[str, Letter] = {}
    for record in scan(consumer, topic, since_ms, timeout):
        try:
            letter = DeadLetter.model_validate_json(record.value or b"")
        except ValidationError:
            log.warning("skipping %s/%d/%d: not a dead-letter record", topic, record.partition, record.offset)
            continue
        entry = Letter(letter, topic, record.partition, record.offset, record.timestamp_ms)
        report = identity(letter)
        previous = latest.get(report)
        if previous is None or (entry.timestamp_ms, entry.offset) >= (previous.timestamp_ms, previous.offset):
            latest[report] = entry
    return latest


def tables_since(consumer: Consumer, topic: str, since_ms: int, timeout: float) -> dict[str, int]:
    """Report -> timestamp of its newest table, for tables published at or after `since_ms`."""
    found: dict[str, int] = {}
    for record in scan(consumer, topic, since_ms, timeout):
        try:
            table = TableRecord.model_validate_json(record.value or b"")
        except ValidationError:
            continue
        report = identity(table)
        found[report] = max(found.get(report, 0), record.timestamp_ms)
    return found


# --- Sending ----------------------------------------------------------------------------------


def send_all(producer: Producer, topic: str, records: Sequence[tuple[Letter, bytes]], timeout: float) -> list[str]:
    """Produce each record (key = report id) and wait for the broker; returns one error per record not delivered."""
    errors: list[str] = []
    settled: set[int] = set()

    def on_delivery(i: int, name: str) -> Callable[[KafkaError | None, Message], None]:
        def report(error: KafkaError | None, _: Message) -> None:
            settled.add(i)
            if error is not None:
                errors.append(f"{name}: {error.str()}")

        return report

    for i, (entry, value) in enumerate(records):
        name = printable(entry.letter.report_id)
        headers: list[tuple[str, str | bytes | None]] = [(REPLAY_HEADER, entry.where)]
        try:
            producer.produce(
                topic,
                key=entry.letter.report_id.encode(),
                value=value,
                headers=headers,
                on_delivery=on_delivery(i, name),
            )
        except (KafkaException, BufferError) as exc:
            settled.add(i)
            errors.append(f"{name}: {exc}")
        producer.poll(0)
    producer.flush(timeout)
    for i, (entry, _) in enumerate(records):
        if i not in settled:
            errors.append(f"{printable(entry.letter.report_id)}: not delivered within {timeout:g} s")
    return errors


# --- Command line -----------------------------------------------------------------------------

EPILOG = """\
Selectors combine: --reason and --report-id may repeat (any of the values), and all
given selectors must match. Without a selector, --all is required.

examples:
  report-replay --reason too_large --dry-run
  report-replay --reason step_failed --since 2h
  report-replay --report-id q3 --report-id reports/2/17
  report-replay --all --since 2024-05-01T08:00:00+00:00

Kafka client settings come from KAFKA_* environment variables, as for the worker.
exit codes: 0 done, 1 Kafka error, a record not delivered or a --report-id without a dead
letter, 2 usage error, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    settings = settings_or_exit("report-replay")
    parser = argparse.ArgumentParser(
        prog="report-replay",
        description="Re-send selected dead letters from the dead-letter topic to the input topic, "
        "keeping each report's id, so a fixed worker can process them again.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--reason",
        action="append",
        default=[],
        choices=[r.value for r in DeadLetterReason],
        metavar="R",
        help="dead-letter reason (repeatable): " + ", ".join(DeadLetterReason),
    )
    parser.add_argument("--report-id", action="append", default=[], metavar="ID", help="report id (repeatable)")
    parser.add_argument(
        "--since",
        type=arguments.since,
        metavar="WHEN",
        help="dead letters recorded since an ISO time or 30m / 2h / 1d ago",
    )
    parser.add_argument("--all", action="store_true", help="every dead letter (required when no selector is given)")
    parser.add_argument("--dry-run", action="store_true", help="show what would be re-sent; send nothing")
    parser.add_argument(
        "--topic", default=settings.reports_topic, help="where to re-send (default: %(default)s, from REPORTS_TOPIC)"
    )
    parser.add_argument(
        "--dlq-topic", default=settings.dead_letter_topic, help="default: %(default)s, from DEAD_LETTER_TOPIC"
    )
    parser.add_argument(
        "--tables-topic",
        default=settings.tables_topic,
        help="checked for reports already resolved (default: %(default)s, from TABLES_TOPIC)",
    )
    arguments.add_bootstrap_server(parser, settings)
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="bound for reading and for delivery (60)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the (redacted) Kafka config")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    selectors = bool(args.reason or args.report_id or args.since)
    if args.all == selectors:
        parser.error("choose dead letters with --reason / --report-id / --since, or pass --all (not both)")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING, format="replay: %(message)s"
    )
    librdkafka_log.setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)
    since_ms = None if args.since is None else int(args.since.timestamp() * 1000)
    selection = Selection(frozenset(args.reason), frozenset(args.report_id), since_ms)
    try:
        return _replay(args, selection)
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _replay(args: argparse.Namespace, selection: Selection) -> int:
    consumer_props = consumer_config(args.bootstrap_server, group_prefix="report-replay")
    log.info("kafka config: %s", describe_kafka(consumer_props))
    consumer = Consumer({**consumer_props, "logger": librdkafka_log})
    try:
        letters = read_dead_letters(consumer, args.dlq_topic, selection.since_ms, args.timeout)
        selected = sorted(
            (e for e in letters.values() if selection.matches(e)), key=lambda e: (e.timestamp_ms, e.offset)
        )
        first = min((e.timestamp_ms for e in selected), default=None)
        tables = {} if first is None else tables_since(consumer, args.tables_topic, first, args.timeout)
    finally:
        consumer.close()

    to_send: list[tuple[Letter, bytes]] = []
    skipped = 0
    for entry in selected:
        rid, reason = printable(entry.letter.report_id), entry.letter.reason
        outcome: bytes | Skip = (
            Skip("a table was published after the dead letter")
            if tables.get(identity(entry.letter), -1) >= entry.timestamp_ms
            else replay_value(entry.letter)
        )
        if isinstance(outcome, Skip):
            skipped += 1
            print(f"skipped  {rid} ({reason}): {outcome.why}")
        else:
            to_send.append((entry, outcome))
            print(f"{'would re-send' if args.dry_run else 're-send'}  {rid} ({reason}, from {entry.where})")

    missing = sorted(selection.report_ids - {e.letter.report_id for e in letters.values()})
    for rid in missing:
        print(f"replay: no dead letter for report id '{printable(rid)}' in {args.dlq_topic}", file=sys.stderr)

    errors: list[str] = []
    if to_send and not args.dry_run:
        producer = Producer({**producer_config(args.bootstrap_server), "logger": librdkafka_log})
        errors = send_all(producer, args.topic, to_send, args.timeout)
    sent = 0 if args.dry_run else len(to_send) - len(errors)
    dry = f" (dry run: {len(to_send)} would be re-sent, nothing sent)" if args.dry_run else ""
    print(f"selected {len(selected)}, re-sent {sent}, skipped {skipped}, failed {len(errors)}{dry}")
    for error in errors:
        print(f"replay: not delivered: {error}", file=sys.stderr)
    return 1 if errors or missing else 0


if __name__ == "__main__":
    sys.exit(main())
