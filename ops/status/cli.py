"""`report-status` (`python -m ops.status`): the command line. Exit codes: 0 ok; 1 Restate or Kafka
could not be reached (the message names the address); 2 usage error. With --watch, Ctrl-C exits 0."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import timedelta

from ops import arguments
from ops.status.collect import Options, collect
from ops.status.kafka import librdkafka_log
from ops.status.models import TARGET, Status, StatusError
from ops.status.render import render
from worker.settings import Settings, describe_kafka, get_settings, settings_or_exit

log = logging.getLogger("ops.status")


EPILOG = """\
examples:
  report-status                         invocations, paused work, step latency, Kafka lag (last hour)
  report-status --since 30m             the window for completed invocations and latencies (s, m, h, d)
  report-status --watch 2               refresh every 2 s (Ctrl-C to stop)
  report-status --json | jq .paused     machine-readable; keys are stable

Kafka client settings come from KAFKA_* environment variables, as for the worker; topics from
TABLES_TOPIC, DEAD_LETTER_TOPIC and REPORTS_TOPIC; the consumer group from the registered
subscription (else SUBSCRIPTION_GROUP_ID or report-chain).
exit codes: 0 ok, 1 Restate or Kafka unreachable, 2 usage error (with --watch, Ctrl-C exits 0).
"""


def build_parser() -> argparse.ArgumentParser:
    settings = settings_or_exit("report-status")
    parser = argparse.ArgumentParser(
        prog="report-status",
        description=f"Pipeline status of {TARGET}: Restate invocations and journal, Kafka topics and lag.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--since", type=arguments.window, default=timedelta(hours=1), metavar="DURATION",
        help="window for completed invocations, latencies and recent records (default: 1h)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON (one document per refresh with --watch)")
    parser.add_argument(
        "--watch", type=arguments.positive(float), metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    parser.add_argument(
        "--admin-url", default=settings.restate_admin_url,
        help="Restate admin API (default: %(default)s, from RESTATE_ADMIN_URL)",
    )  # fmt: skip
    arguments.add_bootstrap_server(parser, settings)
    parser.add_argument(
        "--limit",
        type=arguments.positive(int),
        default=10,
        metavar="N",
        help="show at most N paused invocations (default: 10)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show the (redacted) Kafka config and client logs"
    )
    return parser


def options_from(args: argparse.Namespace, settings: Settings) -> Options:
    return Options.of(
        settings,
        admin_url=args.admin_url,
        window=args.since,
        limit=int(args.limit),
        kafka=settings.kafka.with_bootstrap(args.bootstrap_server),
    )


def _show(status: Status, as_json: bool, watching: bool) -> None:
    if as_json:
        print(json.dumps(status.to_json(), indent=None if watching else 2), flush=True)
    else:
        if watching:
            print("\033[H\033[2J", end="")
        print(render(status), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING, format="report-status: %(message)s"
    )
    librdkafka_log.setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)
    options = options_from(args, get_settings())
    log.info("restate admin: %s; kafka config: %s", options.admin_url, describe_kafka(options.kafka.client_config()))
    try:
        while True:
            started = time.monotonic()
            try:
                _show(collect(options), args.json, args.watch is not None)
            except StatusError as exc:
                print(f"report-status: {exc}", file=sys.stderr, flush=True)
                if args.watch is None:
                    return 1
            if args.watch is None:
                return 0
            time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
