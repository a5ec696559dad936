"""The report producer's Kafka client config: the settings' `KAFKA_*` properties (worker/settings.py,
shared by every client) with the producer's defaults under them."""

from __future__ import annotations

from collections.abc import Mapping

from worker.settings import client_config

# Defaults a user's KAFKA_* variables may override.
PRODUCER_DEFAULTS = {
    "linger.ms": "5",
    # librdkafka's own retries must not duplicate or reorder records.
    "enable.idempotence": "true",
    "message.timeout.ms": "30000",
}


def producer_config(
    bootstrap_server: str | None = None,
    base: Mapping[str, str] | None = None,
    *,
    delivery_timeout: float | None = None,
) -> dict[str, str]:
    """Properties for the report producer; `delivery_timeout` (seconds) bounds each record's delivery."""
    props = {**PRODUCER_DEFAULTS, **client_config(bootstrap_server, base)}
    if delivery_timeout is not None:
        props["message.timeout.ms"] = str(max(1, round(delivery_timeout * 1000)))
    return props
