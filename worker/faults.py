"""Deliberate faults for the recovery tests and chaos runs. Off unless the settings switch one on.

`FAULT_CRASH_AFTER_PUBLISH=<report id prefix>` (with `FAULT_STATE_DIR`) makes the worker die
with exit code 137 (as after SIGKILL) right after the broker acknowledged the table of a
matching report and before the `Publish table` step returns, i.e. before Restate journals the
step. That is the one window in which a table is published twice (docs/design.md, "Known
duplicate windows"): after the restart Restate runs the step again and the broker gets the same
record again.

A report id crashes the worker only once: the first crash leaves a marker file in
`FAULT_STATE_DIR` (required; a restarted process must remember it), later publishes of that
report id go through. Without `FAULT_STATE_DIR` the fault stays off and the worker says so at
start, because crashing on every attempt would block the report forever.

The step functions know nothing of this: the service composes `with_faults(publish_table)`,
which is `publish_table` itself unless a fault is on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from worker.models import Published, TableRecord
from worker.settings import Settings

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


class PublishTable(Protocol):
    """The `Publish table` step: a coroutine function of the record (ctx.run_typed passes it by keyword)."""

    def __call__(self, record: TableRecord) -> Coroutine[Any, Any, Published]: ...


@dataclass(frozen=True)
class CrashAfterPublish:
    """Crash once per report id starting with `prefix`, after its table was published."""

    prefix: str
    state_dir: Path

    def should_crash(self, report_id: str) -> bool:
        """True the first time a matching report id gets here, across restarts and parallel publishes."""
        if not report_id.startswith(self.prefix):
            return False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: exactly one crash per report id, even with parallel publishes or restarts.
            os.close(os.open(marker_path(self.state_dir, report_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True

    def after_publish(self, report_id: str) -> None:
        """Ends the process (like a SIGKILL) when `report_id` should crash."""
        if not self.should_crash(report_id):
            return
        log.critical("fault injection: crashing after publishing the table of %s (before the journal write)", report_id)
        for handler in logging.getLogger().handlers:
            handler.flush()  # os._exit skips every cleanup, log buffers included
        os._exit(CRASH_EXIT_CODE)


def crash_after_publish(settings: Settings) -> CrashAfterPublish | None:
    """The crash-after-publish fault the settings switch on, or None."""
    if settings.fault_crash_after_publish is None or settings.fault_state_dir is None:
        return None
    return CrashAfterPublish(settings.fault_crash_after_publish, settings.fault_state_dir)


def announce(settings: Settings) -> None:
    """At start: say loudly when a fault is on, or asked for and off."""
    if settings.fault_crash_after_publish is not None and settings.fault_state_dir is None:
        log.error("FAULT_CRASH_AFTER_PUBLISH is set without FAULT_STATE_DIR: the fault is off")
    fault = crash_after_publish(settings)
    if fault is not None:
        log.warning(
            "FAULT INJECTION ON (tests and chaos runs only): the worker crashes after publishing the table of "
            "report ids starting with %r, once each (markers in %s)",
            fault.prefix,
            fault.state_dir,
        )


def with_faults(publish_table: PublishTable, settings: Settings) -> PublishTable:
    """`publish_table`, followed by the crash-after-publish fault when the settings switch it on."""
    fault = crash_after_publish(settings)
    if fault is None:
        return publish_table

    async def publish_then_crash(record: TableRecord) -> Published:
        published = await publish_table(record)
        if published.delivery is not None:  # the broker has it: the window is open
            fault.after_publish(record.report_id)
        return published

    return publish_then_crash


def marker_path(state_dir: Path, report_id: str) -> Path:
    """One file per report id; the hash keeps ids that sanitize alike ("a/b", "a_b") apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", report_id)[:80]
    digest = hashlib.sha256(report_id.encode()).hexdigest()[:12]
    return state_dir / f"{readable}-{digest}"
