"""Kafka client configs for the command-line tools.

They read the same `KAFKA_*` environment variables as the worker
(worker/settings.py), so one environment configures every client.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.settings import kafka_properties, redact_kafka_properties

# Defaults a user's KAFKA_* variables may override.
PRODUCER_DEFAULTS = {
    "linger.ms": "5",
    # librdkafka's own retries must not duplicate or reorder records.
    "enable.idempotence": "true",
    "message.timeout.ms": "30000",
}


def client_config(bootstrap_server: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: the KAFKA_* environment) plus an optional bootstrap override, as a new dict."""
    props = dict(kafka_properties() if base is None else base)
    if bootstrap_server:
        props["bootstrap.servers"] = bootstrap_server
    return props


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


def describe(props: Mapping[str, str]) -> str:
    """A one-line, secret-free description of a config, for logs and --verbose."""
    return " ".join(f"{k}={v}" for k, v in sorted(redact_kafka_properties(props).items()))
