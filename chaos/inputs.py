"""The seeded input records of a run: synthetic reports, with poison records mixed in.

Valid reports carry an id (and key) `chaos<seed>-r-<n>`. Poison records carry no id,
so the worker derives theirs from where the broker stored them (`reports/<p>/<o>`);
the sender learns it from the delivery report.
"""

from __future__ import annotations

import json
import math
import random

from pydantic import BaseModel, ConfigDict

from producer.generate import generate_reports
from producer.reports import OutgoingReport
from worker.models import DeadLetterReason

POISON_KINDS = ("empty", "null_value", "invalid_utf8", "invalid_schema", "too_large")

# The dead-letter reasons each poison kind may end with. Restate hands the handler
# a tombstone's null value as an empty body, so it reads as `empty`.
EXPECTED_REASONS: dict[str, frozenset[DeadLetterReason]] = {
    "empty": frozenset({DeadLetterReason.EMPTY}),
    "null_value": frozenset({DeadLetterReason.NULL_VALUE, DeadLetterReason.EMPTY}),
    "invalid_utf8": frozenset({DeadLetterReason.INVALID_UTF8}),
    "invalid_schema": frozenset({DeadLetterReason.INVALID_SCHEMA}),
    "too_large": frozenset({DeadLetterReason.TOO_LARGE}),
}
# A valid report may still be dead-lettered: its steps failed past their attempts, or it states no metrics.
VALID_REASONS = frozenset({DeadLetterReason.STEP_FAILED, DeadLetterReason.NO_METRICS})

_POISON_VALUES: dict[str, list[bytes | None]] = {
    "empty": [b"", b" \t\n  "],
    "null_value": [None],
    "invalid_utf8": [b"Revenue \xff\xfe was 5%", b"Latency \xc3\x28 was 40 ms"],
    "invalid_schema": [
        b'["Revenue was 5%"]',
        b'{"message": 42}',
        b'{"note": "Revenue was 5%"}',
        b'"Revenue was 5%"',
        b"null",
        b'{"message": {"text": "Revenue was 5%"}}',
    ],
}


class PlannedInput(BaseModel):
    """One record to send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int
    kind: str
    """`valid` or a poison kind."""
    report_id: str | None
    """Known for valid reports; poison ids are derived from the record's coordinates."""
    key: bytes | None
    value: bytes | None
    crash_after_publish: bool = False
    """The worker crashes once right after publishing this report's table (worker/faults.py)."""


def valid_prefix(seed: int) -> str:
    return f"chaos{seed}-r-"


def crash_prefix(seed: int) -> str:
    """Ids of the reports whose first publish crashes the worker; no other id starts with it."""
    return f"chaos{seed}-x-"


def _too_large(max_message_bytes: int) -> bytes:
    sentence = "Revenue was 5%. "
    return json.dumps({"message": sentence * (max_message_bytes // len(sentence) + 2)}).encode()


def build_inputs(
    count: int, seed: int, poison_rate: float, max_message_bytes: int, publish_crashes: int = 0
) -> list[PlannedInput]:
    """`count` records in send order; about `poison_rate` of them poison, every poison kind at least once
    when there are enough; `publish_crashes` valid reports get ids that crash the worker after publishing."""
    rng = random.Random(f"{seed}/inputs")
    n_poison = min(count, math.ceil(count * poison_rate)) if poison_rate > 0 else 0
    poison_slots = set(rng.sample(range(count), n_poison))
    kinds = [POISON_KINDS[i % len(POISON_KINDS)] for i in range(n_poison)]
    rng.shuffle(kinds)
    valid_count = count - n_poison
    crash_numbers = set(rng.sample(range(1, valid_count + 1), min(publish_crashes, valid_count)))
    reports = generate_reports(valid_count, seed=seed)

    planned: list[PlannedInput] = []
    number = 0
    for index in range(count):
        if index in poison_slots:
            kind = kinds.pop()
            value = _too_large(max_message_bytes) if kind == "too_large" else rng.choice(_POISON_VALUES[kind])
            planned.append(PlannedInput(index=index, kind=kind, report_id=None, key=None, value=value))
            continue
        number += 1
        crash = number in crash_numbers
        report_id = f"{crash_prefix(seed) if crash else valid_prefix(seed)}{number:06d}"
        outgoing = OutgoingReport(id=report_id, message=next(reports).message)
        planned.append(
            PlannedInput(
                index=index,
                kind="valid",
                report_id=report_id,
                key=outgoing.key(),
                value=outgoing.value(),
                crash_after_publish=crash,
            )
        )
    return planned
