"""How the worker is served to Restate: hypercorn's settings and a shutdown that does not hang.

The benchmark's engine floor (bench/engine_floor.py) is served the same way, so the
two differ only in what their handlers do.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import hypercorn.asyncio
from hypercorn.config import Config
from restate.server import install_shutdown_hook

from worker.app import ASGIApp
from worker.drain import DRAIN

log = logging.getLogger("worker")


def server_config(bind: str) -> Config:
    config = Config()
    config.bind = [bind]
    # Restate keeps HTTP/2 streams open for long-running invocations.
    config.keep_alive_timeout = 600
    # Restate keeps each connection for as long as the worker runs. Hypercorn's default closes a
    # connection after 1,000 requests, which broke every invocation still on it (Restate retried
    # them: LLM calls in flight were paid again, RT0010 warnings in batches of ~32).
    config.keep_alive_max_requests = 2**62  # in effect unlimited
    # After the drain (worker/drain.py) nothing useful runs any more: close connections quickly.
    config.graceful_timeout = 1
    config.accesslog = None
    # Route hypercorn's own messages through the logging setup (one format, one stream).
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(app: ASGIApp, config: Config, drain_timeout: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT, drain (worker/drain.py), then stop within the graceful timeout.

    A second signal ends the drain at once.
    """
    stop = asyncio.Event()
    drained = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            drained.set()  # the second signal: stop now
        DRAIN.begin()
        stop.set()

    # The SDK keeps one SIGTERM dispatcher per loop (it tells running invocations
    # to wind down); a plain add_signal_handler would be replaced by it.
    install_shutdown_hook(loop, on_signal, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, on_signal)
    server = asyncio.create_task(hypercorn.asyncio.serve(app, config, shutdown_trigger=drained.wait))  # type: ignore[arg-type]
    await stop.wait()
    started = loop.time()
    log.info("stopping: no new invocations or steps; waiting up to %.0f s for %d running steps",
             drain_timeout, DRAIN.running)  # fmt: skip
    idle = asyncio.create_task(DRAIN.wait_idle(drain_timeout))
    await asyncio.wait([idle, asyncio.create_task(drained.wait())], return_when=asyncio.FIRST_COMPLETED)
    left = DRAIN.running
    if left:
        log.warning("stopping with %d steps still running after %.1f s: Restate runs them again after the restart",
                    left, loop.time() - started)  # fmt: skip
    else:
        log.info("every running step finished and is journaled (%.1f s)", loop.time() - started)
    idle.cancel()
    drained.set()
    # Restate keeps idle HTTP/2 connections open, which hypercorn would wait on forever.
    # The handlers still open wait for a step that will not start: Restate retries them from the journal.
    try:
        await asyncio.wait_for(server, timeout=config.graceful_timeout + 1)
    except TimeoutError:
        log.info("connections still open after %.0f s; stopping anyway", config.graceful_timeout)
