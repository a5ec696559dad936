"""Arguments the operating tools share: durations as people type them (`90s`, `30m`, `2h`, `1d`),
points in time, positive numbers, the Kafka brokers."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from worker.settings import Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
N = TypeVar("N", int, float)


def parse_duration(text: str) -> timedelta | None:
    """The duration `text` spells (a bare number is seconds), or None when it is not one."""
    match = _DURATION.match(text)
    if match is None:
        return None
    return timedelta(seconds=float(match.group(1)) * _SECONDS[match.group(2) or "s"])


def window(text: str) -> timedelta:
    """`30m`, `2h`, `1d`, `90s` (a bare number is seconds); more than zero."""
    found = parse_duration(text)
    if found is None or found <= timedelta(0):
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return found


def since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `1d` (ago) or an ISO 8601 time (local time when it has no offset)."""
    ago = parse_duration(text)
    if ago is not None:
        return (now or datetime.now(UTC)) - ago
    try:
        return datetime.fromisoformat(text.strip()).astimezone()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time or a duration like 30m, 2h, 1d; got {text!r}") from None


def add_bootstrap_server(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT",
        default=settings.kafka.bootstrap_servers,
        help="Kafka brokers (default: %(default)s, from KAFKA_BOOTSTRAP_SERVERS)",
    )


def positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argument type for numbers of `kind` (int, float) above zero."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse
