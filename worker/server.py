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
    config.graceful_timeout = 3
    config.accesslog = None
    # Route hypercorn's own messages through the logging setup (one format, one stream).
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(app: ASGIApp, config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop within the graceful timeout."""
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The SDK keeps one SIGTERM dispatcher per loop (it tells running invocations
    # to wind down); a plain add_signal_handler would be replaced by it.
    install_shutdown_hook(loop, shutdown.set, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, shutdown.set)
    server = asyncio.create_task(hypercorn.asyncio.serve(app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
    await shutdown.wait()
    # Restate keeps idle HTTP/2 connections open, which hypercorn would wait on
    # forever. Stopping mid-attempt is safe: Restate retries it from the journal.
    try:
        await asyncio.wait_for(server, timeout=config.graceful_timeout + 1)
    except TimeoutError:
        log.info("connections still open after %.0f s; stopping anyway", config.graceful_timeout)
