"""Start, check and stop a whole local stack: a list of components, started tier by tier."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from devstack.components import Balancer, Component, Kafka, LocalLLM, Restate, Worker
from devstack.config import MAX_WORKER_PROCESSES, StackConfig
from devstack.processes import StackError
from devstack.setup import SetupConfig, run_setup


class Stack:
    def __init__(self, cfg: StackConfig | None = None, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg or StackConfig()
        self.log = log
        c = self.cfg
        self.kafka_nodes = [Kafka(c, n) for n in range(1, c.kafka_nodes + 1)]
        self.restate_nodes = [Restate(c, n) for n in range(1, c.restate_nodes + 1)]
        self.workers = [Worker(c, i) for i in range(1, c.worker_processes + 1)]
        self.balancer = Balancer(c) if c.balanced else None
        # Every worker process has the same environment: the first one says whether the local LLM is wanted.
        self.llm = LocalLLM(c, self.workers[0])
        self._worker_env: dict[str, str] = {}

    # -- the parts --------------------------------------------------------------
    @property
    def kafka(self) -> Kafka:
        """The first broker (the only one in the single profile)."""
        return self.kafka_nodes[0]

    @property
    def restate(self) -> Restate:
        """The first restate-server node (the only one in the single profile)."""
        return self.restate_nodes[0]

    @property
    def worker(self) -> Worker:
        """The first worker process (the only one unless there are several)."""
        return self.workers[0]

    @property
    def worker_env(self) -> dict[str, str]:
        """Extra environment for every worker process (tests switch providers with it)."""
        return dict(self._worker_env)

    @worker_env.setter
    def worker_env(self, env: Mapping[str, str]) -> None:
        self._worker_env = dict(env)
        for worker in self.workers:
            worker.extra_env = dict(env)

    @property
    def tiers(self) -> list[list[Component]]:
        """Start order, each tier started at once (a quorum needs its peers); stop order is the reverse."""
        tiers: list[list[Component]] = [list(self.kafka_nodes), list(self.restate_nodes), [self.llm]]
        tiers.append(list(self.workers))
        if self.balancer is not None:
            tiers.append([self.balancer])
        return tiers

    @property
    def components(self) -> list[Component]:
        return [c for tier in self.tiers for c in tier]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        names = ", ".join(c.name for c in self.components)
        raise StackError(f"no component named {name!r} (choose from {names})")

    def group(self, name: str) -> list[Component]:
        """Components by name (`worker-2`) or by kind (`worker`: every worker process)."""
        kinds: dict[str, list[Component]] = {
            "kafka": list(self.kafka_nodes),
            "restate": list(self.restate_nodes),
            "worker": list(self.workers),
            "llm": [self.llm],
            "balancer": [self.balancer] if self.balancer else [],
        }
        return kinds.get(name) or [self.component(name)]

    def _leftovers(self) -> list[Component]:
        """Worker processes and a balancer of this profile's other shapes (another WORKER_PROCESSES)."""
        mine = {c.name for c in self.components}
        others: list[Component] = []
        for count in (1, MAX_WORKER_PROCESSES):
            other = dataclasses.replace(self.cfg, worker_processes=count)
            others += [Worker(other, i) for i in range(1, count + 1)]
            others += [Balancer(other)] if other.balanced else []
        unique = {c.name: c for c in others if c.name not in mine}
        return list(unique.values())

    # -- setup ------------------------------------------------------------------
    def setup_config(self) -> SetupConfig:
        """The environment's setup, pointed at this stack's addresses."""
        cfg = SetupConfig.from_env()
        kafka = cfg.kafka.with_bootstrap(self.cfg.kafka_bootstrap)
        return dataclasses.replace(
            cfg,
            kafka=kafka,
            restate_kafka=kafka,
            restate_admin_url=self.cfg.admin_url,
            worker_url=self.cfg.worker_url,
        )

    # -- starting and stopping --------------------------------------------------
    def start(self, component: Component, timeout: float = 60.0) -> None:
        """Start one component unless it runs, and wait until it is healthy."""
        self.start_all([component], timeout)

    def start_all(self, components: list[Component], timeout: float = 60.0) -> None:
        """Start those of `components` that are not running, all at once, then wait until all are healthy."""
        children: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        for component in components:
            if not component.process.is_running():
                children[component.name] = self._spawn(component)
        for component in components:
            child = children.get(component.name)
            if child is None:
                if self._wait_healthy(component, _not_running(component), timeout):
                    continue
                # It died while we waited (for instance right after a kill -9): start it again.
                child = self._spawn(component)
            process, started = child
            # Our own child: poll() is exact, even while the JVM launcher re-executes itself.
            if not self._wait_healthy(component, _exited(process), timeout):
                raise StackError(
                    f"{component.name} exited during start-up; last lines of {component.process.log_file}:\n"
                    f"{component.process.log_tail()}"
                )
            elapsed = time.monotonic() - started
            self.log(
                f"started {component.name:<10} pid {process.pid:<7} in {elapsed:4.1f} s  "
                f"(log: {component.process.log_file})"
            )

    def _spawn(self, component: Component) -> tuple[subprocess.Popen[bytes], float]:
        component.prepare()
        return component.process.start(component.argv(), component.env()), time.monotonic()

    def _wait_healthy(self, component: Component, exited: Callable[[], bool], timeout: float) -> bool:
        """True once healthy, False if the process exits first; raises after `timeout`."""
        deadline = time.monotonic() + timeout
        while not component.healthy():
            if exited():
                return False
            if time.monotonic() > deadline:
                raise StackError(
                    f"{component.name} is not healthy after {timeout:.0f} s; see {component.process.log_file}"
                )
            time.sleep(0.2)
        return True

    def up(self) -> float:
        """Start what is not running, then run the idempotent setup. Returns seconds taken."""
        started = time.monotonic()
        for leftover in self._leftovers():
            if leftover.process.stop():
                self.log(f"stopped {leftover.name} (not part of this stack's shape)")
        if self.balancer is not None and self.balancer.process.is_running() and not self.balancer.is_current():
            self.balancer.process.stop()  # started for another set of workers
        self.cfg.record()
        for tier in self.tiers:
            # The local LLM starts only when the worker uses it, and loading a model takes a while.
            wanted = [c for c in tier if c is not self.llm or self.llm.wanted()]
            self.start_all(wanted, timeout=180 if self.llm in wanted else 60)
        run_setup(self.setup_config(), log=self.log)
        return time.monotonic() - started

    def down(self) -> None:
        # Tier by tier, each tier at once: brokers stopped one after another would each wait
        # for a controller quorum that the previous stops took away.
        for tier in [self._leftovers(), *reversed(self.tiers)]:
            with ThreadPoolExecutor(max_workers=max(1, len(tier))) as pool:
                stopped = list(pool.map(lambda c: c.process.stop(), tier))
            for component, was_running in zip(tier, stopped, strict=True):
                if was_running:
                    self.log(f"stopped {component.name}")

    def restart(self, name: str) -> None:
        """Restart a component (`worker-2`) or every one of a kind (`worker`)."""
        components = self.group(name)
        for component in components:
            component.process.stop()
        self.start_all(components)

    def status(self) -> dict[str, int | None]:
        """PID (or None) of every component, the local LLM only when it is wanted or runs."""
        found = {c.name: c.process.pid() for c in self.components}
        if found[self.llm.name] is None and not self.llm.wanted():
            del found[self.llm.name]
        return found

    def running(self) -> bool:
        return any(pid is not None for pid in self.status().values()) or any(
            c.process.is_running() for c in self._leftovers()
        )


def _not_running(component: Component) -> Callable[[], bool]:
    return lambda: not component.process.is_running()


def _exited(child: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: child.poll() is not None
