"""The cluster session (`make test-cluster`, the second session of `make test`): real
3-broker Kafka, 3-node Restate and several worker processes behind HAProxy, on ports
shifted by $TEST_STACK_OFFSET like the main session's stack, in run directories of their own.

Its own session because each stack costs a cold start of six servers: the main suite stays fast.
Stacks are module fixtures, so no two run at once (they share the offset's ports).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from devstack.config import CLUSTER, SINGLE, StackConfig
from testllm import LLMServer
from tests.harness import TestStack

# Each call takes this long, so a kill lands while steps are in flight.
LLM_CALL_SECONDS = 0.3
# One line per kill (duplicates counted, pause measured), shown at the end of the session.
KILL_SUMMARIES: list[str] = []
# When this session restarted a Restate node: leadership moves back to it for a while afterwards, so a
# kill run that follows soon after sees that handover too (chaos/failover.py counts it as one).
RESTATE_RESTARTS: list[float] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if KILL_SUMMARIES:
        terminalreporter.section("kills under load")
        for line in KILL_SUMMARIES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def llm() -> Iterator[LLMServer]:
    server = LLMServer(latency=LLM_CALL_SECONDS).start()
    yield server
    server.stop()


def openai_env(llm: LLMServer) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-cluster",
        "OPENAI_BASE_URL": llm.base_url,
        "LLM_MODEL": "test-model",
        "LLM_TIMEOUT_SECONDS": "10",
    }


def _started(cfg: StackConfig, env: dict[str, str]) -> TestStack:
    stack = TestStack(cfg)
    stack.worker_env = {**stack.worker_env, **env}
    stack.stack.worker_env = stack.worker_env
    try:
        stack.start(fresh=True)
    except Exception:
        stack.stack.down()
        raise
    return stack


@pytest.fixture(scope="module")
def cluster(llm: LLMServer) -> Iterator[TestStack]:
    """3 Kafka brokers, 3 Restate nodes, 2 worker processes behind the balancer; workers on the test LLM server."""
    stack = _started(StackConfig.for_tests(profile=CLUSTER), openai_env(llm))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def two_workers() -> Iterator[TestStack]:
    """The single-node stack with WORKER_PROCESSES=2 (offline provider)."""
    cfg = StackConfig.for_tests(profile=SINGLE, worker_processes=2)
    stack = _started(replace(cfg, run_dir=cfg.run_dir.with_name(cfg.run_dir.name + "-w2")), {})
    yield stack
    stack.stop()
