"""SIGKILL one Restate node, one Kafka broker, one worker process of the cluster under load:
every report ends as exactly one outcome, duplicates are byte-identical (and counted), no
completed step runs again, and no report is worked on twice at the same time."""

from __future__ import annotations

import pytest

from chaos.failover import FailoverPlan, run_failover
from testllm import LLMServer
from tests.harness import TestStack

pytestmark = pytest.mark.cluster

# About 10 reports/s for 15 s, each taking three 0.3 s LLM calls: the kill at 5 s hits reports in
# every state (queued in Restate, mid-chain, publishing). A fresh seed per test keeps report ids apart.
VICTIMS = {"restate-2": 11, "kafka-2": 12, "worker-1": 13}


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_killed_node_loses_nothing(cluster: TestStack, llm: LLMServer, victim: str) -> None:
    llm.reset()
    plan = FailoverPlan(victim=victim, reports=150, send_seconds=15, kill_at_s=5, down_s=5, seed=VICTIMS[victim])
    report = run_failover(cluster.stack, llm, plan, log=lambda line: print(f"[failover] {line}", flush=True))
    print(report.summary(), flush=True)

    accounting = report.accounting
    assert not report.failures(), f"{report.summary()}\n{accounting.render()}"
    assert accounting.inputs == 150
    # Valid reports with numbers, a correct LLM: every one is a table.
    assert accounting.tables == 150 and accounting.dead_letters == 0
    assert all(d.identical for d in accounting.duplicates)
    assert report.restarted_at is not None
