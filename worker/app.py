"""The ASGI application that hypercorn serves to Restate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import restate

from worker.providers import get_provider
from worker.publisher import close_publisher
from worker.service import report_chain
from worker.settings import get_settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app() -> ASGIApp:
    settings = get_settings()
    # Build the provider now: importing the openai SDK takes seconds, and inside the first
    # request it would stall every invocation in flight. A misconfigured provider fails here, at start.
    get_provider()
    # With identity keys set, the SDK rejects requests not signed by Restate's matching private key.
    restate_app: ASGIApp = restate.app(services=[report_chain], identity_keys=settings.identity_keys or None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # The SDK's app has no lifespan support; answer it here so the producer
        # is flushed when the server shuts down gracefully.
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    close_publisher()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await restate_app(scope, receive, send)

    return app
