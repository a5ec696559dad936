"""What this process remembers about a step's failed attempts.

Restate retries a failed `ctx.run` by re-invoking the handler; the failed attempt
leaves nothing in the journal for our code to read. To number attempts in the
ledger and to quote the last validation error in a repair prompt, the worker
keeps a small in-memory note per (invocation, step). Losing it (a worker
restart) only means the next attempt is numbered from the restart and asks
without a repair hint; Restate still enforces the attempt bound.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from worker.models import Step
from worker.providers.base import CallInfo

MAX_NOTES = 10_000  # bounded: notes of invocations that never come back are evicted oldest first


@dataclass
class _Note:
    failures: int = 0
    repair_hint: str | None = None


class AttemptNotes:
    def __init__(self) -> None:
        self._notes: OrderedDict[tuple[str, Step], _Note] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, invocation_id: str, report_id: str, step: Step) -> CallInfo:
        with self._lock:
            note = self._notes.get((invocation_id, step), _Note())
        return CallInfo(report_id=report_id, step=step, attempt=note.failures + 1, repair_hint=note.repair_hint)

    def fail(self, invocation_id: str, step: Step, repair_hint: str | None = None) -> None:
        with self._lock:
            note = self._notes.pop((invocation_id, step), _Note())
            note.failures += 1
            note.repair_hint = repair_hint
            self._notes[(invocation_id, step)] = note
            while len(self._notes) > MAX_NOTES:
                self._notes.popitem(last=False)

    def forget(self, invocation_id: str, step: Step) -> None:
        with self._lock:
            self._notes.pop((invocation_id, step), None)


attempts = AttemptNotes()
