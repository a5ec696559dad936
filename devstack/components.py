"""The processes of a local stack: Kafka brokers (KRaft), restate-server nodes, worker
processes and, in front of several workers, an HTTP/2 balancer; for `LLM_PROVIDER=local`,
llama.cpp's OpenAI-compatible server with a local model.

Each component is one process that knows how to prepare its files, how to start, and
when it is healthy. A stack is a list of them (see devstack/stack.py).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from devstack.config import KAFKA_CLUSTER_ID, KAFKA_LIBS, NODE_MODULES, REPO_ROOT, RESTATE_TOML, StackConfig
from devstack.llamacpp import default_threads
from devstack.localmodel import ModelError, ModelSpec, model_alias, resolve_model
from devstack.processes import ManagedProcess, StackError, port_in_use
from devstack.setup import kafka_brokers
from worker.settings import settings_from


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _npm_binary(package: str, binary: str) -> Path:
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), "x64"
    )
    path = NODE_MODULES / "@restatedev" / f"{package}-{sys.platform}-{arch}" / "bin" / binary
    if not path.exists():
        raise StackError(f"{path} is missing: run `make deps` (npm ci) first")
    return path


def restate_cli() -> Path:
    """The restate CLI binary from the pinned npm package."""
    return _npm_binary("restate", "restate")


class Kafka:
    """One Kafka broker (KRaft, broker and controller in one process); a cluster runs several."""

    def __init__(self, cfg: StackConfig, node: int = 1) -> None:
        self.cfg = cfg
        self.node = node
        self.name = "kafka" if cfg.kafka_nodes == 1 else f"kafka-{node}"
        self.port = cfg.kafka_port + node - 1
        self.controller_port = cfg.kafka_controller_port + node - 1
        self.dir = cfg.run_dir / self.name
        self.process = ManagedProcess(
            self.name,
            cfg.run_dir,
            [self.port, self.controller_port],
            marker=str(self.dir / "server.properties"),
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        c = self.cfg
        nodes = c.kafka_nodes
        voters = ",".join(f"{n}@127.0.0.1:{c.kafka_controller_port + n - 1}" for n in range(1, nodes + 1))
        # A record is acknowledged once 2 of 3 brokers have it, so one broker may die without
        # losing an acknowledged record or stopping writes. One broker can only ask for itself.
        replication, min_isr = nodes, min(nodes, 2)
        return "\n".join(
            [
                f"# Written by devstack: broker {self.node} of {nodes} (KRaft) for local runs and tests.",
                "process.roles=broker,controller",
                f"node.id={self.node}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.dir / 'data'}",
                "num.partitions=1",
                f"default.replication.factor={replication}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replication}",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replication}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                # Consumer groups join at once instead of waiting 3 s for peers.
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "",
            ]
        )

    def _log4j(self) -> str:
        return "\n".join(
            [
                "status = warn",
                "appender.out.type = Console",
                "appender.out.name = OUT",
                "appender.out.layout.type = PatternLayout",
                "appender.out.layout.pattern = [%d] %p %m (%c{1})%n",
                "rootLogger.level = info",
                "rootLogger.appenderRef.out.ref = OUT",
                # The state change and request loggers are very chatty at INFO.
                "logger.state.name = state.change.logger",
                "logger.state.level = warn",
                "logger.request.name = kafka.request.logger",
                "logger.request.level = warn",
                "",
            ]
        )

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            raise StackError("no `java` found: Kafka needs a JDK 17 or newer (set JAVA_HOME or put java on PATH)")
        return java

    def _classpath(self) -> str:
        if not glob.glob(str(KAFKA_LIBS / "kafka_2.13-*.jar")):
            raise StackError(f"Kafka jars are missing in {KAFKA_LIBS}: run `make deps` (mvn) first")
        return str(KAFKA_LIBS / "*")

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "server.properties").write_text(self._properties())
        (self.dir / "log4j2.properties").write_text(self._log4j())
        if (self.dir / "data" / "meta.properties").exists():
            return  # storage is formatted once and reused
        result = subprocess.run(
            [self._java(), "-cp", self._classpath(), "kafka.tools.StorageTool", "format",
             "-t", KAFKA_CLUSTER_ID, "-c", str(self.dir / "server.properties")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def argv(self) -> list[str]:
        # Three brokers share the machine with everything else in a cluster: small heaps.
        heap = ["-Xms256m", "-Xmx1g"] if self.cfg.kafka_nodes == 1 else ["-Xms128m", "-Xmx384m"]
        return [
            self._java(), *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp", self._classpath(), "kafka.Kafka", str(self.dir / "server.properties"),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def healthy(self) -> bool:
        # The cheap port check first: a metadata request to a closed port waits out its timeout.
        # Healthy once this broker has registered with the controllers (it then lists itself).
        return port_in_use(self.port) and self.node in kafka_brokers({"bootstrap.servers": self.bootstrap})


# restate.toml's roles plus the HTTP ingress (which restate.toml leaves out on purpose).
ROLES_WITH_INGRESS = '["worker", "admin", "metadata-server", "log-server", "http-ingress"]'


class Restate:
    """One restate-server node; in a cluster, three share replicated metadata and a replicated log."""

    def __init__(self, cfg: StackConfig, node: int = 1) -> None:
        self.cfg = cfg
        self.node = node
        self.name = "restate" if cfg.restate_nodes == 1 else f"restate-{node}"
        # The data dir is <base dir>/<node name>: the single node keeps the name it always had.
        self.node_name = "devstack" if cfg.restate_nodes == 1 else f"n{node}"
        self.ingress_port = cfg.restate_ingress_port + node - 1
        self.admin_port = cfg.restate_admin_port + node - 1
        self.node_port = cfg.restate_node_port + node - 1
        # Off, as restate.toml says; tests turn it on to show what a forged call does.
        self.http_ingress = False
        self.dir = cfg.run_dir / self.name
        self.process = ManagedProcess(
            self.name,
            cfg.run_dir,
            [self.ingress_port, self.admin_port, self.node_port],
            marker=f"--node-name {self.node_name}",
        )

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch_dir.mkdir(exist_ok=True)

    def argv(self) -> list[str]:
        # The platform binary itself: the npm `bin` wrapper is a node process that
        # would not pass a SIGKILL on to the real server.
        return [str(_npm_binary("restate-server", "restate-server")), "--no-logo", "--node-name", self.node_name]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RESTATE_CONFIG": str(RESTATE_TOML),
            "RESTATE_BASE_DIR": str(self.dir),
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{self.node_port}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{self.node_port}",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{self.ingress_port}",
            "RESTATE_INGRESS__ADVERTISED_INGRESS_ENDPOINT": self.ingress_url,
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{self.admin_port}",
            "RESTATE_ADMIN__ADVERTISED_ADMIN_ENDPOINT": self.admin_url,
            # Unix sockets would land in the data dir; TCP is all we need.
            "RESTATE_LISTEN_MODE": "tcp",
            # The invoker makes a scratch directory per partition on every start, and leaves it:
            # keep them under the run dir (removed by `make clean`), not in /tmp.
            "TMPDIR": str(self.scratch_dir),
            **(self._cluster_env() if self.cfg.restate_nodes > 1 else {}),
            **({"RESTATE_ROLES": ROLES_WITH_INGRESS} if self.http_ingress else {}),
        }

    def _cluster_env(self) -> dict[str, str]:
        """One cluster: every node runs restate.toml's roles; metadata and log replicated on 2 nodes."""
        c = self.cfg
        peers = [f"http://127.0.0.1:{c.restate_node_port + n}" for n in range(c.restate_nodes)]
        return {
            "RESTATE_METADATA_CLIENT__TYPE": "replicated",
            "RESTATE_METADATA_CLIENT__ADDRESSES": json.dumps(peers),
            "RESTATE_BIFROST__DEFAULT_PROVIDER": "replicated",
            # Logs and partition processors on 2 nodes: any one node may die.
            "RESTATE_DEFAULT_REPLICATION": "2",
            # Exactly one node provisions the new cluster; on later starts this is a no-op.
            "RESTATE_AUTO_PROVISION": "true" if self.node == 1 else "false",
        }

    @property
    def scratch_dir(self) -> Path:
        return self.dir / "tmp"

    def healthy(self) -> bool:
        # No HTTP ingress by default (restate.toml): the admin API tells whether the node is up.
        admin = _http_ok(f"{self.admin_url}/health")
        return admin and (not self.http_ingress or _http_ok(f"{self.ingress_url}/restate/health"))


class Worker:
    """One worker process. Several sit behind the balancer, each on its own port."""

    def __init__(self, cfg: StackConfig, index: int = 1) -> None:
        self.cfg = cfg
        self.index = index
        self.name = f"worker-{index}" if cfg.balanced else "worker"
        self.port = cfg.worker_process_port(index)
        self.process = ManagedProcess(self.name, cfg.run_dir, [self.port], marker=f"-m worker --bind {self.bind}")
        # Set by tests that run the worker with another provider or limits (see Stack.worker_env).
        self.extra_env: dict[str, str] = {}

    @property
    def bind(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.bind}"

    def prepare(self) -> None:
        pass

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "worker", "--bind", self.bind]

    def env(self) -> dict[str, str]:
        # The caller's environment reaches the worker (provider settings, KAFKA_* security
        # properties); the stack only pins where things are.
        env = {**os.environ, **self.cfg.worker_env, **self.extra_env}
        return {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": self.cfg.kafka_bootstrap,
            "LOCAL_LLM_URL": self.cfg.llm_url,
            "LOCAL_LLM_MODEL": _local_model_name(env),
            "WORKER_BIND": self.bind,
            "PYTHONPATH": str(REPO_ROOT),
        }

    def healthy(self) -> bool:
        return _http_ok(f"{self.url}/health")


class Balancer:
    """HAProxy in front of the worker processes: one HTTP/2 cleartext endpoint for Restate.

    Restate multiplexes many invocations over a few HTTP/2 connections, so spreading
    connections (SO_REUSEPORT, hypercorn's own workers) would leave processes idle; HAProxy
    spreads the streams: each invocation goes to the worker with the fewest in flight.
    """

    name = "balancer"

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.run_dir / "balancer"
        self.config_file = self.dir / "haproxy.cfg"
        self.process = ManagedProcess(self.name, cfg.run_dir, [cfg.worker_port], marker=str(self.config_file))

    def config(self) -> str:
        c = self.cfg
        servers = [
            f"    server worker-{i} 127.0.0.1:{c.worker_process_port(i)}" for i in range(1, c.worker_processes + 1)
        ]
        return "\n".join(
            [
                f"# Written by devstack: {c.worker_processes} worker processes behind one HTTP/2 endpoint.",
                "global",
                "    maxconn 4096",
                "    log stdout format raw local0 notice",
                "defaults",
                "    mode http",
                "    log global",
                "    timeout connect 2s",
                # Invocations stream for as long as their steps take (an LLM call: up to a minute).
                "    timeout client 10m",
                "    timeout server 10m",
                "    timeout http-keep-alive 10m",
                "frontend restate_endpoint",
                # No `proto h2`: HTTP/2 with prior knowledge (Restate) and HTTP/1.1 (/health) both work.
                f"    bind 127.0.0.1:{c.worker_port}",
                "    default_backend workers",
                "backend workers",
                "    balance leastconn",
                "    http-reuse always",
                # A refused connection (a dead worker) is retried on another worker at once, and the
                # dead one is out until a health check passes again; Restate retries what it had in flight.
                "    retries 3",
                "    option redispatch 1",
                "    option httpchk",
                "    http-check connect proto h1",
                "    http-check send meth GET uri /health ver HTTP/1.1 hdr host localhost",
                "    http-check expect status 200",
                # A busy worker answers /health late (one event loop, hundreds of invocations):
                # give it time, or a loaded pool is marked down whole and every stream gets a 503.
                "    timeout check 5s",
                "    default-server check inter 2s fall 3 rise 1 observe layer4 error-limit 1 on-error mark-down "
                "proto h2",
                *servers,
                "",
            ]
        )

    def is_current(self) -> bool:
        """Whether the running balancer was started with today's list of workers."""
        try:
            return self.config_file.read_text() == self.config()
        except OSError:
            return False

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())

    def argv(self) -> list[str]:
        haproxy = shutil.which("haproxy")
        if not haproxy:
            raise StackError(
                "haproxy is missing: several worker processes need it as their balancer. "
                "Run `make deps` (installs Debian's haproxy package) or install HAProxy 2.6+ yourself."
            )
        # -db: stay in the foreground, so the PID file names the process that serves.
        return [haproxy, "-db", "-f", str(self.config_file)]

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def healthy(self) -> bool:
        # Through the balancer: healthy once it serves and at least one worker answers behind it.
        return _http_ok(f"{self.cfg.worker_url}/health")


def _local_model_name(env: dict[str, str]) -> str:
    try:
        return ModelSpec.from_env(env).alias()
    except ModelError:
        return "local"  # LocalLLM.prepare() reports the mistake when the local LLM is wanted


class LocalLLM:
    """llama.cpp's server (devstack/llamacpp.py) with the model the worker's environment names."""

    name = "llm"

    def __init__(self, cfg: StackConfig, worker: Worker) -> None:
        self.cfg = cfg
        self.worker = worker
        self.process = ManagedProcess(self.name, cfg.run_dir, [cfg.llm_port], marker="-m devstack.llamacpp")
        self.model: Path | None = None

    def wanted(self) -> bool:
        """Whether the worker is configured to use it."""
        return settings_from(self.worker.env()).provider == "local"

    def prepare(self) -> None:
        try:
            # The first start fetches the pinned model (`make deps` normally did already).
            self.model = resolve_model(ModelSpec.from_env(self.worker.env()), log=lambda line: print(line, flush=True))
        except ModelError as err:
            raise StackError(str(err)) from None

    def argv(self) -> list[str]:
        assert self.model is not None, "prepare() first"
        settings = settings_from(self.worker.env())
        return [
            sys.executable, "-m", "devstack.llamacpp", "--model", str(self.model), "--alias", model_alias(self.model),
            "--port", str(self.cfg.llm_port), "--parallel", str(settings.local_llm_parallel),
            "--ctx", str(settings.local_llm_ctx), "--threads", str(settings.local_llm_threads or default_threads()),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def healthy(self) -> bool:
        # 503 while the model loads, 200 once it serves.
        return _http_ok(f"http://127.0.0.1:{self.cfg.llm_port}/health")


Component = Kafka | Restate | LocalLLM | Worker | Balancer
