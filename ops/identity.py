"""What a report IS, for every reader: the Kafka record it first arrived as.

A report's `id` is the user's label, and two records may carry the same one. Its identity
is the input record's coordinates (`topic/partition/offset`); a report sent again by the
replay tool is a new record that names the original in `replay_of`, so its outcome
belongs to the original. Readers and replay key on this, never on the id.
"""

from __future__ import annotations

from worker.intake import source_ref
from worker.models import DeadLetter, SourceRef, TableRecord


def origin(record: TableRecord | DeadLetter) -> SourceRef | None:
    """The record the report first arrived as; None for an invocation that never came from Kafka."""
    if record.replay_of is not None:
        return record.replay_of
    return source_ref(record.source)


def identity(record: TableRecord | DeadLetter) -> str:
    """A key that is the same for every outcome of one report: its origin, else its invocation."""
    found = origin(record)
    return str(found) if found is not None else f"invocation {record.invocation_id}"
