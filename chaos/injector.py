"""Kills and restarts stack processes on schedule, and restarts a worker that died by itself.

One thread does both, so two faults never overlap: a restart finishes (the process is
healthy again) before the next kill. The watchdog matters for the crash-after-publish
fault (worker/faults.py), where the worker exits on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from chaos.accounting import FaultEvent
from chaos.schedule import ProcessFault, component_kind
from devstack.stack import Stack

RESTART_TIMEOUT_S = 180.0  # a cold Kafka start on a loaded 2-core machine can take a while


class FaultInjector:
    def __init__(
        self,
        stack: Stack,
        schedule: Sequence[ProcessFault],
        journal: Callable[[], set[str] | None],
        log: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.schedule = list(schedule)
        self.journal = journal
        self.log = log
        self.events: list[FaultEvent] = []
        self.journaled_before_kills: set[str] = set()
        """What Restate's journal held right before each kill: none of it may be redone."""
        self.started_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._schedule_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)

    def start(self, started_at: float) -> FaultInjector:
        self.started_at = started_at
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=RESTART_TIMEOUT_S + 30)

    def wait_schedule(self, timeout: float | None = None) -> bool:
        return self._schedule_done.wait(timeout)

    @property
    def schedule_done(self) -> bool:
        return self._schedule_done.is_set()

    def journal_snapshot(self) -> set[str]:
        with self._lock:
            return set(self.journaled_before_kills)

    def done_events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self.events)

    def last_fault_end(self) -> float | None:
        with self._lock:
            ends = [e.restarted_at for e in self.events if e.restarted_at is not None]
        return max(ends, default=None)

    def _run(self) -> None:
        pending = list(self.schedule)
        while not self._stop.is_set():
            self._watchdog()
            if pending and time.time() - self.started_at >= pending[0].at_s:
                self._inject(pending.pop(0))
                continue
            if not pending:
                self._schedule_done.set()
            self._stop.wait(0.25)

    def _watchdog(self) -> None:
        for worker in self.stack.workers:
            if worker.process.is_running():
                continue
            at = time.time()
            self.log(f"{worker.name} exited by itself at +{at - self.started_at:.0f}s; restarting it")
            self._restart(worker.name, "exited", at)

    def _inject(self, fault: ProcessFault) -> None:
        component = self.stack.component(fault.component)
        if component_kind(fault.component) != "kafka":
            snapshot = self.journal()
            with self._lock:
                self.journaled_before_kills |= snapshot or set()
        at = time.time()
        self.log(f"SIGKILL {fault.component} at +{at - self.started_at:.0f}s (planned +{fault.at_s:.0f}s)")
        component.process.kill()
        deadline = time.monotonic() + 30
        while component.process.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.wait(fault.down_s)
        self._restart(fault.component, "scheduled", at)

    def _restart(self, name: str, cause: str, killed_at: float) -> None:
        error = None
        restarted_at: float | None = None
        try:
            self.stack.start(self.stack.component(name), timeout=RESTART_TIMEOUT_S)
            restarted_at = time.time()
            self.log(f"{name} is healthy again {restarted_at - killed_at:.1f}s after it went down")
        except Exception as exc:  # noqa: BLE001 - recorded and shown; the run goes on and accounts for it
            error = f"{type(exc).__name__}: {exc}"
            self.log(f"restarting {name} failed: {error}")
            self._stop.wait(5)  # the watchdog tries again; do not spin
        with self._lock:
            self.events.append(
                FaultEvent(component=name, cause=cause, killed_at=killed_at, restarted_at=restarted_at, error=error)
            )
