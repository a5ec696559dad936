"""A graceful stop that leaves no duplicate: finish what runs, start nothing new.

A table is published twice only when a `Publish table` step reached the broker but never
reached Restate's journal: Restate then runs the step again after the restart. On SIGTERM
the worker therefore

1. refuses new invocation requests (503: Restate retries them, on this worker after its
   restart or on another one),
2. lets no journaled step start (a handler about to start one waits until the process ends;
   Restate runs it again from the journal later, once),
3. waits, up to `WORKER_DRAIN_TIMEOUT`, until every step that had started has finished AND its
   result is journaled (a `ctx.run` returns in the handler only once Restate acknowledged
   the entry), and only then stops serving.

Records still queued in the producer after that belong to steps the worker abandoned (the
drain timed out): they are purged, never flushed (worker/publisher.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)


class Drain:
    """Counts the journaled steps in progress and holds back new ones once a stop began."""

    def __init__(self) -> None:
        self.draining = False
        self.running = 0
        self._changed: asyncio.Event | None = None
        self._never: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def admit(self) -> None:
        """Return when a step may start: at once, unless the worker is stopping (then never)."""
        if self.draining:
            if self._never is None:
                self._never = asyncio.Event()
            await self._never.wait()  # cancelled when the process stops

    def started(self) -> None:
        self.running += 1

    def finished(self) -> None:
        self.running -= 1
        if self.draining:
            self._event().set()

    def begin(self) -> None:
        self.draining = True
        self._event().set()

    async def wait_idle(self, timeout: float) -> int:
        """Wait until no step runs (or `timeout` seconds passed); returns how many still run."""
        deadline = time.monotonic() + timeout
        while self.running > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = self._event()
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
        return self.running


DRAIN = Drain()
