"""docker-compose.yml, deploy/haproxy/haproxy.cfg and the Dockerfile, checked without a Docker engine.

The real Docker Compose (v2, built from the Go module proxy by `make deps`) reads the file: it
validates it against the Compose specification and resolves profiles, YAML anchors and variable
interpolation exactly as `docker compose up` would. What it prints (`config --format json`) is
what the checks below read: they assert only this project's own wiring (which address reaches
which service, which ports are published where, which settings reach the worker).

Each check is a function from a resolved project to a list of problems. The tests run every check
on the real file (no problems expected) and on deliberately broken copies (the break must be
reported), so a check that quietly stopped checking fails here too. A missing Compose binary fails
every test, loudly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devstack.components import Balancer
from devstack.config import SINGLE, StackConfig
from devstack.identity import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE
from devstack.setup import SetupConfig
from worker.settings import Settings, settings_from

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
RESTATE_TOML = ROOT / "restate.toml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
PACKAGE_JSON = ROOT / "package.json"


def _compose_binary() -> Path:
    version = re.search(r"^COMPOSE_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert version, "the Makefile pins no COMPOSE_VERSION"
    return ROOT / ".cache" / f"compose-{version.group(1)}" / "docker-compose"


COMPOSE = _compose_binary()
# The worker's configuration that must reach it from the operator's shell or .env.
PASSTHROUGH_ENV = (
    "LLM_PROVIDER",
    "LLM_MODEL",
    "LLM_MODEL_EXTRACT",
    "LLM_MODEL_SORT",
    "LLM_MODEL_FORMAT",
    "LLM_TIMEOUT_SECONDS",
    "LLM_MAX_CONCURRENCY",
    "LLM_PRICE_PROMPT_PER_1K",
    "LLM_PRICE_COMPLETION_PER_1K",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "STEP_MAX_ATTEMPTS",
    "MAX_MESSAGE_BYTES",
    "MAX_REPORT_ID_BYTES",
    "OUTPUT_MAX_RECORD_BYTES",
    "VERIFY_KAFKA_SOURCE",
    "WORKER_DRAIN_TIMEOUT",
    "RESTATE_IDENTITY_KEYS",
)
TOPIC_ENV = {"REPORTS_TOPIC": "reports_topic", "TABLES_TOPIC": "tables_topic", "DEAD_LETTER_TOPIC": "dead_letter_topic"}
RESTATE_ADMIN_PORT, RESTATE_NODE_PORT, WORKER_PORT = 9070, 5122, 9080
IDENTITY, IDENTITY_DIR = "identity", "/identity"
SIGNING_KEY_ENV = "RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE"
# A concrete release: `1.7.12`, `v24.2.18`, `3.11.11-slim-bookworm`; not `latest`, `stable`, `3`.
PINNED_TAG = re.compile(r"v?\d+\.\d+(\.\d+)?([.-][\w.-]+)?")
# Published ports are for this machine only unless the operator opens them (HOST_BIND=0.0.0.0).
DEFAULT_HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class Roles:
    """Which service plays which part in a profile."""

    kafka: tuple[str, ...]
    restate: tuple[str, ...]
    worker: str
    endpoint: str
    """What Restate calls: the worker, or the balancer in front of its replicas."""
    setup: str
    extra: tuple[str, ...] = ()


PROFILES = {
    "single": Roles(("redpanda",), ("restate",), "worker", "worker", "setup", extra=("console", "identity")),
    "cluster": Roles(
        ("redpanda-1", "redpanda-2", "redpanda-3"),
        ("restate-1", "restate-2", "restate-3"),
        "workers",
        "balancer",
        "setup-cluster",
        extra=("identity",),
    ),
}


# ---------------------------------------------------------------- the real Compose


class ComposeError(AssertionError):
    pass


@cache
def _resolved(text: str, profile: str, env: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """`docker compose config` of the compose text `text`, as if `env` were the operator's shell."""
    assert COMPOSE.is_file(), f"{COMPOSE} is missing: run `make deps` (it builds Docker Compose from the Go proxy)"
    scratch = ROOT / ".cache" / "compose-test"
    scratch.mkdir(parents=True, exist_ok=True)
    source = scratch / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yml"
    source.write_text(text)
    empty = scratch / "empty.env"  # not the developer's .env: the checks need a known environment
    empty.write_text("")
    argv = [str(COMPOSE), "--project-directory", str(ROOT), "-f", str(source), "--env-file", str(empty)]
    argv += ["--profile", profile, "config", "--format", "json"]
    shell = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch), **dict(env)}
    done = subprocess.run(argv, capture_output=True, text=True, env=shell, timeout=60, check=False)
    if done.returncode != 0:
        raise ComposeError(f"docker compose config rejected the file ({profile}): {done.stderr.strip()}")
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


@dataclass(frozen=True)
class Project:
    """One profile of a compose file, resolved by Docker Compose on demand for a given shell."""

    text: str
    profile: str

    @property
    def roles(self) -> Roles:
        return PROFILES[self.profile]

    def config(self, shell: Mapping[str, str] | None = None) -> dict[str, Any]:
        return _resolved(self.text, self.profile, tuple(sorted((shell or {}).items())))

    def services(self, shell: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        return dict(self.config(shell).get("services") or {})

    def service(self, name: str, shell: Mapping[str, str] | None = None) -> dict[str, Any]:
        return dict(self.services(shell).get(name) or {})

    def env(self, name: str, shell: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment service `name`'s container gets."""
        return {k: "" if v is None else str(v) for k, v in (self.service(name, shell).get("environment") or {}).items()}


Check = Callable[[Project], list[str]]


def _project(profile: str, data: Any | None = None) -> Project:
    text = COMPOSE_FILE.read_text() if data is None else yaml.safe_dump(data, sort_keys=False)
    return Project(text, profile)


# ---------------------------------------------------------------- small readers of resolved services


def command_flags(command: Any) -> dict[str, str]:
    """`--name value` / `--name=value` flags of a command list (Redpanda's start flags)."""
    tokens = [str(t) for t in command or []]
    flags: dict[str, str] = {}
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            if not sep and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value = tokens[i + 1]
            flags[name] = value
    return flags


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """`internal://0.0.0.0:29092,external://0.0.0.0:9092` -> {name: (host, port)}."""
    result: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, address = part.rpartition("://")
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


def published(svc: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port."""
    return [
        (str(p.get("host_ip", "")), int(p["published"]), int(p["target"]))
        for p in svc.get("ports") or []
        if p.get("published")
    ]


def healthcheck(svc: Mapping[str, Any]) -> str:
    check = svc.get("healthcheck") or {}
    test = check.get("test") or []
    return "" if check.get("disable") or test[:1] == ["NONE"] else " ".join(str(t) for t in test[1:])


def mounts_at(svc: Mapping[str, Any], target: str) -> list[dict[str, Any]]:
    return [m for m in svc.get("volumes") or [] if m.get("target") == target]


def image_tag(image: str) -> str | None:
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def built_here(svc: Mapping[str, Any]) -> bool:
    context = (svc.get("build") or {}).get("context")
    return context is not None and Path(context).resolve() == ROOT


def code_settings() -> Settings:
    """The worker's settings with nothing set: the code's defaults."""
    return settings_from({})


def _port(url: str) -> int | None:
    return urlsplit(url).port


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


# ---------------------------------------------------------------- checks


def check_services(project: Project) -> list[str]:
    roles = project.roles
    wanted = {*roles.kafka, *roles.restate, roles.worker, roles.endpoint, roles.setup, *roles.extra}
    found = set(project.services())
    problems = [f"service {name!r} is missing from profile {project.profile}" for name in sorted(wanted - found)]
    # One profile never starts another's services: they share host ports.
    problems += [f"profile {project.profile} also starts {name!r}" for name in sorted(found - wanted)]
    return problems


def check_images_pinned(project: Project) -> list[str]:
    problems: list[str] = []
    ours = {svc.get("image") for svc in project.services().values() if built_here(svc)}
    for name, svc in project.services().items():
        image = str(svc.get("image") or "")
        if built_here(svc) or image in ours:
            continue
        tag = image_tag(image)
        if not image:
            problems.append(f"service {name!r} has neither an image nor a build from this repository")
        elif tag is None:
            problems.append(f"service {name!r}: image {image!r} has no tag (that means `latest`)")
        elif "@" not in image and not PINNED_TAG.fullmatch(tag):
            problems.append(f"service {name!r}: image {image!r} is not pinned to a release (tag {tag!r})")
    return problems


def check_host_ports(project: Project) -> list[str]:
    """Unique, and bound to 127.0.0.1 unless HOST_BIND opens them."""
    problems: list[str] = []
    owner: dict[int, str] = {}
    for name, svc in project.services().items():
        for host_ip, host_port, _ in published(svc):
            if host_port in owner:
                problems.append(f"host port {host_port} is published by both {owner[host_port]!r} and {name!r}")
            owner[host_port] = name
            if host_ip != DEFAULT_HOST_IP:
                problems.append(
                    f"{name} publishes {host_port} on {host_ip or 'every interface'}, not {DEFAULT_HOST_IP}"
                )
    opened = {ip for svc in project.services({"HOST_BIND": "0.0.0.0"}).values() for ip, _, _ in published(svc)}
    if opened != {"0.0.0.0"}:
        problems.append(f"HOST_BIND=0.0.0.0 does not open every published port (host ips: {sorted(opened)})")
    return problems


def _redpanda_listeners(project: Project, name: str) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]:
    flags = command_flags(project.service(name).get("command"))
    return listeners(flags.get("kafka-addr", "")), listeners(flags.get("advertise-kafka-addr", ""))


def internal_kafka_addresses(project: Project) -> tuple[list[str], list[str]]:
    """Each broker's address for containers (a listener advertised under its own service name), and problems."""
    addresses: list[str] = []
    problems: list[str] = []
    for name in project.roles.kafka:
        bound, advertised = _redpanda_listeners(project, name)
        internal = [(listener, host, port) for listener, (host, port) in advertised.items() if host == name]
        if len(internal) != 1:
            problems.append(f"{name} must advertise exactly one listener under its service name, found {internal}")
            continue
        listener, host, port = internal[0]
        if bound.get(listener, ("", -1))[1] != port:
            problems.append(
                f"{name} advertises {listener}://{host}:{port} but binds that listener to {bound.get(listener)}"
            )
        addresses.append(f"{host}:{port}")
    return addresses, problems


def check_kafka_wiring(project: Project) -> list[str]:
    roles = project.roles
    addresses, problems = internal_kafka_addresses(project)
    if problems:
        return problems
    # Every container-side client must use the internal listeners: `localhost:9092` inside a
    # container is that container's own loopback.
    clients = [
        (roles.setup, "RESTATE_KAFKA_BOOTSTRAP", "the brokers Restate is told to consume from"),
        (roles.setup, "KAFKA_BOOTSTRAP_SERVERS", "setup's admin client"),
        (roles.worker, "KAFKA_BOOTSTRAP_SERVERS", "the worker's producer"),
    ]
    clients += [(name, "KAFKA_BROKERS", "Redpanda Console") for name in roles.extra if name == "console"]
    for name, var, what in clients:
        value = project.env(name).get(var)
        if value is None:
            problems.append(f"{name}.{var} ({what}) is not set; it must be {','.join(addresses)}")
        elif sorted(value.split(",")) != sorted(addresses):
            problems.append(f"{name}.{var} ({what}) is {value!r}, not the brokers' internal listeners {addresses}")
    # Host clients bootstrap on an external listener and are sent back to its advertised address,
    # so that port must be published onto the listener's bound port.
    for name in roles.kafka:
        bound, advertised = _redpanda_listeners(project, name)
        external = {n: a for n, a in advertised.items() if a[0] in ("localhost", "127.0.0.1")}
        if not external:
            problems.append(f"{name} advertises no listener on localhost for clients on the host")
        ports = {(host_port, target) for _, host_port, target in published(project.service(name))}
        for listener, (host, port) in external.items():
            if listener not in bound:
                problems.append(f"{name} advertises {listener}://{host}:{port} but does not bind that listener")
            elif (port, bound[listener][1]) not in ports:
                problems.append(
                    f"{name} advertises {host}:{port} to host clients but does not publish host port {port}"
                )
    return problems


def check_worker_address(project: Project) -> list[str]:
    roles = project.roles
    setup_env = project.env(roles.setup)
    url = setup_env.get("WORKER_URL", "")
    if not url:
        return [f"{roles.setup}.WORKER_URL is not set: setup would register http://127.0.0.1:9080"]
    problems: list[str] = []
    if _host(url) != roles.endpoint:
        problems.append(f"{roles.setup}.WORKER_URL {url!r} points at {_host(url)!r}, not {roles.endpoint!r}")
    worker = project.service(roles.worker)
    if not built_here(worker) or worker.get("command") not in (None, ["python", "-m", "worker"]):
        problems.append(f"service {roles.worker!r} does not run this repository's worker")
    bind_port = int(project.env(roles.worker).get("WORKER_BIND", code_settings().worker_bind).rpartition(":")[2])
    health = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/health", healthcheck(worker))
    ports = {"the worker's WORKER_BIND": bind_port, "its healthcheck": int(health.group(1)) if health else None}
    ports["the Dockerfile's EXPOSE"] = bind_port if bind_port in expose_ports(DOCKERFILE.read_text()) else None
    if roles.endpoint == roles.worker:
        ports["WORKER_URL"] = _port(url)
    else:
        ports.update(balancer_ports(project, url))
    if len(set(ports.values())) != 1:
        problems.append(f"the worker's port disagrees: {ports}")
    admin = setup_env.get("RESTATE_ADMIN_URL", "")
    if _host(admin) not in roles.restate or _port(admin) != RESTATE_ADMIN_PORT:
        problems.append(f"{roles.setup}.RESTATE_ADMIN_URL is {admin!r}, not a Restate node's admin port")
    return problems


def balancer_ports(project: Project, url: str) -> dict[str, int | None]:
    """Where the balancer listens and where it sends, from the config file it really mounts."""
    target = "/usr/local/etc/haproxy/haproxy.cfg"
    mounts = mounts_at(project.service(project.roles.endpoint), target)
    if len(mounts) != 1 or Path(mounts[0]["source"]).resolve() != HAPROXY_CFG:
        return {f"the balancer's config at {target} (not {HAPROXY_CFG.relative_to(ROOT)})": None}
    text = HAPROXY_CFG.read_text()
    bind = re.search(r"^\s*bind\s+\S*:(\d+)", text, re.M)
    servers = re.search(r"^\s*server-template\s+\S+\s+\d+\s+(\S+):(\d+)", text, re.M)
    found: dict[str, int | None] = {
        "WORKER_URL": _port(url),
        "the balancer's bind": int(bind.group(1)) if bind else None,
        "the balancer's exposed port": _port(url)
        if str(_port(url)) in project.service("balancer").get("expose", [])
        else None,
    }
    if not servers or servers.group(1) != project.roles.worker:
        found[f"the balancer's servers (not the {project.roles.worker!r} service)"] = None
    else:
        found["the balancer's servers"] = int(servers.group(2))
    return found


def check_topics(project: Project) -> list[str]:
    roles = project.roles
    problems: list[str] = []
    settings = code_settings()
    for name in (roles.worker, roles.setup):
        env = project.env(name)
        for var, field in TOPIC_ENV.items():
            expected = getattr(settings, field)
            if env.get(var) != expected:
                problems.append(f"{name}.{var} is {env.get(var)!r}, the code's default is {expected!r}")
    # An operator's override must reach both: worker and setup name the same topics.
    probe = {var: f"probe-{var.lower()}" for var in TOPIC_ENV}
    for var in TOPIC_ENV:
        worker, setup = project.env(roles.worker, probe).get(var), project.env(roles.setup, probe).get(var)
        if worker != setup or worker != probe[var]:
            problems.append(f"with {var} set in the shell, worker and setup get {worker!r} and {setup!r}")
    return problems


def check_subscription_target(project: Project) -> list[str]:
    """Setup subscribes the service the worker image serves: ReportChain/process."""
    from worker.service import report_chain  # heavy (restate SDK): only this check needs it

    cfg = SetupConfig.from_env(project.env(project.roles.setup))
    problems: list[str] = []
    if cfg.sink != f"service://{report_chain.name}/process" or "process" not in report_chain.handlers:
        problems.append(f"setup subscribes {cfg.sink}, but the worker serves {report_chain.name}")
    if cfg.source != f"kafka://{cfg.restate_kafka_cluster}/{code_settings().reports_topic}":
        problems.append(f"setup subscribes from {cfg.source}, not the worker's input topic")
    return problems


def check_restate(project: Project) -> list[str]:
    problems: list[str] = []
    pinned = json.loads(PACKAGE_JSON.read_text())["dependencies"]["@restatedev/restate-server"]
    declared = set(project.config().get("volumes") or {})
    for name in project.roles.restate:
        svc = project.service(name)
        image = str(svc.get("image", ""))
        if not image.rsplit(":", 1)[0].endswith("restatedev/restate") or image_tag(image) != pinned:
            problems.append(f"{name} runs {image!r}, not restatedev/restate:{pinned} (the local stack's pin)")
        env = project.env(name)
        config = env.get("RESTATE_CONFIG", "")
        mounted = mounts_at(svc, config) if config else []
        if not config:
            problems.append(f"{name}: RESTATE_CONFIG is not set, so restate.toml would be ignored")
        elif len(mounted) != 1 or Path(mounted[0]["source"]).resolve() != RESTATE_TOML:
            problems.append(f"{name}: {config} is not this repository's restate.toml")
        elif not mounted[0].get("read_only"):
            problems.append(f"{name}: {config} is mounted read-write; mount it read-only")
        data = mounts_at(svc, env.get("RESTATE_BASE_DIR", "/restate-data"))
        if len(data) != 1 or data[0].get("type") != "volume" or data[0].get("source") not in declared:
            problems.append(f"{name}: no named volume at its base dir: journals would die with the container")
        if not env.get("RESTATE_NODE_NAME"):
            problems.append(f"{name}: no fixed node name; its data dir follows the hostname, which changes")
        if not healthcheck(svc):
            problems.append(f"{name} has no healthcheck, so setup cannot wait for it")
    if len(project.roles.restate) > 1:
        problems += _restate_cluster(project)
    return problems


def _restate_cluster(project: Project) -> list[str]:
    nodes = project.roles.restate
    envs = {name: project.env(name) for name in nodes}
    problems: list[str] = []
    peers = sorted(f"http://{name}:{RESTATE_NODE_PORT}" for name in nodes)
    for name, env in envs.items():
        if sorted(json.loads(env.get("RESTATE_METADATA_CLIENT__ADDRESSES") or "[]")) != peers:
            problems.append(f"{name}: the metadata client does not list every node ({peers})")
        if env.get("RESTATE_ADVERTISED_ADDRESS") != f"http://{name}:{RESTATE_NODE_PORT}":
            problems.append(f"{name}: advertises {env.get('RESTATE_ADVERTISED_ADDRESS')!r}, not its service name")
        expected = {
            "RESTATE_METADATA_CLIENT__TYPE": "replicated",
            "RESTATE_BIFROST__DEFAULT_PROVIDER": "replicated",
            "RESTATE_DEFAULT_REPLICATION": "2",
        }
        problems += [
            f"{name}: {var} is {env.get(var)!r}, not {value!r}"
            for var, value in expected.items()
            if env.get(var) != value
        ]
        if "RESTATE_ROLES" in env:
            problems.append(f"{name}: RESTATE_ROLES overrides restate.toml's roles (no HTTP ingress, on purpose)")
    provisioning = [name for name, env in envs.items() if env.get("RESTATE_AUTO_PROVISION") == "true"]
    if len(provisioning) != 1:
        problems.append(f"exactly one node must auto-provision the cluster, found {provisioning}")
    if len({env.get("RESTATE_NODE_NAME") for env in envs.values()}) != len(nodes):
        problems.append("the Restate nodes' names are not distinct")
    return problems


def check_llm_passthrough(project: Project) -> list[str]:
    problems: list[str] = []
    worker = project.roles.worker
    probes = {var: f"probe-{var.lower()}" for var in PASSTHROUGH_ENV}
    env = project.env(worker, probes)
    for var, value in probes.items():
        # Set in the shell, the value must arrive unchanged: proves it is interpolated, not hard-coded.
        if env.get(var) != value:
            problems.append(f"{worker}.{var} is {env.get(var)!r} with {var}={value} in the shell: not passed through")
    return problems


def check_worker_settings_load(project: Project) -> list[str]:
    """With nothing set in the shell, the worker starts and sees the code's own defaults."""
    worker = project.roles.worker
    env = project.env(worker)
    try:
        from_compose = settings_from(env)
    except ValueError as exc:
        return [f"the worker would not start with the compose environment: {exc}"]
    defaults = code_settings()
    return [
        f"{worker}.{var} defaults to {env.get(var)!r} in compose but the code's default is "
        f"{getattr(defaults, var.lower())!r}"
        for var in PASSTHROUGH_ENV
        if getattr(from_compose, var.lower()) != getattr(defaults, var.lower())
    ]


def check_setup_service(project: Project) -> list[str]:
    roles = project.roles
    svc, worker = project.service(roles.setup), project.service(roles.worker)
    problems: list[str] = []
    if svc.get("command") != ["python", "-m", "devstack", "setup"]:
        problems.append(f"{roles.setup} command is {svc.get('command')!r}, not python -m devstack setup")
    if svc.get("restart") != "no":
        problems.append(f'{roles.setup} is one-shot: restart must be "no", found {svc.get("restart")!r}')
    if svc.get("image") != worker.get("image"):
        problems.append(f"{roles.setup} must run the worker's image, which has devstack installed")
    depends = svc.get("depends_on") or {}
    waits_for = [*roles.kafka, *roles.restate, roles.endpoint]
    for name in waits_for:
        if (depends.get(name) or {}).get("condition") != "service_healthy":
            problems.append(f"{roles.setup} must wait for {name!r} to be healthy (condition service_healthy)")
        if not healthcheck(project.service(name)):
            problems.append(f"{name!r} has no healthcheck, so `service_healthy` could never hold")
    if len(roles.kafka) > 1 and project.env(roles.setup).get("TOPIC_REPLICATION_FACTOR") != str(len(roles.kafka)):
        problems.append(
            f"{roles.setup} must create topics on all {len(roles.kafka)} brokers (TOPIC_REPLICATION_FACTOR)"
        )
    return problems


def check_worker_replicas(project: Project) -> list[str]:
    """The cluster's workers: WORKER_REPLICAS of them (default 2), all reachable through the balancer."""
    if project.roles.endpoint == project.roles.worker:
        return []
    problems: list[str] = []
    for shell, wanted in (({}, 2), ({"WORKER_REPLICAS": "5"}, 5)):
        replicas = (project.service(project.roles.worker, shell).get("deploy") or {}).get("replicas")
        if replicas != wanted:
            problems.append(
                f"with {shell or 'nothing'} set, {project.roles.worker} has {replicas} replicas, not {wanted}"
            )
    slots = re.search(r"^\s*server-template\s+\S+\s+(\d+)\s", HAPROXY_CFG.read_text(), re.M)
    if not slots or int(slots.group(1)) < 9:
        problems.append("the balancer has room for fewer than 9 worker replicas")
    if published(project.service(project.roles.worker)):
        problems.append(f"{project.roles.worker} publishes a port: only the balancer may reach the workers")
    return problems


def check_request_signing(project: Project) -> list[str]:
    """Signing is on: `identity` makes the key pair once into a volume, before restate-server (which signs
    with the private key) and the worker (which refuses what the public key did not sign) start."""
    roles = project.roles
    problems: list[str] = []
    maker = project.service(IDENTITY)
    if maker.get("command") != ["python", "-m", "devstack", "identity", "--dir", IDENTITY_DIR]:
        problems.append(f"{IDENTITY} command is {maker.get('command')!r}, not python -m devstack identity --dir ...")
    if maker.get("restart") != "no" or maker.get("image") != project.service(roles.worker).get("image"):
        problems.append(f"{IDENTITY} must be one-shot (restart: no) and run the worker's image")
    [made] = mounts_at(maker, IDENTITY_DIR) or [{}]
    if made.get("type") != "volume" or made.get("read_only"):
        problems.append(f"{IDENTITY} must write into a named volume at {IDENTITY_DIR}")
    needs = {name: f"{IDENTITY_DIR}/{PRIVATE_KEY_FILE}" for name in roles.restate} | {
        roles.worker: f"{IDENTITY_DIR}/{PUBLIC_KEY_FILE}"
    }
    for name, key_file in needs.items():
        svc = project.service(name)
        variable = SIGNING_KEY_ENV if name in roles.restate else "RESTATE_IDENTITY_KEYS_FILE"
        if project.env(name).get(variable) != key_file:
            problems.append(f"{name}.{variable} is {project.env(name).get(variable)!r}, not {key_file}")
        [mount] = mounts_at(svc, IDENTITY_DIR) or [{}]
        if mount.get("source") != made.get("source") or not mount.get("read_only"):
            problems.append(f"{name} must mount {IDENTITY}'s volume at {IDENTITY_DIR}, read-only")
        if ((svc.get("depends_on") or {}).get(IDENTITY) or {}).get("condition") != "service_completed_successfully":
            problems.append(f"{name} must start after {IDENTITY} completed (service_completed_successfully)")
    return problems


def check_graceful_stop(project: Project) -> list[str]:
    """Docker waits longer than the worker's drain before its SIGKILL, which would duplicate what was publishing."""
    worker = project.roles.worker
    drain = float(project.env(worker).get("WORKER_DRAIN_TIMEOUT") or code_settings().worker_drain_timeout)
    grace = project.service(worker).get("stop_grace_period") or "10s"  # Docker's default
    match = re.fullmatch(r"(\d+)(s|m)", str(grace))
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 1) if match else 0
    if seconds < drain + 5:
        return [f"{worker}.stop_grace_period is {grace}: not longer than WORKER_DRAIN_TIMEOUT ({drain:g} s) + 5 s"]
    return []


COMPOSE_CHECKS: tuple[Check, ...] = (
    check_services,
    check_images_pinned,
    check_host_ports,
    check_kafka_wiring,
    check_worker_address,
    check_topics,
    check_subscription_target,
    check_restate,
    check_llm_passthrough,
    check_worker_settings_load,
    check_setup_service,
    check_worker_replicas,
    check_request_signing,
    check_graceful_stop,
)


# ---------------------------------------------------------------- the Dockerfile (no engine to build it)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return result


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def expose_ports(text: str) -> set[int]:
    stage = final_stage(dockerfile_instructions(text))
    return {int(p.split("/")[0]) for ins in stage if ins.keyword == "EXPOSE" for p in ins.args.split()}


def check_dockerfile(text: str) -> list[str]:
    problems: list[str] = []
    instructions = dockerfile_instructions(text)
    args: dict[str, str] = {}
    stages: set[str] = {"scratch"}  # `FROM build` names an earlier stage, not an image to pin
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, default = ins.args.partition("=")
            args[name.strip()] = default.strip()
        elif ins.keyword == "FROM":
            words = ins.args.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            tag = image_tag(image)
            if image not in stages and "@" not in image and (tag is None or not PINNED_TAG.fullmatch(tag)):
                problems.append(f"Dockerfile: base image {image!r} is not pinned to a release")
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    stage = final_stage(instructions)
    users = [ins.args.split(":")[0] for ins in stage if ins.keyword == "USER"]
    if not users:
        problems.append("Dockerfile: the final stage has no USER, so the worker would run as root")
    elif users[-1] in ("root", "0"):
        problems.append(f"Dockerfile: the final stage runs as {users[-1]!r}; use a non-root user")
    health = [ins.args for ins in stage if ins.keyword == "HEALTHCHECK"]
    if not health or health[-1].upper() == "NONE":
        problems.append("Dockerfile: the final stage has no HEALTHCHECK")
    elif "/health" not in health[-1]:
        problems.append(f"Dockerfile: HEALTHCHECK does not call the worker's /health: {health[-1]!r}")
    if not expose_ports(text):
        problems.append("Dockerfile: no EXPOSE for the worker's port")
    cmds = [ins.args for ins in stage if ins.keyword == "CMD"]
    # Exec form, so the interpreter is PID 1 and receives SIGTERM for a graceful shutdown.
    if not cmds or not cmds[-1].startswith("[") or json.loads(cmds[-1]) != ["python", "-m", "worker"]:
        problems.append(f'Dockerfile: CMD must be ["python", "-m", "worker"], found {cmds[-1:] or "none"}')
    if not any(ins.keyword == "RUN" and re.search(r"pip install\b.*\s\.(\s|$)", ins.args) for ins in instructions):
        problems.append("Dockerfile: the project is not installed with `pip install .`")
    return problems


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("profile", list(PROFILES))
def test_compose_accepts_the_file(profile: str) -> None:
    done = subprocess.run(
        [str(COMPOSE), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--profile", profile,
         "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": os.environ.get("PATH", "")},
    )  # fmt: skip
    assert COMPOSE.is_file(), "run `make deps`: it builds Docker Compose"
    assert done.returncode == 0, done.stderr


def test_compose_itself_rejects_what_the_specification_does_not_allow() -> None:
    # The validator is real: a port that is not a port, or an unknown key, is refused by Compose.
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["worker"]["ports"] = ["not-a-port"]
    with pytest.raises(ComposeError, match="rejected"):
        _project("single", data).config()
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["restate-1"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(ComposeError, match="rejected"):
        _project("cluster", data).config()


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("check", COMPOSE_CHECKS, ids=lambda c: c.__name__)
def test_real_compose_file_passes(check: Check, profile: str) -> None:
    problems = check(_project(profile))
    assert not problems, f"docker-compose.yml, profile {profile}:\n  " + "\n  ".join(problems)


def test_the_balancer_config_is_valid_haproxy_and_balances_like_the_local_stack() -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed: run `make deps`"
    done = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    def policy(text: str) -> set[str]:
        # Everything but where servers are and how they are found: those differ by design.
        skip = ("server", "server-template", "bind", "resolvers", "nameserver", "accepted_payload_size", "hold", "#")
        lines = {" ".join(line.split()) for line in text.splitlines()}
        return {
            re.sub(r" resolvers docker init-addr none", "", line)
            for line in lines
            if line and not line.startswith(skip)
        }

    local = Balancer(StackConfig.create(SINGLE, 2)).config()
    assert policy(HAPROXY_CFG.read_text()) == policy(local)


def test_real_dockerfile_passes() -> None:
    problems = check_dockerfile(DOCKERFILE.read_text())
    assert not problems, "\n  ".join(problems)


@dataclass(frozen=True)
class Breakage:
    """A deliberate mistake in the YAML, the check that must catch it, and a fragment of the expected problem."""

    name: str
    profile: str
    check: Check
    expect: str
    apply: Callable[[dict[str, Any]], None]


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _delete(*path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


def _replace_in_command(service: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        svc = data["services"][service]
        svc["command"] = [str(arg).replace(old, new) for arg in svc["command"]]

    return apply


S = "services"
BREAKAGES = (
    Breakage("no console", "single", check_services, "'console' is missing", _delete(S, "console")),
    Breakage("single in cluster", "cluster", check_services, "also starts 'restate'", _set(S, "restate", "profiles", value=["single", "cluster"])),
    Breakage("restate latest", "single", check_images_pinned, "not pinned", _set(S, "restate", "image", value="docker.restate.dev/restatedev/restate:latest")),
    Breakage("console untagged", "single", check_images_pinned, "has no tag", _set(S, "console", "image", value="redpandadata/console")),
    Breakage("balancer untagged", "cluster", check_images_pinned, "has no tag", _set(S, "balancer", "image", value="haproxy")),
    Breakage("port clash", "single", check_host_ports, "published by both", _set(S, "console", "ports", value=["127.0.0.1:9070:8080"])),
    Breakage("port open to all", "cluster", check_host_ports, "every interface", _set(S, "restate-2", "ports", value=["9071:9070"])),
    Breakage("restate told localhost", "single", check_kafka_wiring, "RESTATE_KAFKA_BOOTSTRAP", _set(S, "setup", "environment", "RESTATE_KAFKA_BOOTSTRAP", value="localhost:9092")),
    Breakage("worker on external port", "single", check_kafka_wiring, "worker.KAFKA_BOOTSTRAP_SERVERS", _set(S, "worker", "environment", "KAFKA_BOOTSTRAP_SERVERS", value="redpanda:9092")),
    Breakage("workers miss a broker", "cluster", check_kafka_wiring, "workers.KAFKA_BOOTSTRAP_SERVERS", _set(S, "workers", "environment", "KAFKA_BOOTSTRAP_SERVERS", value="redpanda-1:29092,redpanda-2:29092")),
    Breakage("restate bootstrap unset", "single", check_kafka_wiring, "is not set", _delete(S, "setup", "environment", "RESTATE_KAFKA_BOOTSTRAP")),
    Breakage("internal listener under another name", "cluster", check_kafka_wiring, "exactly one listener", _replace_in_command("redpanda-2", "internal://redpanda-2:", "internal://broker:")),
    Breakage("external port not published", "single", check_kafka_wiring, "does not publish host port 9092", _set(S, "redpanda", "ports", value=["127.0.0.1:19092:9092"])),
    Breakage("worker url port", "single", check_worker_address, "disagrees", _set(S, "setup", "environment", "WORKER_URL", value="http://worker:8000")),
    Breakage("worker url at restate", "single", check_worker_address, "not 'worker'", _set(S, "setup", "environment", "WORKER_URL", value="http://restate:9080")),
    Breakage("cluster registers a replica", "cluster", check_worker_address, "not 'balancer'", _set(S, "setup-cluster", "environment", "WORKER_URL", value="http://workers:9080")),
    Breakage("balancer config elsewhere", "cluster", check_worker_address, "balancer's config", _set(S, "balancer", "volumes", value=["./other.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"])),
    Breakage("workers bind elsewhere", "cluster", check_worker_address, "disagrees", _set(S, "workers", "environment", "WORKER_BIND", value="0.0.0.0:9081")),
    Breakage("admin url", "single", check_worker_address, "RESTATE_ADMIN_URL", _set(S, "setup", "environment", "RESTATE_ADMIN_URL", value="http://127.0.0.1:9070")),
    Breakage("tables topic", "single", check_topics, "TABLES_TOPIC", _set(S, "setup", "environment", "TABLES_TOPIC", value="results")),
    Breakage("hard-coded topic", "cluster", check_topics, "REPORTS_TOPIC set in the shell", _set(S, "workers", "environment", "REPORTS_TOPIC", value="reports")),
    Breakage("subscription from another topic", "single", check_subscription_target, "subscribes from", _set(S, "setup", "environment", "REPORTS_TOPIC", value="other")),
    Breakage("restate version", "single", check_restate, "not restatedev/restate", _set(S, "restate", "image", value="docker.restate.dev/restatedev/restate:1.7.11")),
    Breakage("restate config elsewhere", "single", check_restate, "not this repository's restate.toml", _set(S, "restate", "volumes", value=["./other.toml:/etc/restate/restate.toml:ro", "restate-data:/restate-data"])),
    Breakage("restate config writable", "cluster", check_restate, "read-only", _set(S, "restate-3", "volumes", value=["./restate.toml:/etc/restate/restate.toml", "restate-3-data:/restate-data"])),
    Breakage("restate data not persisted", "single", check_restate, "no named volume", _set(S, "restate", "volumes", value=["./restate.toml:/etc/restate/restate.toml:ro"])),
    Breakage("two provisioners", "cluster", check_restate, "exactly one node", _set(S, "restate-2", "environment", "RESTATE_AUTO_PROVISION", value="true")),
    Breakage("metadata peers", "cluster", check_restate, "does not list every node", _set(S, "restate-3", "environment", "RESTATE_METADATA_CLIENT__ADDRESSES", value='["http://restate-1:5122"]')),
    Breakage("replication 1", "cluster", check_restate, "RESTATE_DEFAULT_REPLICATION", _set(S, "restate-1", "environment", "RESTATE_DEFAULT_REPLICATION", value="1")),
    Breakage("advertised as another", "cluster", check_restate, "advertises", _set(S, "restate-2", "environment", "RESTATE_ADVERTISED_ADDRESS", value="http://restate-1:5122")),
    Breakage("ingress opened", "cluster", check_restate, "RESTATE_ROLES", _set(S, "restate-3", "environment", "RESTATE_ROLES", value='["worker", "admin", "metadata-server", "log-server", "http-ingress"]')),
    Breakage("api key dropped", "single", check_llm_passthrough, "OPENAI_API_KEY", _delete(S, "worker", "environment", "OPENAI_API_KEY")),
    Breakage("model hard-coded", "cluster", check_llm_passthrough, "LLM_MODEL", _set(S, "workers", "environment", "LLM_MODEL", value="gpt-4o")),
    Breakage("unparsable timeout", "single", check_worker_settings_load, "would not start", _set(S, "worker", "environment", "LLM_TIMEOUT_SECONDS", value="${LLM_TIMEOUT_SECONDS:-soon}")),
    Breakage("drifted default", "single", check_worker_settings_load, "code's default", _set(S, "worker", "environment", "STEP_MAX_ATTEMPTS", value="${STEP_MAX_ATTEMPTS:-9}")),
    Breakage("setup restarts", "single", check_setup_service, "one-shot", _set(S, "setup", "restart", value="always")),
    Breakage("setup races the balancer", "cluster", check_setup_service, "'balancer' to be healthy", _delete(S, "setup-cluster", "depends_on", "balancer")),
    Breakage("worker unchecked", "single", check_setup_service, "no healthcheck", _delete(S, "worker", "healthcheck")),
    Breakage("setup other image", "single", check_setup_service, "worker's image", _set(S, "setup", "image", value="python:3.11.11-slim")),
    Breakage("topics on one broker", "cluster", check_setup_service, "TOPIC_REPLICATION_FACTOR", _delete(S, "setup-cluster", "environment", "TOPIC_REPLICATION_FACTOR")),
    Breakage("fixed replicas", "cluster", check_worker_replicas, "replicas", _set(S, "workers", "deploy", "replicas", value=2)),
    Breakage("workers published", "cluster", check_worker_replicas, "publishes a port", _set(S, "workers", "ports", value=["127.0.0.1:9081:9080"])),
    Breakage("restate does not sign", "single", check_request_signing, SIGNING_KEY_ENV, _delete(S, "restate", "environment", SIGNING_KEY_ENV)),
    Breakage("worker trusts anyone", "cluster", check_request_signing, "RESTATE_IDENTITY_KEYS_FILE", _set(S, "workers", "environment", "RESTATE_IDENTITY_KEYS_FILE", value="")),
    Breakage("keys in another volume", "single", check_request_signing, "must mount", _set(S, "worker", "volumes", value=["restate-data:/identity:ro"])),
    Breakage("keys writable by restate", "cluster", check_request_signing, "read-only", _set(S, "restate-2", "volumes", value=["./restate.toml:/etc/restate/restate.toml:ro", "restate-2-data:/restate-data", "identity:/identity"])),
    Breakage("restate before the key", "single", check_request_signing, "after identity", _delete(S, "restate", "depends_on", "identity")),
    Breakage("identity restarts", "single", check_request_signing, "one-shot", _set(S, "identity", "restart", value="always")),
    Breakage("default grace", "single", check_graceful_stop, "stop_grace_period", _delete(S, "worker", "stop_grace_period")),
    Breakage("drain longer than grace", "cluster", check_graceful_stop, "WORKER_DRAIN_TIMEOUT", _set(S, "workers", "environment", "WORKER_DRAIN_TIMEOUT", value="60")),
)  # fmt: skip


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.name)
def test_broken_copy_is_caught(breakage: Breakage) -> None:
    data = copy.deepcopy(yaml.safe_load(COMPOSE_FILE.read_text()))
    breakage.apply(data)
    problems = breakage.check(_project(breakage.profile, data))
    assert any(breakage.expect in p for p in problems), (
        f"{breakage.check.__name__} missed '{breakage.name}': "
        f"expected a problem containing {breakage.expect!r}, got {problems}"
    )


DOCKERFILE_BREAKAGES: dict[str, tuple[Callable[[str], str], str]] = {
    "runs as root": (lambda t: re.sub(r"(?m)^USER .*$", "USER root", t), "runs as 'root'"),
    "no user": (lambda t: re.sub(r"(?m)^USER .*$", "", t), "no USER"),
    "no healthcheck": (lambda t: re.sub(r"(?ms)^HEALTHCHECK .*?\]$", "", t), "no HEALTHCHECK"),
    "latest base": (lambda t: t.replace("python:3.11.11-slim-bookworm", "python:latest"), "not pinned"),
    "other command": (lambda t: t.replace('CMD ["python", "-m", "worker"]', 'CMD ["python"]'), "CMD must be"),
    "shell-form command": (
        lambda t: t.replace('CMD ["python", "-m", "worker"]', "CMD python -m worker"),
        "CMD must be",
    ),
}


@pytest.mark.parametrize("name", sorted(DOCKERFILE_BREAKAGES))
def test_broken_dockerfile_is_caught(name: str) -> None:
    mutate, expect = DOCKERFILE_BREAKAGES[name]
    text = DOCKERFILE.read_text()
    broken = mutate(text)
    assert broken != text, f"the mutation '{name}' did not change the Dockerfile; update the test"
    problems = check_dockerfile(broken)
    assert any(expect in p for p in problems), f"check_dockerfile missed '{name}': got {problems}"
