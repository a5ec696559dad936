"""Idempotent setup of a stack: topics, Restate's Kafka cluster, the worker's
deployment, and the subscription `reports -> ReportChain/process`.

Run it as often as you like: it creates what is missing and leaves the rest.
It is also what the Docker Compose `setup` service runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.settings import kafka_properties

SERVICE = "ReportChain"
HANDLER = "process"


@dataclass(frozen=True)
class SetupConfig:
    # repr=False: these may hold sasl.password.
    kafka: dict[str, str] = field(default_factory=kafka_properties, repr=False)
    """librdkafka properties for this process's admin client."""
    restate_admin_url: str = "http://127.0.0.1:9070"
    worker_url: str = "http://127.0.0.1:9080"
    restate_kafka_cluster: str = "local"
    restate_kafka_properties: dict[str, str] = field(default_factory=dict, repr=False)
    """How Restate reaches Kafka; defaults to `kafka` (same brokers and security settings)."""
    subscription_group_id: str = "report-chain"
    reports_topic: str = "reports"
    tables_topic: str = "tables"
    dead_letter_topic: str = "reports.dlq"
    reports_partitions: int = 4
    wait_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SetupConfig:
        env = os.environ if environ is None else environ
        kafka = kafka_properties(env)
        restate_kafka = dict(kafka)
        if env.get("RESTATE_KAFKA_BOOTSTRAP"):
            restate_kafka["bootstrap.servers"] = env["RESTATE_KAFKA_BOOTSTRAP"]
        return cls(
            kafka=kafka,
            restate_admin_url=env.get("RESTATE_ADMIN_URL", cls.restate_admin_url),
            worker_url=env.get("WORKER_URL", cls.worker_url),
            restate_kafka_cluster=env.get("RESTATE_KAFKA_CLUSTER", cls.restate_kafka_cluster),
            restate_kafka_properties=restate_kafka,
            subscription_group_id=env.get("SUBSCRIPTION_GROUP_ID", cls.subscription_group_id),
            reports_topic=env.get("REPORTS_TOPIC", cls.reports_topic),
            tables_topic=env.get("TABLES_TOPIC", cls.tables_topic),
            dead_letter_topic=env.get("DEAD_LETTER_TOPIC", cls.dead_letter_topic),
            reports_partitions=int(env.get("REPORTS_PARTITIONS", cls.reports_partitions)),
        )

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
    admin = AdminClient({**cfg.kafka, "log_level": "3"})
    existing = admin.list_topics(timeout=10).topics
    wanted = {cfg.reports_topic: cfg.reports_partitions, cfg.tables_topic: 1, cfg.dead_letter_topic: 1}
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=-1) for name, n in wanted.items() if name not in existing
    ]
    for name, future in admin.create_topics(missing).items() if missing else []:
        try:
            future.result()
            log(f"created topic {name}")
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise SetupError(f"creating topic {name} failed: {exc}") from exc


def ensure_kafka_cluster(client: httpx.Client, cfg: SetupConfig, log: Callable[[str], None]) -> None:
    name = cfg.restate_kafka_cluster
    props = cfg.restate_kafka_properties or dict(cfg.kafka)
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
    # Forced: a changed worker (new handler options, new version) replaces the old registration.
    response = client.post("/deployments", json={"uri": cfg.worker_url, "force": True})
    if response.status_code >= 400:
        raise SetupError(f"registering the worker at {cfg.worker_url} failed: {response.status_code} {response.text}")
    services = [s["name"] for s in response.json().get("services", [])]
    if SERVICE not in services:
        raise SetupError(f"the deployment at {cfg.worker_url} does not offer {SERVICE} (found {services})")
    log(f"registered deployment {cfg.worker_url} ({', '.join(services)})")


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


def kafka_reachable(props: Mapping[str, str]) -> bool:
    """True when a broker answers a metadata request (any failure means "not yet")."""
    try:
        return bool(AdminClient({**props, "log_level": "0"}).list_topics(timeout=2).brokers)
    except Exception:  # noqa: BLE001
        return False


def _http_reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def run_setup(cfg: SetupConfig, log: Callable[[str], None] = print) -> str:
    """Bring a stack into the configured shape; returns the subscription id."""
    _wait(f"Kafka at {cfg.kafka['bootstrap.servers']}", lambda: kafka_reachable(cfg.kafka), cfg.wait_seconds)
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
