"""LLM providers behind one small interface (see base.py), built from settings once per chain link."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from worker.providers.base import Provider
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.chain import Link

_providers: dict[str, Provider] = {}
_lock = threading.Lock()


def get_provider(link: Link) -> Provider:
    """The process-wide provider of a model link of a step's chain (primary or fallback), built once."""
    if link.kind == "code":
        raise ValueError("the code link has no provider: it runs worker/providers/offline.py")
    with _lock:
        if link.kind not in _providers:
            from worker.providers.openai_compat import Endpoint, OpenAIProvider

            settings = get_settings()
            endpoint = Endpoint.of(settings) if link.kind == "primary" else Endpoint.fallback(settings)
            _providers[link.kind] = OpenAIProvider(settings, endpoint)
        return _providers[link.kind]


def prepare_providers() -> None:
    """Build the configured providers now (at start): importing the openai SDK takes seconds, and inside the
    first request it would stall every invocation in flight; a misconfigured provider fails here, at start."""
    from worker.chain import get_chain_config

    config = get_chain_config()
    for step_links in (config.extract, config.sort, config.format):
        for link in step_links:
            if link.kind != "code":
                get_provider(link)


async def close_provider() -> None:
    """Close the providers' connections, if any were built (at shutdown)."""
    for provider in list(_providers.values()):
        await provider.aclose()
