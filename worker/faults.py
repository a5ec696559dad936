"""Deliberate faults for the recovery tests and chaos runs. Everything here is OFF by default.

`FAULT_CRASH_AFTER_PUBLISH=<report id prefix>` makes the worker die with exit code 137
(as after SIGKILL) right after the broker acknowledged the table of a matching report
and before the `Publish table` step returns, i.e. before Restate journals the step.
That is the one window in which a table is published twice (DESIGN.md, guarantee 4):
after the restart Restate runs the step again and the broker gets the same record again.

A report id crashes the worker only once: the first crash leaves a marker file in
`FAULT_STATE_DIR` (required; a restarted process must remember it), later publishes
of that report id go through. Without `FAULT_STATE_DIR` the fault stays off and says so,
because crashing on every attempt would block the report forever.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from worker.settings import get_settings

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


@dataclass(frozen=True)
class FaultConfig:
    crash_after_publish: str | None
    state_dir: Path | None


@lru_cache(maxsize=1)
def config() -> FaultConfig:
    """The fault settings of this process (worker/settings.py)."""
    settings = get_settings()
    prefix, state = settings.fault_crash_after_publish, settings.fault_state_dir
    if prefix is not None and state is None:
        log.error("FAULT_CRASH_AFTER_PUBLISH is set without FAULT_STATE_DIR: the fault is off")
        prefix = None
    if prefix is not None:
        log.warning("fault injection ON: crash after publishing the table of report ids starting with %r", prefix)
    return FaultConfig(prefix, state)


def marker_path(state_dir: Path, report_id: str) -> Path:
    """One file per report id; the hash keeps ids that sanitize alike ("a/b", "a_b") apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", report_id)[:80]
    digest = hashlib.sha256(report_id.encode()).hexdigest()[:12]
    return state_dir / f"{readable}-{digest}"


def after_publish(report_id: str) -> None:
    """Called by the publish step once the broker acknowledged a table; may end the process."""
    cfg = config()
    if cfg.crash_after_publish is None or cfg.state_dir is None or not report_id.startswith(cfg.crash_after_publish):
        return
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: exactly one crash per report id, even with parallel publishes or restarts.
        os.close(os.open(marker_path(cfg.state_dir, report_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return
    log.critical("fault injection: crashing after publishing the table of %s (before the journal write)", report_id)
    for handler in logging.getLogger().handlers:
        handler.flush()  # os._exit skips every cleanup, log buffers included
    os._exit(CRASH_EXIT_CODE)
