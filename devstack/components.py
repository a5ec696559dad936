"""The processes of a local stack: Kafka (KRaft), restate-server, the worker, and, for
`LLM_PROVIDER=local`, llama.cpp's OpenAI-compatible server with a local model.

Each component knows how to prepare its files, how to start, and when it is healthy.
"""

from __future__ import annotations

import glob
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
from devstack.setup import kafka_reachable
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
    name = "kafka"

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.run_dir / "kafka"
        self.process = ManagedProcess(
            self.name,
            cfg.run_dir,
            [cfg.kafka_port, cfg.kafka_controller_port],
            marker=str(self.dir / "server.properties"),
        )

    def _properties(self) -> str:
        c = self.cfg
        return "\n".join(
            [
                "# Written by devstack: a single-node KRaft broker for local runs and tests.",
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{c.kafka_controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{c.kafka_port},CONTROLLER://127.0.0.1:{c.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{c.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={self.dir / 'data'}",
                "num.partitions=1",
                # One broker: every internal topic must have replication factor 1.
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
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
        return [
            self._java(), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp", self._classpath(), "kafka.Kafka", str(self.dir / "server.properties"),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def healthy(self) -> bool:
        # The cheap port check first: a metadata request to a closed port waits out its timeout.
        return port_in_use(self.cfg.kafka_port) and kafka_reachable({"bootstrap.servers": self.cfg.kafka_bootstrap})


# restate.toml's roles plus the HTTP ingress (which restate.toml leaves out on purpose).
ROLES_WITH_INGRESS = '["worker", "admin", "metadata-server", "log-server", "http-ingress"]'


class Restate:
    name = "restate"

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        # Off, as restate.toml says; tests turn it on to show what a forged call does.
        self.http_ingress = False
        self.dir = cfg.run_dir / "restate"
        self.process = ManagedProcess(
            self.name,
            cfg.run_dir,
            [cfg.restate_ingress_port, cfg.restate_admin_port, cfg.restate_node_port],
            marker="restate-server",
        )

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scratch_dir.mkdir(exist_ok=True)

    def argv(self) -> list[str]:
        # The platform binary itself: the npm `bin` wrapper is a node process that
        # would not pass a SIGKILL on to the real server.
        return [str(_npm_binary("restate-server", "restate-server")), "--no-logo"]

    def env(self) -> dict[str, str]:
        c = self.cfg
        return {
            **os.environ,
            "RESTATE_CONFIG": str(RESTATE_TOML),
            "RESTATE_BASE_DIR": str(self.dir),
            "RESTATE_NODE_NAME": "devstack",
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{c.restate_node_port}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{c.restate_node_port}",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{c.restate_ingress_port}",
            "RESTATE_INGRESS__ADVERTISED_INGRESS_ENDPOINT": c.ingress_url,
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{c.restate_admin_port}",
            "RESTATE_ADMIN__ADVERTISED_ADMIN_ENDPOINT": c.admin_url,
            # Unix sockets would land in the data dir; TCP is all we need.
            "RESTATE_LISTEN_MODE": "tcp",
            # The invoker makes a scratch directory per partition on every start, and leaves it:
            # keep them under the run dir (removed by `make clean`), not in /tmp.
            "TMPDIR": str(self.scratch_dir),
            **({"RESTATE_ROLES": ROLES_WITH_INGRESS} if self.http_ingress else {}),
        }

    @property
    def scratch_dir(self) -> Path:
        return self.dir / "tmp"

    def healthy(self) -> bool:
        # No HTTP ingress by default (restate.toml): the admin API tells whether the node is up.
        admin = _http_ok(f"{self.cfg.admin_url}/health")
        return admin and (not self.http_ingress or _http_ok(f"{self.cfg.ingress_url}/restate/health"))


class Worker:
    name = "worker"

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.process = ManagedProcess(self.name, cfg.run_dir, [cfg.worker_port], marker="-m worker")
        # Set by tests that run the worker with another provider or limits.
        self.extra_env: dict[str, str] = {}

    def prepare(self) -> None:
        pass

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "worker"]

    def env(self) -> dict[str, str]:
        # The caller's environment reaches the worker (provider settings, KAFKA_* security
        # properties); the stack only pins where things are.
        env = {**os.environ, **self.cfg.worker_env, **self.extra_env}
        return {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": self.cfg.kafka_bootstrap,
            "LOCAL_LLM_URL": self.cfg.llm_url,
            "LOCAL_LLM_MODEL": _local_model_name(env),
            "WORKER_BIND": f"127.0.0.1:{self.cfg.worker_port}",
            "PYTHONPATH": str(REPO_ROOT),
        }

    def healthy(self) -> bool:
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


Component = Kafka | Restate | LocalLLM | Worker
