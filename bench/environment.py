"""The benchmark's own world: a fresh local stack, its topics, and the extra processes.

The stack is `devstack`'s, with every port shifted by `--port-offset` (10500 by
default) and its own run directory `.run/bench-<offset>`, so a `make up` stack or a test
session keeps running undisturbed. Each run starts from empty Kafka and Restate
data, so runs are comparable. The floors and the test LLM server are managed
processes of the same run directory (PID file + log each), started on demand.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import httpx
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from devstack.config import MAX_WORKER_PROCESSES, REPO_ROOT, SINGLE, Profile, StackConfig
from devstack.processes import ManagedProcess, port_in_use
from devstack.setup import run_setup
from devstack.stack import Stack

LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}

# The floors' private topics; the input ones get as many partitions as the worker's.
KAFKA_FLOOR_IN, KAFKA_FLOOR_OUT = "bench.kafka.in", "bench.kafka.out"
ENGINE_FLOOR_IN, ENGINE_FLOOR_OUT = "bench.engine.in", "bench.engine.out"

# The worker runs with shipped defaults, except that nothing may come from the caller's environment.
OFFLINE_ENV = {"LLM_PROVIDER": "offline", "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}


def openai_env(base_url: str) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "bench-placeholder-key",
        "OPENAI_BASE_URL": base_url,
        "LLM_MODEL": "bench-model",
        "LLM_TIMEOUT_SECONDS": "30",
    }


class BenchEnvironment:
    def __init__(
        self,
        port_offset: int,
        log: Callable[[str], None],
        profile: Profile = SINGLE,
        worker_processes: int | None = None,
    ) -> None:
        # One run directory per offset (and profile): two runs with different offsets never share files.
        name = f"bench-{port_offset}" + ("" if profile == SINGLE else f"-{profile.name}")
        cfg = StackConfig.for_tests(port_offset, profile, worker_processes)
        self.cfg = replace(cfg, run_dir=REPO_ROOT / ".run" / name)
        run_dir = self.cfg.run_dir
        self.log = log
        self.stack = Stack(self.cfg, log=lambda line: log(f"stack: {line}"))
        # After the worker processes' ports (worker_port + 1 .. + MAX_WORKER_PROCESSES).
        self.engine_floor_port = self.cfg.worker_port + MAX_WORKER_PROCESSES + 1
        self.llm_port = self.cfg.worker_port + MAX_WORKER_PROCESSES + 2
        self.kafka_floor = ManagedProcess("kafka-floor", run_dir, [], marker="-m bench.kafka_floor")
        self.engine_floor = ManagedProcess(
            "engine-floor", run_dir, [self.engine_floor_port], marker="-m bench.engine_floor"
        )
        self.llm_server = ManagedProcess("llm-server", run_dir, [self.llm_port], marker="-m testllm")
        self._worker_env: dict[str, str] | None = None
        self._engine_floor_latency: float | None = None
        self._extras = (self.kafka_floor, self.engine_floor, self.llm_server)

    # -- the stack ------------------------------------------------------------------------------------

    def up(self) -> None:
        """A fresh stack: old bench processes stopped, data deleted, topics created before setup runs."""
        self.down()
        shutil.rmtree(self.cfg.run_dir, ignore_errors=True)
        self.stack.worker_env = dict(OFFLINE_ENV)
        self._worker_env = dict(OFFLINE_ENV)
        started = time.monotonic()
        for tier in self.stack.tiers:
            self.stack.start_all(tier)
        self._create_topics()
        run_setup(self.stack.setup_config(), log=lambda line: self.log(f"setup: {line}"))
        self.log(
            f"stack up in {time.monotonic() - started:.1f} s "
            f"(Kafka {self.cfg.kafka_bootstrap}, Restate admin {self.cfg.admin_url})"
        )

    def down(self) -> None:
        for proc in self._extras:
            proc.stop()
        self.stack.down()

    def _create_topics(self) -> None:
        # Broker timestamps on every measured topic (see bench/driver.py). The worker's own
        # topics are created here too, so devstack setup finds them and leaves them alone.
        setup = self.stack.setup_config()
        wanted = {
            setup.reports_topic: setup.reports_partitions,
            setup.tables_topic: 1,
            setup.dead_letter_topic: 1,
            KAFKA_FLOOR_IN: setup.reports_partitions,
            KAFKA_FLOOR_OUT: 1,
            ENGINE_FLOOR_IN: setup.reports_partitions,
            ENGINE_FLOOR_OUT: 1,
        }
        admin = AdminClient({"bootstrap.servers": self.cfg.kafka_bootstrap, "log_level": "3"})
        # On every broker of a cluster (as devstack's brokers default to), on the one broker otherwise.
        replicas = self.cfg.kafka_nodes
        topics = [NewTopic(name, n, replicas, config=LOG_APPEND_TIME) for name, n in wanted.items()]
        for future in admin.create_topics(topics).values():
            future.result()

    def pids(self, *names: str) -> dict[str, int]:
        """PIDs of stack components and extra processes by name (kafka, restate-2, worker, engine-floor, ...)."""
        found = {}
        stack = {c.name for c in self.stack.components}
        for name in names:
            proc = self.stack.component(name).process if name in stack else self._extra(name)
            pid = proc.pid()
            if pid is None:
                raise RuntimeError(f"{name} is not running; see {proc.log_file}")
            found[name] = pid
        return found

    def _extra(self, name: str) -> ManagedProcess:
        for proc in self._extras:
            if proc.name == name:
                return proc
        raise KeyError(name)

    def stack_pids(self) -> dict[str, int]:
        """Every running process of the stack, by component name."""
        return {name: pid for name, pid in self.stack.status().items() if pid is not None}

    def use_worker_processes(self, count: int) -> None:
        """The same stack with `count` worker processes (and a balancer in front of several)."""
        if count == self.cfg.worker_processes:
            return
        env = dict(self._worker_env or OFFLINE_ENV)
        self.cfg = replace(self.cfg, worker_processes=count)
        self.stack = Stack(self.cfg, log=self.stack.log)
        self.stack.worker_env = env
        self.stack.up()  # stops the other shape's workers and balancer, starts these, registers them

    def use_worker_env(self, env: Mapping[str, str]) -> None:
        """Restart the worker with `env` unless it already runs with it, and re-register it."""
        if self._worker_env == dict(env) and all(w.process.is_running() for w in self.stack.workers):
            return
        self.stack.worker_env = dict(env)
        self._worker_env = dict(env)
        self.stack.restart("worker")
        run_setup(self.stack.setup_config(), log=lambda _: None)

    # -- extra processes ------------------------------------------------------------------------------

    def _start(self, proc: ManagedProcess, argv: list[str], ready: Callable[[], bool]) -> None:
        if proc.is_running():
            return
        child = proc.start([sys.executable, *argv], env=self.stack.worker.env(), cwd=REPO_ROOT)
        deadline = time.monotonic() + 30
        while not ready():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not start; last lines of {proc.log_file}:\n{proc.log_tail()}")
            time.sleep(0.1)
        self.log(f"started {proc.name} (pid {child.pid})")

    def start_kafka_floor(self) -> None:
        argv = ["-m", "bench.kafka_floor", "--bootstrap", self.cfg.kafka_bootstrap,
                "--input-topic", KAFKA_FLOOR_IN, "--output-topic", KAFKA_FLOOR_OUT]  # fmt: skip
        self._start(self.kafka_floor, argv, lambda: True)

    def start_engine_floor(self, step_latency: float = 0.0) -> None:
        """Start (or restart, e.g. with another step latency) the engine floor and subscribe it."""
        url = f"http://127.0.0.1:{self.engine_floor_port}"
        argv = ["-m", "bench.engine_floor", "--bind", f"127.0.0.1:{self.engine_floor_port}",
                "--bootstrap", self.cfg.kafka_bootstrap, "--output-topic", ENGINE_FLOOR_OUT,
                "--step-latency", str(step_latency)]  # fmt: skip
        if self._engine_floor_latency != step_latency:
            self.engine_floor.stop()
        self._start(self.engine_floor, argv, lambda: _http_ok(f"{url}/health"))
        self._engine_floor_latency = step_latency
        self._register_engine_floor(url)

    def _register_engine_floor(self, url: str) -> None:
        from bench.engine_floor import HANDLER, SERVICE

        with httpx.Client(base_url=self.cfg.admin_url, timeout=30) as admin:
            admin.post("/deployments", json={"uri": url, "force": True}).raise_for_status()
            cluster = self.stack.setup_config().restate_kafka_cluster
            source, sink = f"kafka://{cluster}/{ENGINE_FLOOR_IN}", f"service://{SERVICE}/{HANDLER}"
            subscriptions = admin.get("/subscriptions").json().get("subscriptions", [])
            if any(s["source"] == source and s["sink"] == sink for s in subscriptions):
                return
            # The same consumer options as the worker's subscription (devstack/setup.py).
            options = {"group.id": "bench-engine-floor", "auto.offset.reset": "earliest", "session.timeout.ms": "10000"}
            admin.post("/subscriptions", json={"source": source, "sink": sink, "options": options}).raise_for_status()

    def start_llm_server(self, latency: float, requests_per_minute: int | None = None) -> str:
        """Start the test LLM server (answering 429 beyond `requests_per_minute`); returns its OPENAI_BASE_URL."""
        argv = ["-m", "testllm", "--port", str(self.llm_port), "--latency", str(latency)]
        if requests_per_minute is not None:
            argv += ["--requests-per-minute", str(requests_per_minute)]
        self._start(self.llm_server, argv, lambda: port_in_use(self.llm_port))
        return f"http://127.0.0.1:{self.llm_port}/v1"

    def stop_extra(self, name: str) -> None:
        self._extra(name).stop()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
