"""`report-producer` (`python -m producer`): send reports to the input topic.

For every record it prints the report id the worker will use (the record's `id`, else its coordinates
`topic/partition/offset`) and where the broker stored it, so a report can be followed to its table.

Exit codes: 0 every record delivered; 1 a record was not delivered or an input
line was invalid; 2 usage error or nothing to send; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from producer.generate import generate_reports
from producer.kafka import producer_config
from producer.reports import LineError, OutgoingReport, load_samples, parse_lines, with_ids
from producer.send import DeliveryReport, librdkafka_log, send
from worker.settings import describe_kafka, settings_or_exit

log = logging.getLogger("producer")

EPILOG = """\
input lines (stdin, --file):
  a JSON object {"id": "...", "message": "..."} is sent with only its id and message
  (other fields, such as "expected", are dropped); any other non-empty line is one
  plain-text report; blank lines are skipped.

output: one line per record on stdout, in input order, the report id and where the broker
  stored it (topic/partition@offset); a report sent without an id gets its coordinates as id:
    q3  reports/2@17
    reports/1/5  reports/1@5
  --json prints {"report_id", "topic", "partition", "offset", "error"} per line instead.
  A summary goes to stderr. Follow a report to its table: report-results --id ID

examples:
  report-producer "Revenue was $12.5M and churn fell to 2.1%."
  report-producer --file examples/reports.jsonl
  cat reports.txt | report-producer --id-prefix batch7     # ids batch7-<run>-000001, ...
  report-producer --generate 100000 --seed 42 --id-prefix load -q

Kafka client settings come from KAFKA_* environment variables, as for the worker
(KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_PASSWORD, ...).
exit codes: 0 all delivered, 1 a record not delivered or an invalid input line,
2 usage error or nothing to send, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    settings = settings_or_exit("report-producer")
    parser = argparse.ArgumentParser(
        prog="report-producer",
        description="Send reports to the worker's input topic and wait until the broker has them all.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "reports", nargs="*", metavar="REPORT", help="report texts to send, one record each; '-' reads stdin"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-f", "--file", type=Path, metavar="PATH", help="send each line of PATH (text or JSONL)")
    source.add_argument("--generate", type=positive_int, metavar="N", help="send N synthetic reports (load tests)")
    source.add_argument(
        "--samples", action="store_true", help="send the bundled sample reports (ids prefixed by --id-prefix if given)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for --generate (default: 0)")
    parser.add_argument(
        "--id-prefix",
        metavar="PREFIX",
        help="give reports without an id the id PREFIX-RUN-000001, PREFIX-RUN-000002, ..., where RUN is new on "
        "every run, so two runs never share an id",
    )
    parser.add_argument(
        "--topic", default=settings.reports_topic, help="input topic (default: %(default)s, from REPORTS_TOPIC)"
    )
    parser.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT",
        default=settings.kafka.bootstrap_servers,
        help="Kafka brokers (default: %(default)s, from KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="give up on a record not delivered within SECONDS (default: $KAFKA_MESSAGE_TIMEOUT_MS or 30 s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per record: report_id, topic, partition, offset"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print only errors (no line per record)")
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="also show the (redacted) Kafka config and client logs"
    )
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class _Reports:
    """The chosen source as a stream of reports; invalid lines are logged and counted."""

    def __init__(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        self.args = args
        self.invalid = 0
        # A fresh token per run: "--id-prefix batch7" twice must not give two reports the same id.
        self.id_prefix = f"{args.id_prefix}-{secrets.token_hex(3)}" if args.id_prefix else None
        if args.reports and (args.file or args.generate or args.samples):
            parser.error("give report texts or one of --file/--generate/--samples, not both")
        if args.reports and args.reports != ["-"] and "-" in args.reports:
            parser.error("'-' (stdin) cannot be combined with report texts")
        if any(not text.strip() for text in args.reports):
            parser.error("a report text must not be empty")
        if args.file is not None and not args.file.is_file():
            parser.error(f"--file: no such file: {args.file}")
        nothing_given = not (args.reports or args.file or args.generate or args.samples)
        if nothing_given and sys.stdin.isatty():
            parser.error(NOTHING_TO_SEND)

    @property
    def source(self) -> str:
        args = self.args
        if args.file is not None:
            return str(args.file)
        return "the arguments" if args.reports and args.reports != ["-"] else "stdin"

    def __iter__(self) -> Iterator[OutgoingReport]:
        args, prefix = self.args, self.id_prefix
        if args.generate:
            return iter(generate_reports(args.generate, seed=args.seed, id_prefix=prefix))
        if args.samples:
            return iter(load_samples(id_prefix=prefix))
        if args.reports and args.reports != ["-"]:
            return with_ids(self._checked(parse_lines(args.reports), "argument"), prefix)
        if args.file is not None:
            return with_ids(self._checked_file(args.file), prefix)
        return with_ids(self._checked(parse_lines(sys.stdin.buffer), "stdin"), prefix)

    def _checked_file(self, path: Path) -> Iterator[OutgoingReport]:
        with path.open("rb") as stream:
            yield from self._checked(parse_lines(stream), str(path))

    def _checked(self, items: Iterable[OutgoingReport | LineError], label: str) -> Iterator[OutgoingReport]:
        for item in items:
            if isinstance(item, LineError):
                self.invalid += 1
                log.error("%s %s (not sent)", label, item)
            else:
                yield item


NOTHING_TO_SEND = (
    "nothing to send: give report texts as arguments, '-' to read them from stdin (one per line, text or "
    'JSON {"id": ..., "message": ...}), --file PATH, --samples or --generate N'
)


class _InInputOrder:
    """Prints one line per record, in the order the records were read (the broker answers out of order)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.waiting: dict[int, DeliveryReport] = {}
        self.next = 0

    def __call__(self, delivery: DeliveryReport) -> None:
        self.waiting[delivery.index] = delivery
        while self.next in self.waiting:
            self._print(self.waiting.pop(self.next))
            self.next += 1

    def finish(self) -> None:
        """Print what is left after a gap (a record that never got an answer), still in order."""
        for index in sorted(self.waiting):
            self._print(self.waiting.pop(index))

    def _print(self, delivery: DeliveryReport) -> None:
        if self.as_json:
            print(json.dumps(delivery.as_json(), ensure_ascii=False), flush=True)
        elif delivery.ok:
            print(f"{delivery.assigned_id}  {delivery.coordinates}", flush=True)
        else:
            label = delivery.report_id or "(no id)"
            print(f"report-producer: not delivered: {label}: {delivery.error}", file=sys.stderr)


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="report-producer: %(message)s")
    # Connection errors are summarised by the producer's error callback; the raw lines only with -v.
    librdkafka_log.setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.quiet, args.verbose)
    reports = _Reports(args, parser)
    config = producer_config(args.bootstrap_server, delivery_timeout=args.timeout)
    log.info("kafka config: %s", describe_kafka(config))

    try:
        show = _InInputOrder(args.json) if args.json or not args.quiet else None
        summary = send(reports, config, args.topic, progress=not args.quiet, on_delivery=show)
    except KeyboardInterrupt:  # a second Ctrl-C, while flushing
        return 130
    if show is not None:
        show.finish()

    if summary.sent == 0 and not reports.invalid and not summary.interrupted:
        print(f"report-producer: {reports.source} held no reports; {NOTHING_TO_SEND}", file=sys.stderr)
        return 2
    if not args.quiet or not summary.ok:
        print(summary.describe(), file=sys.stderr)
    if reports.invalid:
        print(f"{reports.invalid:,} invalid input line(s) not sent", file=sys.stderr)
    if summary.interrupted:
        return 130
    return 0 if summary.ok and not reports.invalid else 1
