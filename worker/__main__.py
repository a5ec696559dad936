"""`python -m worker`: serve the ReportChain service to Restate with hypercorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from worker import faults, provenance
from worker.logs import configure
from worker.providers import close_provider
from worker.publisher import close_publisher
from worker.settings import settings_or_exit

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Serve the ReportChain Restate service (HTTP/2) for Restate's Kafka subscription. "
        "Configured by environment variables; see README.md for the full table.",
    )
    settings = settings_or_exit("report-worker")
    parser.add_argument(
        "--bind", default=settings.worker_bind, help="host:port to listen on (default: %(default)s, from WORKER_BIND)"
    )
    args = parser.parse_args(argv)
    # Imported once the settings are known to be valid: the service reads them when it is defined.
    from worker.app import create_app
    from worker.server import serve, server_config

    configure(settings.log_level, settings.log_format)
    faults.announce(settings)
    config = server_config(args.bind)
    if settings.provider == "offline":
        model, base_url = "n/a", "n/a"
    else:
        from worker.providers.openai_compat import Endpoint, safe_url  # the openai SDK: only when used

        endpoint = Endpoint.of(settings)
        model, base_url = endpoint.model, safe_url(endpoint.base_url)
    log.info(
        "worker starting on %s: provider=%s model=%s base_url=%s request signing=%s",
        config.bind[0], settings.provider, model, base_url, "on" if settings.identity_keys else "off",
    )  # fmt: skip

    async def run() -> None:
        await serve(create_app(), config, settings.worker_drain_timeout)
        close_publisher()  # purges what abandoned handlers queued (worker/drain.py)
        provenance.close()
        await close_provider()

    asyncio.run(run())
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
