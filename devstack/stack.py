"""Start, check and stop a whole local stack."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from devstack.components import Component, Kafka, LocalLLM, Restate, Worker
from devstack.config import StackConfig
from devstack.processes import StackError
from devstack.setup import SetupConfig, run_setup


class Stack:
    def __init__(self, cfg: StackConfig | None = None, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg or StackConfig()
        self.log = log
        self.kafka = Kafka(self.cfg)
        self.restate = Restate(self.cfg)
        self.worker = Worker(self.cfg)
        self.llm = LocalLLM(self.cfg, self.worker)

    @property
    def components(self) -> list[Component]:
        # Start order; stop order is the reverse. The local LLM starts only when the worker uses it.
        return [self.kafka, self.restate, self.llm, self.worker]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise StackError(f"no component named {name!r} (choose from kafka, restate, llm, worker)")

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

    def start(self, component: Component, timeout: float = 60.0) -> None:
        """Start one component unless it runs, and wait until it is healthy."""
        proc = component.process
        if proc.is_running() and self._wait_healthy(component, lambda: not proc.is_running(), timeout):
            return
        # Not running, or it died while we waited (for instance right after a kill -9).
        component.prepare()
        started = time.monotonic()
        child = proc.start(component.argv(), component.env())
        # Our own child: poll() is exact, even while the JVM launcher re-executes itself.
        if not self._wait_healthy(component, lambda: child.poll() is not None, timeout):
            raise StackError(
                f"{component.name} exited during start-up; last lines of {proc.log_file}:\n{proc.log_tail()}"
            )
        elapsed = time.monotonic() - started
        self.log(f"started {component.name:<8} pid {child.pid:<7} in {elapsed:4.1f} s  (log: {proc.log_file})")

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
        for component in self.components:
            if component is not self.llm or self.llm.wanted():
                self.start(component, timeout=180 if component is self.llm else 60)
        run_setup(self.setup_config(), log=self.log)
        return time.monotonic() - started

    def down(self) -> None:
        for component in reversed(self.components):
            if component.process.stop():
                self.log(f"stopped {component.name}")

    def restart(self, name: str) -> None:
        component = self.component(name)
        component.process.stop()
        self.start(component)

    def status(self) -> dict[str, int | None]:
        return {c.name: c.process.pid() for c in self.components}
