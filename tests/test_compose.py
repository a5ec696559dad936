"""docker-compose.yml and the Dockerfile, checked without Docker.

Each check is a function from the parsed file to a list of problems. The tests run every
check on the real file (no problems expected) and on deliberately broken copies (the
break must be reported), so a check that quietly stopped checking fails here too.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError

from devstack.setup import SetupConfig
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
RESTATE_TOML = ROOT / "restate.toml"
PACKAGE_JSON = ROOT / "package.json"

Compose = dict[str, Any]
Check = Callable[[Compose], list[str]]

# Compose service names: setup's URLs and `docker compose logs NAME` depend on them.
REDPANDA, CONSOLE, RESTATE, WORKER, SETUP = "redpanda", "console", "restate", "worker", "setup"
# The worker's configuration that must reach it from the operator's shell or .env.
PASSTHROUGH_ENV = (
    "LLM_PROVIDER",
    "LLM_MODEL",
    "LLM_MODEL_EXTRACT",
    "LLM_MODEL_SORT",
    "LLM_MODEL_FORMAT",
    "LLM_TIMEOUT_SECONDS",
    "LLM_PRICE_PROMPT_PER_1K",
    "LLM_PRICE_COMPLETION_PER_1K",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "STEP_MAX_ATTEMPTS",
    "MAX_MESSAGE_BYTES",
    "RESTATE_IDENTITY_KEYS",
)
TOPIC_ENV = {"REPORTS_TOPIC": "reports_topic", "TABLES_TOPIC": "tables_topic", "DEAD_LETTER_TOPIC": "dead_letter_topic"}
RESTATE_ADMIN_PORT = 9070
# Host ports the Console must not take: Restate's ingress and admin, the worker's port.
RESERVED_FOR_CONSOLE = {8080, 9070, 9080}
# A concrete release: `1.7.12`, `v24.2.18`, `3.11.11-slim-bookworm`; not `latest`, `stable`, `3`.
PINNED_TAG = re.compile(r"v?\d+\.\d+(\.\d+)?([.-][\w.-]+)?")


# ---------------------------------------------------------------- reading the files


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} must be a YAML mapping"
    return data


_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """Compose's variable substitution (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$$`)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg, current = match.group("op"), match.group("arg") or "", shell.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op == ":+":
            return arg if current else ""
        if op == "+":
            return "" if current is None else arg
        if op in (":?", "?") and not current:
            raise ValueError(f"${{{name}}} is required: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def services(compose: Compose) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    return found if isinstance(found, dict) else {}


def service(compose: Compose, name: str) -> dict[str, Any]:
    found = services(compose).get(name)
    return found if isinstance(found, dict) else {}


def raw_environment(svc: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's `environment` as written (both the mapping and the `KEY=value` list form)."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = [str(item).partition("=") for item in raw]
        return {key: (value if sep else None) for key, sep, value in pairs}
    result: dict[str, str | None] = {}
    for key, value in raw.items():
        if value is None or isinstance(value, str):
            result[str(key)] = value
        elif isinstance(value, bool):  # YAML true/false: Compose wants strings, but be lenient
            result[str(key)] = str(value).lower()
        else:
            result[str(key)] = str(value)
    return result


def environment(svc: Mapping[str, Any], shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the container gets when `docker compose` runs with `shell` (default: nothing set)."""
    shell = shell or {}
    resolved: dict[str, str] = {}
    for key, value in raw_environment(svc).items():
        if value is None:  # key only: taken from the shell, absent when unset there
            if key in shell:
                resolved[key] = shell[key]
        else:
            resolved[key] = interpolate(value, shell)
    return resolved


def command_flags(command: Any) -> dict[str, str]:
    """`--name value` / `--name=value` flags of a command, given as a string or a list."""
    items = [command] if isinstance(command, str) else list(command or [])
    tokens = [token for item in items for token in str(item).split()]
    flags: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        if tokens[i].startswith("--"):
            name, sep, value = tokens[i][2:].partition("=")
            if not sep and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value, i = tokens[i + 1], i + 1
            flags[name] = value
        i += 1
    return flags


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """`internal://0.0.0.0:29092,external://0.0.0.0:9092` -> {name: (host, port)}; unnamed is ``""``."""
    result: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, address = part.partition("://")
        if not sep:
            name, address = "", part
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


@dataclass(frozen=True)
class PublishedPort:
    host_port: int
    container_port: int
    protocol: str


def _port_range(text: str) -> list[int]:
    low, _, high = str(text).partition("-")
    return list(range(int(low), int(high or low) + 1))


def published_ports(svc: Mapping[str, Any]) -> tuple[list[PublishedPort], list[str]]:
    """Host ports a service publishes, and problems with entries that cannot be read."""
    found: list[PublishedPort] = []
    problems: list[str] = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is None:
                continue
            hosts, targets = _port_range(str(entry["published"])), _port_range(str(entry["target"]))
            protocol = str(entry.get("protocol", "tcp"))
        elif isinstance(entry, str):
            mapping, _, protocol = entry.partition("/")
            parts = mapping.rsplit(":", 2)
            if len(parts) == 1:  # container port only: Docker picks a random host port
                continue
            hosts, targets = _port_range(parts[-2]), _port_range(parts[-1])
            protocol = protocol or "tcp"
        else:
            # An unquoted `8080:80` can be read by YAML 1.1 as a base-60 number.
            problems.append(f"port entry {entry!r} is not a string or mapping: quote it")
            continue
        if len(targets) == 1 and len(hosts) > 1:
            targets = targets * len(hosts)
        found += [PublishedPort(h, t, protocol) for h, t in zip(hosts, targets, strict=False)]
    return found, problems


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool
    kind: str  # "bind" or "volume"


def mounts(svc: Mapping[str, Any]) -> list[Mount]:
    result: list[Mount] = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry.get("target", ""))
            read_only, kind = bool(entry.get("read_only", False)), str(entry.get("type", "volume"))
        else:
            source, _, rest = str(entry).partition(":")
            target, _, mode = rest.partition(":")
            read_only = "ro" in mode.split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        result.append(Mount(source, target, read_only, kind))
    return result


def healthcheck_test(svc: Mapping[str, Any]) -> str:
    """The healthcheck command as one string; empty when there is none or it is disabled."""
    check = svc.get("healthcheck") or {}
    if check.get("disable"):
        return ""
    test = check.get("test") or ""
    if isinstance(test, list):
        return "" if test[:1] == ["NONE"] else " ".join(str(t) for t in test[1:])
    return str(test)


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`None` without one); a digest counts as its own pin."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def builds_from_repo(svc: Mapping[str, Any]) -> bool:
    build = svc.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    return isinstance(context, str) and (COMPOSE_FILE.parent / context).resolve() == ROOT


@contextmanager
def only_environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ replaced by exactly `env` (Settings reads the process environment)."""
    with mock.patch.dict(os.environ, dict(env), clear=True):
        yield


def code_settings() -> Settings:
    """The worker's settings with nothing set: the code's defaults."""
    with only_environment({}):
        return Settings()


def _url_port(url: str) -> int | None:
    parts = urlsplit(url)
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _bind_port(bind: str) -> int:
    return int(bind.rpartition(":")[2])


# ---------------------------------------------------------------- the Dockerfile


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
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
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
    if not any(ins.keyword == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", ins.args) for ins in instructions):
        problems.append("Dockerfile: the project is not installed with `pip install .`")
    return problems


# ---------------------------------------------------------------- compose checks


def check_services_present(compose: Compose) -> list[str]:
    names = set(services(compose))
    missing = sorted({REDPANDA, CONSOLE, RESTATE, WORKER, SETUP} - names)
    return [f"service {name!r} is missing" for name in missing]


def check_images_pinned(compose: Compose) -> list[str]:
    problems: list[str] = []
    built_here = {svc.get("image") for svc in services(compose).values() if builds_from_repo(svc)}
    for name, svc in services(compose).items():
        image = svc.get("image")
        if builds_from_repo(svc) or (image and image in built_here):
            continue
        if not image:
            problems.append(f"service {name!r} has neither an image nor a build from this repository")
            continue
        tag = image_tag(str(image))
        if tag is None:
            problems.append(f"service {name!r}: image {image!r} has no tag (that means `latest`)")
        elif "@" not in str(image) and not PINNED_TAG.fullmatch(tag):
            problems.append(f"service {name!r}: image {image!r} is not pinned to a release (tag {tag!r})")
    return problems


def check_host_ports_unique(compose: Compose) -> list[str]:
    problems: list[str] = []
    owner: dict[tuple[int, str], str] = {}
    for name, svc in services(compose).items():
        ports, unreadable = published_ports(svc)
        problems += [f"service {name!r}: {p}" for p in unreadable]
        for port in ports:
            key = (port.host_port, port.protocol)
            if key in owner and owner[key] != name:
                problems.append(
                    f"host port {port.host_port}/{port.protocol} is published by both {owner[key]!r} and {name!r}"
                )
            owner.setdefault(key, name)
    return problems


def internal_kafka_address(compose: Compose) -> tuple[str | None, list[str]]:
    """The Kafka address containers must use: redpanda's listener advertised under its service name."""
    svc = service(compose, REDPANDA)
    flags = command_flags(svc.get("command"))
    if "kafka-addr" not in flags or "advertise-kafka-addr" not in flags:
        return None, [f"service {REDPANDA!r} does not set --kafka-addr and --advertise-kafka-addr"]
    bound, advertised = listeners(flags["kafka-addr"]), listeners(flags["advertise-kafka-addr"])
    names = {REDPANDA, svc.get("hostname"), svc.get("container_name")} - {None}
    internal = [(listener, host, port) for listener, (host, port) in advertised.items() if host in names]
    if len(internal) != 1:
        return None, [f"redpanda must advertise exactly one listener under its service name, found {internal}"]
    listener, host, port = internal[0]
    if bound.get(listener, ("", -1))[1] != port:
        return None, [
            f"redpanda advertises {listener}://{host}:{port} but --kafka-addr binds that listener to "
            f"{bound.get(listener)}: containers would connect to a closed port"
        ]
    return f"{host}:{port}", []


def check_kafka_wiring(compose: Compose) -> list[str]:
    address, problems = internal_kafka_address(compose)
    if address is None:
        return problems
    # Every container-side Kafka client must use the internal listener: `localhost:9092`
    # inside a container is that container's own loopback.
    clients = [
        (SETUP, "RESTATE_KAFKA_BOOTSTRAP", "the brokers Restate is told to consume from"),
        (SETUP, "KAFKA_BOOTSTRAP_SERVERS", "setup's admin client"),
        (WORKER, "KAFKA_BOOTSTRAP_SERVERS", "the worker's producer"),
        (CONSOLE, "KAFKA_BROKERS", "Redpanda Console"),
    ]
    for name, var, what in clients:
        value = environment(service(compose, name)).get(var)
        if value is None:
            problems.append(f"{name}.{var} ({what}) is not set; it must be the internal listener {address}")
        elif value.split(",") != [address]:
            problems.append(f"{name}.{var} ({what}) is {value!r}, not redpanda's internal listener {address!r}")
    # Host clients bootstrap on the external listener and are sent back to its advertised
    # address, so that address's port must be published onto the listener's bound port.
    svc = service(compose, REDPANDA)
    flags = command_flags(svc.get("command"))
    bound, advertised = listeners(flags["kafka-addr"]), listeners(flags["advertise-kafka-addr"])
    external = {n: a for n, a in advertised.items() if a[0] in ("localhost", "127.0.0.1")}
    if not external:
        problems.append("redpanda advertises no listener on localhost for clients on the host")
    published = {(p.host_port, p.container_port) for p in published_ports(svc)[0]}
    for listener, (host, port) in external.items():
        if listener not in bound:
            problems.append(f"redpanda advertises {listener}://{host}:{port} but does not bind that listener")
        elif (port, bound[listener][1]) not in published:
            problems.append(
                f"redpanda advertises {host}:{port} to host clients but does not publish host port {port} "
                f"onto its {listener} listener (container port {bound[listener][1]})"
            )
    return problems


def check_worker_address(compose: Compose) -> list[str]:
    problems: list[str] = []
    setup_env = environment(service(compose, SETUP))
    url = setup_env.get("WORKER_URL")
    if not url:
        return [f"{SETUP}.WORKER_URL is not set: setup would register http://127.0.0.1:9080, unreachable from Restate"]
    parts = urlsplit(url)
    target = parts.hostname or ""
    worker = service(compose, target)
    if not worker:
        return [f"{SETUP}.WORKER_URL {url!r} does not name a compose service"]
    if target != WORKER:
        problems.append(f"{SETUP}.WORKER_URL {url!r} points at {target!r}, not the {WORKER!r} service")
    if not builds_from_repo(worker) or worker.get("command") not in (None, ["python", "-m", "worker"]):
        problems.append(f"service {target!r} (WORKER_URL) does not run this repository's worker")
    bind = environment(worker).get("WORKER_BIND", code_settings().worker_bind)
    ports = {
        "WORKER_URL": _url_port(url),
        f"{target}.WORKER_BIND": _bind_port(bind),
    }
    exposed = expose_ports(DOCKERFILE.read_text())
    health = re.search(r"https?://(?:127\.0\.0\.1|localhost)(?::(\d+))?/health", healthcheck_test(worker))
    if health is None:
        problems.append(f"service {target!r} has no healthcheck calling /health")
    else:
        ports[f"{target} healthcheck"] = int(health.group(1) or 80)
    if len(set(ports.values())) != 1:
        problems.append(f"the worker's port disagrees: {ports}")
    if _bind_port(bind) not in exposed:
        problems.append(f"{target}.WORKER_BIND port {_bind_port(bind)} is not EXPOSEd by the Dockerfile ({exposed})")
    admin = setup_env.get("RESTATE_ADMIN_URL", "")
    if urlsplit(admin).hostname != RESTATE or _url_port(admin) != RESTATE_ADMIN_PORT:
        problems.append(f"{SETUP}.RESTATE_ADMIN_URL is {admin!r}, not http://{RESTATE}:{RESTATE_ADMIN_PORT}")
    return problems


def check_topics(compose: Compose) -> list[str]:
    problems: list[str] = []
    settings = code_settings()
    for name in (WORKER, SETUP):
        env = environment(service(compose, name))
        for var, field in TOPIC_ENV.items():
            expected = getattr(settings, field)
            if var not in env:
                problems.append(f"{name}.{var} is not set (the code's default is {expected!r})")
            elif env[var] != expected:
                problems.append(f"{name}.{var} is {env[var]!r}, the code's default is {expected!r}")
    # An operator's override must reach both: worker and setup name the same topics.
    probe = {var: f"probe-{var.lower()}" for var in TOPIC_ENV}
    worker_env, setup_env = environment(service(compose, WORKER), probe), environment(service(compose, SETUP), probe)
    for var in TOPIC_ENV:
        if worker_env.get(var) != setup_env.get(var):
            problems.append(
                f"with {var} overridden, worker and setup disagree: {worker_env.get(var)!r} vs {setup_env.get(var)!r}"
            )
    return problems


def check_subscription_target(compose: Compose) -> list[str]:
    """Setup subscribes the service the worker image serves: ReportChain/process."""
    from worker.service import report_chain  # heavy (restate SDK): only this check needs it

    problems: list[str] = []
    env = environment(service(compose, SETUP))
    cfg = SetupConfig.from_env(env)
    if report_chain.name != "ReportChain" or "process" not in report_chain.handlers:
        problems.append(
            f"the worker serves {report_chain.name}/{sorted(report_chain.handlers)}, not ReportChain/process"
        )
    if cfg.sink != f"service://{report_chain.name}/process":
        problems.append(f"setup subscribes {cfg.sink!r}, but the worker serves {report_chain.name}/process")
    expected_source = f"kafka://{env.get('RESTATE_KAFKA_CLUSTER', 'local')}/{code_settings().reports_topic}"
    if cfg.source != expected_source:
        problems.append(f"setup subscribes from {cfg.source!r}, expected {expected_source!r}")
    address, _ = internal_kafka_address(compose)
    if cfg.restate_kafka_properties.get("bootstrap.servers") != address:
        problems.append(
            f"setup would register Kafka for Restate at {cfg.restate_kafka_properties.get('bootstrap.servers')!r}, "
            f"not {address!r}"
        )
    return problems


def check_restate(compose: Compose) -> list[str]:
    problems: list[str] = []
    svc = service(compose, RESTATE)
    image = str(svc.get("image", ""))
    pinned = json.loads(PACKAGE_JSON.read_text())["dependencies"]["@restatedev/restate-server"]
    if not re.fullmatch(r"(docker\.restate\.dev/)?restatedev/restate", image.split(":")[0]):
        problems.append(f"restate runs {image!r}, not restatedev/restate")
    if image_tag(image) != pinned:
        problems.append(f"restate image {image!r} differs from the local stack's pin {pinned} (package.json)")
    env = environment(svc)
    config_path = env.get("RESTATE_CONFIG")
    if not config_path:
        problems.append("restate: RESTATE_CONFIG is not set, so restate.toml would be ignored")
    config_mounts = [m for m in mounts(svc) if m.target == config_path]
    if config_path and not config_mounts:
        problems.append(f"restate: nothing is mounted at RESTATE_CONFIG={config_path}")
    for mount in config_mounts:
        if mount.kind != "bind" or (COMPOSE_FILE.parent / mount.source).resolve() != RESTATE_TOML:
            problems.append(f"restate: {config_path} comes from {mount.source!r}, not this repository's restate.toml")
        if not mount.read_only:
            problems.append(f"restate: {config_path} is mounted read-write; mount it read-only")
    base_dir = env.get("RESTATE_BASE_DIR", "/restate-data")
    if not any(m.kind == "volume" and m.source == "restate-data" and m.target == base_dir for m in mounts(svc)):
        problems.append(f"restate: the named volume 'restate-data' is not mounted at its base dir {base_dir}")
    if "restate-data" not in (compose.get("volumes") or {}):
        problems.append("the named volume 'restate-data' is not declared under top-level volumes")
    if not env.get("RESTATE_NODE_NAME") and not svc.get("hostname"):
        problems.append("restate: no fixed node name; its data dir follows the hostname, which changes on recreate")
    if not healthcheck_test(svc):
        problems.append("restate has no healthcheck, so setup cannot wait for it")
    return problems


def check_llm_passthrough(compose: Compose) -> list[str]:
    problems: list[str] = []
    worker = service(compose, WORKER)
    for var in PASSTHROUGH_ENV:
        # Set in the shell, the value must arrive unchanged: proves it is interpolated, not hard-coded.
        value = f"probe-{var.lower()}"
        got = environment(worker, {var: value}).get(var)
        if got is None:
            problems.append(f"{WORKER}.{var} is not passed through (add `{var}: ${{{var}:-}}`)")
        elif got != value:
            problems.append(
                f"{WORKER}.{var} is {raw_environment(worker).get(var)!r}: a value set in the shell is ignored"
            )
    return problems


def check_worker_settings_load(compose: Compose) -> list[str]:
    """With nothing set in the shell, the worker starts and sees the code's own defaults."""
    env = environment(service(compose, WORKER))
    try:
        with only_environment(env):
            from_compose = Settings()
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return [f"the worker would not start with the compose environment: {errors}"]
    defaults = code_settings()
    problems: list[str] = []
    for var in PASSTHROUGH_ENV:
        field = var.lower()
        if getattr(from_compose, field) != getattr(defaults, field):
            problems.append(
                f"{WORKER}.{var} defaults to {env.get(var)!r} in compose but the code's default is "
                f"{getattr(defaults, field)!r}"
            )
    return problems


def check_console(compose: Compose) -> list[str]:
    problems: list[str] = []
    taken = RESERVED_FOR_CONSOLE | {p.host_port for p in published_ports(service(compose, RESTATE))[0]}
    ports = [p.host_port for p in published_ports(service(compose, CONSOLE))[0]]
    if not ports:
        problems.append("the Console publishes no host port")
    problems += [
        f"the Console's host port {port} clashes with Restate or the worker" for port in ports if port in taken
    ]
    return problems


def check_setup_service(compose: Compose) -> list[str]:
    problems: list[str] = []
    svc, worker = service(compose, SETUP), service(compose, WORKER)
    if svc.get("command") != ["python", "-m", "devstack", "setup"]:
        problems.append(f'setup command is {svc.get("command")!r}, not ["python", "-m", "devstack", "setup"]')
    if svc.get("restart") != "no":
        problems.append(f'setup is one-shot: restart must be "no", found {svc.get("restart")!r}')
    if not (builds_from_repo(svc) or (svc.get("image") and svc.get("image") == worker.get("image"))):
        problems.append("setup must run the worker's image (same `image:`), which has devstack installed")
    depends = svc.get("depends_on") or {}
    for name in (REDPANDA, RESTATE, WORKER):
        # The list form of depends_on only waits for the container to start, never for health.
        condition = (depends.get(name) or {}).get("condition") if isinstance(depends, dict) else None
        if condition != "service_healthy":
            problems.append(f"setup must wait for {name!r} to be healthy (depends_on condition service_healthy)")
        if not healthcheck_test(service(compose, name)):
            problems.append(f"{name!r} has no healthcheck, so `service_healthy` could never hold")
    worker_depends = worker.get("depends_on") or {}
    if (
        not isinstance(worker_depends, dict)
        or (worker_depends.get(REDPANDA) or {}).get("condition") != "service_healthy"
    ):
        problems.append("the worker must wait for redpanda to be healthy before it starts publishing")
    return problems


COMPOSE_CHECKS: tuple[Check, ...] = (
    check_services_present,
    check_images_pinned,
    check_host_ports_unique,
    check_kafka_wiring,
    check_worker_address,
    check_topics,
    check_subscription_target,
    check_restate,
    check_llm_passthrough,
    check_worker_settings_load,
    check_console,
    check_setup_service,
)


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


def test_interpolation_follows_compose_rules() -> None:
    assert interpolate("${A:-x}", {}) == "x"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    assert interpolate("${A}/$B/$$C", {"A": "1", "B": "2"}) == "1/2/$C"
    with pytest.raises(ValueError, match="required"):
        interpolate("${A:?set A}", {})


def test_compose_file_parses(compose: Compose) -> None:
    assert services(compose), "docker-compose.yml has no services"
    for name, svc in services(compose).items():
        assert isinstance(svc, dict), f"service {name!r} is not a mapping"


@pytest.mark.parametrize("check", COMPOSE_CHECKS, ids=lambda c: c.__name__)
def test_real_compose_file_passes(check: Check, compose: Compose) -> None:
    problems = check(compose)
    assert not problems, "docker-compose.yml:\n  " + "\n  ".join(problems)


def test_real_dockerfile_passes() -> None:
    problems = check_dockerfile(DOCKERFILE.read_text())
    assert not problems, "\n  ".join(problems)


@dataclass(frozen=True)
class Breakage:
    """A deliberate mistake, the check that must catch it, and a fragment of the expected problem."""

    name: str
    check: Check
    expect: str
    apply: Callable[[Compose], None]


def _set(path: tuple[str, ...], value: Any) -> Callable[[Compose], None]:
    def apply(compose: Compose) -> None:
        node: Any = compose
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _delete(path: tuple[str, ...]) -> Callable[[Compose], None]:
    def apply(compose: Compose) -> None:
        node: Any = compose
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return apply


S = "services"
BREAKAGES = (
    Breakage("no console", check_services_present, "'console' is missing", _delete((S, CONSOLE))),
    Breakage(
        "restate latest", check_images_pinned, "not pinned", _set((S, RESTATE, "image"), "restatedev/restate:latest")
    ),
    Breakage(
        "console untagged", check_images_pinned, "has no tag", _set((S, CONSOLE, "image"), "redpandadata/console")
    ),
    Breakage("worker not built", check_images_pinned, "not pinned", _delete((S, WORKER, "build"))),
    Breakage("port clash", check_host_ports_unique, "published by both", _set((S, CONSOLE, "ports"), ["9070:8080"])),
    Breakage("unquoted port", check_host_ports_unique, "quote it", _set((S, CONSOLE, "ports"), [29048])),
    Breakage(
        "restate told localhost",
        check_kafka_wiring,
        "RESTATE_KAFKA_BOOTSTRAP",
        _set((S, SETUP, "environment", "RESTATE_KAFKA_BOOTSTRAP"), "localhost:9092"),
    ),
    Breakage(
        "worker on external port",
        check_kafka_wiring,
        "worker.KAFKA_BOOTSTRAP_SERVERS",
        _set((S, WORKER, "environment", "KAFKA_BOOTSTRAP_SERVERS"), "redpanda:9092"),
    ),
    Breakage(
        "restate bootstrap unset",
        check_kafka_wiring,
        "is not set",
        _delete((S, SETUP, "environment", "RESTATE_KAFKA_BOOTSTRAP")),
    ),
    Breakage(
        "internal listener advertised under another name",
        check_kafka_wiring,
        "exactly one listener",
        lambda c: c[S][REDPANDA].__setitem__(
            "command", [a.replace("internal://redpanda:", "internal://broker:") for a in c[S][REDPANDA]["command"]]
        ),
    ),
    Breakage(
        "external port not published",
        check_kafka_wiring,
        "does not publish host port 9092",
        _set((S, REDPANDA, "ports"), ["19092:9092"]),
    ),
    Breakage(
        "worker url port",
        check_worker_address,
        "disagrees",
        _set((S, SETUP, "environment", "WORKER_URL"), "http://worker:8000"),
    ),
    Breakage(
        "worker url at restate",
        check_worker_address,
        "not the 'worker' service",
        _set((S, SETUP, "environment", "WORKER_URL"), "http://restate:9080"),
    ),
    Breakage(
        "worker url loopback",
        check_worker_address,
        "does not name a compose service",
        _set((S, SETUP, "environment", "WORKER_URL"), "http://127.0.0.1:9080"),
    ),
    Breakage(
        "worker bind",
        check_worker_address,
        "not EXPOSEd",
        _set((S, WORKER, "environment", "WORKER_BIND"), "0.0.0.0:9081"),
    ),
    Breakage(
        "admin url",
        check_worker_address,
        "RESTATE_ADMIN_URL",
        _set((S, SETUP, "environment", "RESTATE_ADMIN_URL"), "http://127.0.0.1:9070"),
    ),
    Breakage("tables topic", check_topics, "TABLES_TOPIC", _set((S, SETUP, "environment", "TABLES_TOPIC"), "results")),
    Breakage(
        "hard-coded topic", check_topics, "disagree", _set((S, WORKER, "environment", "REPORTS_TOPIC"), "reports")
    ),
    Breakage(
        "subscription from another topic",
        check_subscription_target,
        "subscribes from",
        _set((S, SETUP, "environment", "REPORTS_TOPIC"), "other"),
    ),
    Breakage(
        "restate version",
        check_restate,
        "differs",
        _set((S, RESTATE, "image"), "docker.restate.dev/restatedev/restate:1.7.11"),
    ),
    Breakage(
        "restate config elsewhere",
        check_restate,
        "not this repository's restate.toml",
        _set((S, RESTATE, "volumes"), ["./other.toml:/etc/restate/restate.toml:ro", "restate-data:/restate-data"]),
    ),
    Breakage(
        "restate config writable",
        check_restate,
        "read-only",
        _set((S, RESTATE, "volumes"), ["./restate.toml:/etc/restate/restate.toml", "restate-data:/restate-data"]),
    ),
    Breakage(
        "restate config unset",
        check_restate,
        "RESTATE_CONFIG is not set",
        _delete((S, RESTATE, "environment", "RESTATE_CONFIG")),
    ),
    Breakage(
        "restate data not persisted",
        check_restate,
        "'restate-data' is not mounted",
        _set((S, RESTATE, "volumes"), ["./restate.toml:/etc/restate/restate.toml:ro"]),
    ),
    Breakage(
        "api key dropped",
        check_llm_passthrough,
        "OPENAI_API_KEY is not passed",
        _delete((S, WORKER, "environment", "OPENAI_API_KEY")),
    ),
    Breakage(
        "model hard-coded",
        check_llm_passthrough,
        "LLM_MODEL is",
        _set((S, WORKER, "environment", "LLM_MODEL"), "gpt-4o"),
    ),
    Breakage(
        "unparsable timeout",
        check_worker_settings_load,
        "would not start",
        _set((S, WORKER, "environment", "LLM_TIMEOUT_SECONDS"), "${LLM_TIMEOUT_SECONDS:-soon}"),
    ),
    Breakage(
        "drifted default",
        check_worker_settings_load,
        "code's default",
        _set((S, WORKER, "environment", "STEP_MAX_ATTEMPTS"), "${STEP_MAX_ATTEMPTS:-9}"),
    ),
    Breakage("console on 8080", check_console, "clashes", _set((S, CONSOLE, "ports"), ["8080:8080"])),
    Breakage("setup restarts", check_setup_service, "one-shot", _set((S, SETUP, "restart"), "always")),
    Breakage(
        "setup races the worker",
        check_setup_service,
        "'worker' to be healthy",
        _delete((S, SETUP, "depends_on", WORKER)),
    ),
    Breakage("worker unchecked", check_setup_service, "no healthcheck", _delete((S, WORKER, "healthcheck"))),
    Breakage(
        "setup other image", check_setup_service, "worker's image", _set((S, SETUP, "image"), "python:3.11.11-slim")
    ),
)


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda b: b.name)
def test_broken_copy_is_caught(breakage: Breakage, compose: Compose) -> None:
    broken = copy.deepcopy(compose)
    breakage.apply(broken)
    problems = breakage.check(broken)
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
