"""`python -m worker`: serve the ReportChain service to Restate with hypercorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import hypercorn.asyncio
from hypercorn.config import Config
from restate.server import install_shutdown_hook

from worker.app import create_app
from worker.logs import configure
from worker.providers import close_provider
from worker.publisher import close_publisher
from worker.settings import get_settings

log = logging.getLogger("worker")

KEEP_ALIVE_MAX_REQUESTS = 2**62  # in effect unlimited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Serve the ReportChain Restate service (HTTP/2) for Restate's Kafka subscription. "
        "Configured by environment variables; see README.md for the full table.",
    )
    parser.add_argument("--bind", help="host:port to listen on (default: $WORKER_BIND or 0.0.0.0:9080)")
    args = parser.parse_args(argv)

    settings = get_settings()
    configure(settings.log_level, settings.log_format)
    config = Config()
    config.bind = [args.bind or settings.worker_bind]
    # Restate keeps HTTP/2 streams open for long-running invocations.
    config.keep_alive_timeout = 600
    # Restate keeps each connection for as long as the worker runs. Hypercorn's default closes a
    # connection after 1,000 requests, which broke every invocation still on it (Restate retried
    # them: LLM calls in flight were paid again, RT0010 warnings in batches of ~32).
    config.keep_alive_max_requests = KEEP_ALIVE_MAX_REQUESTS
    config.graceful_timeout = 3
    config.accesslog = None
    # Route hypercorn's own messages through our logging setup (one format, one stream).
    config.errorlog = logging.getLogger("hypercorn.error")
    model = "n/a" if settings.provider == "offline" else settings.llm_model
    log.info(
        "worker starting on %s: provider=%s model=%s base_url=%s request signing=%s",
        config.bind[0], settings.provider, model, settings.openai_base_url or "default",
        "on" if settings.identity_keys else "off",
    )  # fmt: skip

    shutdown = asyncio.Event()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        # The SDK keeps one SIGTERM dispatcher per loop (it tells running invocations
        # to wind down); a plain add_signal_handler would be replaced by it.
        install_shutdown_hook(loop, shutdown.set, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, shutdown.set)
        server = asyncio.create_task(
            hypercorn.asyncio.serve(create_app(), config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
        )
        await shutdown.wait()
        # Restate keeps idle HTTP/2 connections open, which hypercorn would wait on
        # forever. Stopping mid-attempt is safe: Restate retries it from the journal.
        try:
            await asyncio.wait_for(server, timeout=config.graceful_timeout + 1)
        except TimeoutError:
            log.info("connections still open after %.0f s; stopping anyway", config.graceful_timeout)
        close_publisher()
        await close_provider()

    asyncio.run(serve())
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
