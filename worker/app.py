"""The ASGI application that hypercorn serves to Restate."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import restate

from worker.budget.service import llm_budget
from worker.drain import DRAIN
from worker.providers import close_provider, prepare_providers
from worker.publisher import close_publisher
from worker.service import report_chain
from worker.settings import get_settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a server with hundreds of invocations in flight.

    Their objects live for about a second, so with the default thresholds (700, 10, 10) the collector
    scans each of them several times: 13-16 % of the worker's CPU under load (offline provider, 256 in
    flight), against 4 % with these settings. Garbage is still collected, just in fewer, larger passes;
    the objects made at start (modules, schemas) are left out of every later pass.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def create_app() -> ASGIApp:
    settings = get_settings()
    # Build the provider now: importing the openai SDK takes seconds, and inside the first
    # request it would stall every invocation in flight. A misconfigured provider fails here, at start.
    prepare_providers()
    # With identity keys set, the SDK rejects requests not signed by Restate's matching private key.
    # LLMBudget is always served (it costs nothing unused), so a budget can be set by restarting workers only.
    services: list[restate.Service | restate.VirtualObject] = [report_chain, llm_budget]
    restate_app: ASGIApp = restate.app(services=services, identity_keys=settings.identity_keys or None)
    tune_gc()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The SDK's app has no lifespan support; answer it here so the producer is
        # flushed and LLM connections closed when the server shuts down gracefully.
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    close_publisher()
                    await close_provider()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if (
            DRAIN.draining
            and scope["type"] == "http"
            and ("/invoke/" in scope["path"] or scope["path"].endswith("/health"))
        ):
            # Stopping: no new invocation (or resumed one) starts here, Restate retries it; and /health
            # says so, so that a balancer or a readiness probe sends the next ones to another replica.
            await _unavailable(send)
            return
        await restate_app(scope, receive, send)

    return app


async def _unavailable(send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"the worker is stopping\n", "more_body": False})
