"""`report-results` (`python -m ops.results`): print the worker's tables and dead letters.

The reader assigns partitions itself under a unique, never-committed group id, so
it cannot disturb any other consumer. A report is its input record, not its id
(ops/identity.py, docs/design.md "Guarantees" 4): every report is shown once, even when its
outcome was published twice (publishing is at-least-once), and two reports that share an id are
both shown, flagged `id_reused`. A replayed report's table is shown as the outcome of the record
it replays, in place of that record's dead letter.

Exit codes: 0 done; 1 Kafka error, or --id values that did not arrive before
--timeout; 2 usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from ops import arguments
from ops.identity import identity
from ops.kafka import consumer_config, topic_partitions
from ops.terminal import printable
from worker.kafka_logs import librdkafka_logger
from worker.models import DeadLetter, OutcomeKind, TableRecord
from worker.settings import describe_kafka, get_settings, settings_or_exit

log = logging.getLogger("ops.results")
librdkafka_log = librdkafka_logger("ops.results.librdkafka")

METADATA_TIMEOUT_S = 10.0


class ReaderError(RuntimeError):
    """Kafka could not be read (unreachable, missing topic, fatal client error)."""


@dataclass(frozen=True)
class Result:
    """One report's outcome as read from Kafka."""

    kind: OutcomeKind
    report_id: str
    record: TableRecord | DeadLetter
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    """The output record's broker timestamp (for end-to-end latency)."""
    origin: str = ""
    """The report's identity: the input record it first arrived as (ops/identity.py)."""
    id_reused: bool = False
    """Another report, read before this one, carries the same id."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "report_id": self.report_id,
            **self.record.model_dump(mode="json"),
            "origin": self.origin,
            "id_reused": self.id_reused,
        }

    def render(self) -> str:
        """Human form: the report id as a heading, then the table or the dead-letter reason."""
        if isinstance(self.record, TableRecord):
            body = printable(self.record.table.rstrip(), keep="\n")
        else:
            where = f" at {self.record.failed_step}" if self.record.failed_step else ""
            body = printable(f"DEAD LETTER {self.record.reason}{where}: {self.record.error}")
        notes = []
        if self.record.replay_of is not None:
            notes.append(f"replay of {self.record.replay_of}")
        if self.id_reused:
            notes.append(f"id reused: this is the report from {self.origin}")
        heading = printable(self.report_id) + (f"  ({'; '.join(notes)})" if notes else "")
        return f"## {heading}\n{body}\n"


@dataclass(frozen=True)
class ReadOptions:
    tables_topic: str = field(default_factory=lambda: get_settings().tables_topic)
    dlq_topic: str = field(default_factory=lambda: get_settings().dead_letter_topic)
    from_beginning: bool = True
    follow: bool = False
    """Keep reading new records; otherwise stop at the end offsets that existed at start."""
    ids: frozenset[str] = frozenset()
    """Only these report ids; the read ends when all have arrived and the topics are read to their end."""
    timeout: float | None = None
    max_results: int | None = None


@dataclass
class ReadSummary:
    results: int = 0
    duplicates: int = 0
    """Records of an outcome already shown (a publish repeated after a crash, or a second table of a report)."""
    superseded: int = 0
    """Dead letters not shown because a later outcome of the same report (a replay's) replaced them."""
    reused_ids: set[str] = field(default_factory=set)
    """Report ids that more than one report carries."""
    skipped: int = 0
    """Records that are not valid table / dead-letter values."""
    missing: list[str] = field(default_factory=list)
    """Requested ids that did not arrive."""
    timed_out: bool = False


def read_results(
    config: Mapping[str, str],
    options: ReadOptions | None = None,
    on_result: Callable[[Result], None] | None = None,
    stop: threading.Event | None = None,
    on_positioned: Callable[[], None] | None = None,
) -> ReadSummary:
    """Read tables and dead letters, calling `on_result` once per report, as they arrive.

    `config` is a consumer config (see ops.kafka.consumer_config). Raises ReaderError
    when Kafka cannot be read. `stop` ends the read early from another thread. `on_positioned`
    is called once the start offsets are fixed: from then on, nothing published is missed.
    """
    consumer = Consumer({**config, "error_cb": _on_error(set()), "logger": librdkafka_log})
    try:
        return _Read(consumer, options or ReadOptions(), on_result or (lambda _: None), stop, on_positioned).run()
    finally:
        consumer.close()


class _Read:
    def __init__(
        self,
        consumer: Consumer,
        options: ReadOptions,
        on_result: Callable[[Result], None],
        stop: threading.Event | None,
        on_positioned: Callable[[], None] | None = None,
    ) -> None:
        self.on_positioned = on_positioned
        self.consumer = consumer
        self.options = options
        self.on_result = on_result
        self.stop = stop
        self.summary = ReadSummary()
        self.shown: dict[str, OutcomeKind] = {}
        """Report (origin) -> the kind of outcome shown for it."""
        self.records: set[tuple[str, OutcomeKind, str]] = set()
        """(origin, kind, invocation id) of every outcome read: a repeat is a duplicate publish."""
        self.origins: dict[str, set[str]] = {}
        """Report id -> the reports (origins) carrying it."""
        self.seen_ids: set[str] = set()
        # Dead letters wait until both topics have caught up: a replayed report has a dead
        # letter and, later, a table (its outcome) or another dead letter (the latest one is).
        self.held: dict[str, Result] = {}
        self.catching_up: set[tuple[str, int]] = set()
        self.ends: dict[tuple[str, int], int] = {}

    def run(self) -> ReadSummary:
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        self._assign(
            METADATA_TIMEOUT_S if self.options.timeout is None else min(METADATA_TIMEOUT_S, self.options.timeout)
        )
        if self.on_positioned is not None:
            self.on_positioned()
        while not self._done():
            if self.stop is not None and self.stop.is_set():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.summary.timed_out = True
                break
            message = self.consumer.poll(0.2 if remaining is None else min(0.2, remaining))
            if message is not None:
                self._handle(message)
            if self.held and not self.catching_up:
                self._release_held()
        self._release_held()  # stopped early: show what is known
        self.summary.missing = sorted(self.options.ids - self.seen_ids)
        return self.summary

    def _assign(self, timeout: float) -> None:
        assignment = []
        for topic in (self.options.tables_topic, self.options.dlq_topic):
            for partition in topic_partitions(self.consumer, topic, timeout, ReaderError):
                low, high = watermark_offsets(self.consumer, TopicPartition(topic, partition), timeout)
                start = low if self.options.from_beginning else high
                self.ends[(topic, partition)] = high
                if start < high:
                    self.catching_up.add((topic, partition))
                assignment.append(TopicPartition(topic, partition, start))
        self.consumer.assign(assignment)

    def _done(self) -> bool:
        o = self.options
        if o.max_results is not None and self.summary.results >= o.max_results:
            return True
        if o.ids:
            # Read on to the end even once every id arrived: another report may carry the same id.
            return o.ids <= self.seen_ids and not self.catching_up
        return not o.follow and not self.catching_up

    def _handle(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.catching_up.discard((topic or "", partition or 0))
            elif error.fatal():
                raise ReaderError(f"kafka: {error.str()}")
            else:
                log.warning("kafka: %s", error.str())
            return
        if topic is None or partition is None or offset is None:
            return  # only error events lack coordinates
        if offset + 1 >= self.ends.get((topic, partition), 0):
            self.catching_up.discard((topic, partition))
        result = self._parse(message, topic, partition, offset)
        if result is None:
            self.summary.skipped += 1
            return
        if self.options.ids and result.report_id not in self.options.ids:
            return
        fingerprint = (result.origin, result.kind, result.record.invocation_id)
        if fingerprint in self.records:
            self.summary.duplicates += 1  # the same outcome published again (a crash between ack and journal)
            return
        self.records.add(fingerprint)
        if result.kind == "dead_letter" and self.catching_up:
            if self.held.pop(result.origin, None) is not None:
                self.summary.superseded += 1  # a later dead letter of the same report (a failed replay)
            self.held[result.origin] = result
            return
        if result.kind == "table" and self.held.pop(result.origin, None) is not None:
            self.summary.superseded += 1  # the dead letter this table replaces
        self._emit(result)

    def _release_held(self) -> None:
        held, self.held = self.held, {}
        for result in held.values():
            self._emit(result)

    def _emit(self, result: Result) -> None:
        if self.shown.get(result.origin) == "table":
            # A report shows one table; anything after it (a second table, a replay's dead letter) is noise.
            self.summary.duplicates += 1
            return
        # A dead letter after a shown dead letter (a failed replay) or a table after one (a replay
        # that succeeded while following) is news: it is shown too.
        self.shown[result.origin] = result.kind
        origins = self.origins.setdefault(result.report_id, set())
        origins.add(result.origin)
        if len(origins) > 1:
            self.summary.reused_ids.add(result.report_id)
            result = dataclasses.replace(result, id_reused=True)
        self.seen_ids.add(result.report_id)
        self.summary.results += 1
        self.on_result(result)

    def _parse(self, message: Message, topic: str, partition: int, offset: int) -> Result | None:
        kind: OutcomeKind = "table" if topic == self.options.tables_topic else "dead_letter"
        model = TableRecord if kind == "table" else DeadLetter
        try:
            record: TableRecord | DeadLetter = model.model_validate_json(message.value() or b"")
        except ValidationError as exc:
            first = exc.errors()[0]
            log.warning("skipping %s[%d]@%d: not a %s record: %s", topic, partition, offset, kind, first["msg"])
            return None
        key = message.key()
        report_id = key.decode("utf-8", errors="replace") if key else record.report_id
        timestamp_type, timestamp = message.timestamp()
        return Result(
            kind=kind,
            report_id=report_id,
            record=record,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp if timestamp_type != TIMESTAMP_NOT_AVAILABLE else None,
            origin=identity(record),
        )


def watermark_offsets(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying for up to `timeout` seconds.

    Right after a topic is created the broker briefly answers "not leader for partition".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(0.1, deadline - time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                reason = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
                raise ReaderError(f"cannot read the offsets of {tp.topic}[{tp.partition}]: {reason}") from None
            time.sleep(0.2)


def _on_error(seen: set[int]) -> Callable[[KafkaError], None]:
    def on_error(error: KafkaError) -> None:
        # librdkafka repeats an error on every reconnect attempt: say each kind once.
        if error.code() not in seen:
            seen.add(error.code())
            log.warning("kafka: %s", error.str())

    return on_error


# --- command line -----------------------------------------------------------------------------

EPILOG = """\
examples:
  report-results                          everything published so far, then exit
  report-results --follow                 ... and keep printing new results
  report-results --id r-1 --id r-2 --timeout 60
                                          wait for these reports (exit 1 if one is missing)
  report-results --json | jq .            one JSON object per line: {"kind", "report_id", ...record}
  report-results --from-now --max 1       wait for the next result (--from-now keeps reading, as --follow)

Kafka client settings come from KAFKA_* environment variables, as for the worker.
exit codes: 0 done, 1 Kafka error or --id values missing at --timeout, 2 usage error,
130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    settings = settings_or_exit("report-results")
    parser = argparse.ArgumentParser(
        prog="report-results",
        description="Print the worker's results: tables and dead letters, once per report id.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tables-topic", default=settings.tables_topic, help="default: %(default)s, from TABLES_TOPIC")
    parser.add_argument(
        "--dlq-topic", default=settings.dead_letter_topic, help="default: %(default)s, from DEAD_LETTER_TOPIC"
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning", dest="from_beginning", action="store_true", default=True, help="read all results (default)"
    )
    start.add_argument(
        "--from-now",
        dest="from_beginning",
        action="store_false",
        help="only results published from now on: waits for them (implies --follow; stop with --max, --id, "
        "--timeout or Ctrl-C)",
    )
    parser.add_argument("--follow", action="store_true", help="keep reading; default: stop when caught up")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument(
        "--id",
        dest="ids",
        action="append",
        default=[],
        metavar="ID",
        help="print only this report id and wait until it arrives (repeatable)",
    )
    parser.add_argument("--timeout", type=arguments.positive(float), metavar="SECONDS", help="stop after SECONDS")
    parser.add_argument("--max", type=arguments.positive(int), metavar="N", help="stop after N results")
    arguments.add_bootstrap_server(parser, settings)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show the (redacted) Kafka config and client logs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING, format="report-results: %(message)s"
    )
    librdkafka_log.setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)
    config = consumer_config(args.bootstrap_server)
    log.info("kafka config: %s", describe_kafka(config))
    # Without --follow, --from-now would stop at once, having read nothing: it waits for new results instead.
    waits = args.follow or not args.from_beginning
    options = ReadOptions(
        tables_topic=args.tables_topic,
        dlq_topic=args.dlq_topic,
        from_beginning=args.from_beginning,
        follow=waits,
        ids=frozenset(args.ids),
        timeout=args.timeout,
        max_results=args.max,
    )

    def show(result: Result) -> None:
        print(json.dumps(result.to_json(), ensure_ascii=False) if args.json else result.render(), flush=True)

    def positioned() -> None:
        if waits and not args.ids:
            start = "from now on" if not args.from_beginning else "so far and from now on"
            print(f"report-results: reading results published {start} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    try:
        summary = read_results(config, options, show, on_positioned=positioned)
    except ReaderError as exc:
        print(f"report-results: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if summary.reused_ids:
        reused = sorted(summary.reused_ids)
        names = ", ".join(printable(r) for r in reused[:10]) + (" ..." if len(reused) > 10 else "")
        print(f"report-results: {len(reused)} report id(s) carried by more than one report, each shown "
              f"(flagged id_reused): {names}", file=sys.stderr)  # fmt: skip
    if summary.missing and summary.timed_out:
        shown = ", ".join(printable(m) for m in summary.missing[:10]) + (" ..." if len(summary.missing) > 10 else "")
        print(f"report-results: {len(summary.missing)} report(s) did not arrive: {shown}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
