"""Idempotent setup of a stack: topics, Restate's Kafka cluster, the worker's
deployment, and the subscription `reports -> ReportChain/process`.

Run it as often as you like: it creates what is missing and leaves the rest.
It is also what the Docker Compose `setup` service runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.settings import KafkaProperties, Settings, get_settings, settings_from

SERVICE = "ReportChain"
HANDLER = "process"


@dataclass(frozen=True)
class SetupConfig:
    """What setup needs, taken from the settings (worker/settings.py)."""

    kafka: KafkaProperties
    """This process's admin client."""
    restate_kafka: KafkaProperties
    """How Restate reaches Kafka: the same properties, perhaps other broker addresses."""
    restate_admin_url: str
    worker_url: str
    restate_kafka_cluster: str
    subscription_group_id: str
    reports_topic: str
    tables_topic: str
    dead_letter_topic: str
    reports_partitions: int
    topic_replication_factor: int | None = None
    """None: the brokers' default (default.replication.factor)."""
    wait_seconds: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> SetupConfig:
        return cls(
            kafka=settings.kafka,
            restate_kafka=settings.restate_kafka,
            restate_admin_url=settings.restate_admin_url,
            worker_url=settings.worker_url,
            restate_kafka_cluster=settings.restate_kafka_cluster,
            subscription_group_id=settings.subscription_group_id,
            reports_topic=settings.reports_topic,
            tables_topic=settings.tables_topic,
            dead_letter_topic=settings.dead_letter_topic,
            reports_partitions=settings.reports_partitions,
            topic_replication_factor=settings.topic_replication_factor,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SetupConfig:
        """From this process's settings, or from those `environ` would give."""
        return cls.of(get_settings() if environ is None else settings_from(environ))

    @property
    def restate_kafka_properties(self) -> dict[str, str]:
        """What Restate's Kafka cluster is given: librdkafka properties, secrets revealed (for the admin API only)."""
        return self.restate_kafka.client_config()

    @property
    def source(self) -> str:
        return f"kafka://{self.restate_kafka_cluster}/{self.reports_topic}"

    @property
    def sink(self) -> str:
        return f"service://{SERVICE}/{HANDLER}"


class SetupError(RuntimeError):
    pass


def _wait(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SetupError(f"{what} did not become reachable within {seconds:.0f} s")
        time.sleep(0.25)


def ensure_topics(cfg: SetupConfig, log: Callable[[str], None]) -> None:
    admin = AdminClient({**cfg.kafka.client_config(), "log_level": "3"})
    existing = admin.list_topics(timeout=10).topics
    wanted = {cfg.reports_topic: cfg.reports_partitions, cfg.tables_topic: 1, cfg.dead_letter_topic: 1}
    replicas = cfg.topic_replication_factor or -1
    missing = [NewTopic(name, n, replication_factor=replicas) for name, n in wanted.items() if name not in existing]
    for name, future in admin.create_topics(missing).items() if missing else []:
        try:
            future.result()
            log(f"created topic {name}")
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise SetupError(f"creating topic {name} failed: {exc}") from exc


def ensure_kafka_cluster(client: httpx.Client, cfg: SetupConfig, log: Callable[[str], None]) -> None:
    name = cfg.restate_kafka_cluster
    props = cfg.restate_kafka_properties
    current = client.get(f"/kafka-clusters/{name}")
    if current.status_code == 404:
        client.post("/kafka-clusters", json={"name": name, "properties": props}).raise_for_status()
        log(f"registered Kafka cluster {name!r} with Restate ({props['bootstrap.servers']})")
    elif not _same_properties(current.json().get("properties", {}), props):
        client.patch(f"/kafka-clusters/{name}", json={"properties": props}).raise_for_status()
        log(f"updated Kafka cluster {name!r} ({props['bootstrap.servers']})")
    else:
        current.raise_for_status()


def _same_properties(registered: dict[str, str], wanted: dict[str, str]) -> bool:
    # Restate shows secrets as "***": those cannot be compared, the rest can.
    if registered.keys() != wanted.keys():
        return False
    return all(value == "***" or value == wanted[key] for key, value in registered.items())


def register_deployment(client: httpx.Client, cfg: SetupConfig, log: Callable[[str], None]) -> None:
    """Register the worker, unless Restate already has exactly what it serves now.

    Every registration is forced (a changed worker replaces the old definition) and creates a new revision
    of its services, even when nothing changed. So first ask Restate what it would register now (a dry
    run, which discovers the worker's endpoint) and compare that with what it has registered for the same
    endpoint: only a new endpoint or a changed service definition is registered again.
    """
    current = _deployment_at(client, cfg.worker_url)
    wanted = _register(client, cfg, dry_run=True)
    if current is not None and _definitions(current) == _definitions(wanted):
        log(f"deployment {cfg.worker_url} unchanged ({_revisions(current)})")
        return
    registered = _register(client, cfg, dry_run=False)
    log(f"registered deployment {cfg.worker_url} ({_revisions(registered)})")


def _register(client: httpx.Client, cfg: SetupConfig, dry_run: bool) -> dict[str, Any]:
    response = client.post("/deployments", json={"uri": cfg.worker_url, "force": True, "dry_run": dry_run})
    if response.status_code >= 400:
        raise SetupError(f"registering the worker at {cfg.worker_url} failed: {response.status_code} {response.text}")
    deployment: dict[str, Any] = response.json()
    services = [s["name"] for s in deployment.get("services", [])]
    if SERVICE not in services:
        raise SetupError(f"the deployment at {cfg.worker_url} does not offer {SERVICE} (found {services})")
    return deployment


def _deployment_at(client: httpx.Client, uri: str) -> dict[str, Any] | None:
    """The deployment Restate has registered for this endpoint, with its full service definitions."""
    listed = client.get("/deployments")
    listed.raise_for_status()
    for deployment in listed.json().get("deployments", []):
        if deployment.get("uri", "").rstrip("/") == uri.rstrip("/"):
            found = client.get(f"/deployments/{deployment['id']}")
            found.raise_for_status()
            return dict(found.json())
    return None


def _definitions(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The services as defined by the worker: what Restate numbers (revision, deployment id) left out, and
    handlers by name (a registered deployment lists them in another order than a dry run)."""
    services = [
        {k: _by_name(v) if k == "handlers" else v for k, v in s.items() if k not in ("revision", "deployment_id")}
        for s in deployment["services"]
    ]
    return sorted(services, key=lambda s: str(s.get("name")))


def _by_name(items: Any) -> Any:
    return sorted(items, key=lambda h: str(h.get("name"))) if isinstance(items, list) else items


def _revisions(deployment: dict[str, Any]) -> str:
    return ", ".join(f"{s['name']} revision {s.get('revision', '?')}" for s in deployment.get("services", []))


def ensure_subscription(client: httpx.Client, cfg: SetupConfig, log: Callable[[str], None]) -> str:
    """Create the subscription unless it exists: a second one would re-read the topic from the start."""
    response = client.get("/subscriptions")
    response.raise_for_status()
    for sub in response.json().get("subscriptions", []):
        if sub["source"] == cfg.source and sub["sink"] == cfg.sink:
            return str(sub["id"])
    options = {
        "group.id": cfg.subscription_group_id,
        "auto.offset.reset": "earliest",
        # A restarted restate-server rejoins the group; the dead member's partitions
        # are reassigned after this timeout (librdkafka's default is 45 s).
        "session.timeout.ms": "10000",
    }
    created = client.post("/subscriptions", json={"source": cfg.source, "sink": cfg.sink, "options": options})
    if created.status_code >= 400:
        raise SetupError(f"creating the subscription failed: {created.status_code} {created.text}")
    log(f"subscribed {cfg.sink} to {cfg.source} (group.id={cfg.subscription_group_id})")
    return str(created.json()["id"])


def kafka_brokers(props: Mapping[str, str]) -> set[int]:
    """The ids of the brokers a metadata request lists (empty when none answers)."""
    try:
        return set(AdminClient({**props, "log_level": "0"}).list_topics(timeout=2).brokers)
    except Exception:  # noqa: BLE001  (any failure means "not yet")
        return set()


def kafka_reachable(props: Mapping[str, str]) -> bool:
    """True when a broker answers a metadata request."""
    return bool(kafka_brokers(props))


def _http_reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def run_setup(cfg: SetupConfig, log: Callable[[str], None] = print) -> str:
    """Bring a stack into the configured shape; returns the subscription id."""
    kafka = cfg.kafka.client_config()
    _wait(f"Kafka at {cfg.kafka.bootstrap_servers}", lambda: kafka_reachable(kafka), cfg.wait_seconds)
    ensure_topics(cfg, log)
    _wait(
        f"Restate admin at {cfg.restate_admin_url}",
        lambda: _http_reachable(f"{cfg.restate_admin_url}/health"),
        cfg.wait_seconds,
    )
    _wait(f"the worker at {cfg.worker_url}", lambda: _http_reachable(f"{cfg.worker_url}/health"), cfg.wait_seconds)
    with httpx.Client(base_url=cfg.restate_admin_url, timeout=30) as client:
        ensure_kafka_cluster(client, cfg, log)
        register_deployment(client, cfg, log)
        return ensure_subscription(client, cfg, log)
