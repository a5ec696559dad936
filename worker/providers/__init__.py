"""LLM providers behind one small interface (see base.py), chosen by settings."""

from __future__ import annotations

import threading

from worker.providers.base import Provider
from worker.settings import get_settings

_provider: Provider | None = None
_lock = threading.Lock()


def get_provider() -> Provider:
    """The process-wide provider, built once from settings."""
    global _provider
    with _lock:
        if _provider is None:
            settings = get_settings()
            if settings.provider in ("openai", "local"):
                from worker.providers.openai_compat import OpenAIProvider

                _provider = OpenAIProvider(settings)
            else:
                from worker.providers.offline import OfflineProvider

                _provider = OfflineProvider()
        return _provider


async def close_provider() -> None:
    """Close the process-wide provider's connections, if it was built (at shutdown)."""
    if _provider is not None:
        await _provider.aclose()
