"""The cluster profile: what `up` builds, that `up` again restarts only what died, that the
operating tools read the cluster; and SIGKILL of one Restate node, one Kafka broker and one
worker process under load: every report ends as exactly one outcome, duplicates are
byte-identical (and counted), no completed step runs again, and no report is worked on twice
at the same time outside a leadership handover."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from chaos.failover import FailoverPlan, run_failover
from devstack.setup import run_setup
from testllm import LLMServer
from tests.cluster.conftest import KILL_SUMMARIES, RESTATE_RESTARTS
from tests.harness import TestStack, unique

pytestmark = pytest.mark.cluster


def test_three_brokers_three_restate_nodes_and_workers_behind_one_endpoint(cluster: TestStack) -> None:
    stack = cluster.stack
    assert list(stack.status()) == [
        "kafka-1", "kafka-2", "kafka-3", "restate-1", "restate-2", "restate-3", "worker-1", "worker-2", "balancer",
    ]  # fmt: skip
    assert all(pid is not None for pid in stack.status().values())

    admin = AdminClient({"bootstrap.servers": cluster.cfg.kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]
    for topic in ("reports", "tables", "reports.dlq"):
        for partition in metadata.topics[topic].partitions.values():
            assert len(partition.replicas) == 3, (topic, partition.replicas)
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "tables")])
    assert next(iter(config.values())).result()["min.insync.replicas"].value == "2"

    # One registered deployment: the balancer, not a worker process behind it.
    deployments = httpx.get(f"{cluster.cfg.admin_url}/deployments", timeout=10).json()["deployments"]
    assert [d.get("uri", "").rstrip("/") for d in deployments] == [cluster.cfg.worker_url]
    # The Kafka cluster and the subscription live in cluster metadata: every node serves them.
    for node in stack.restate_nodes:
        subs = httpx.get(f"{node.admin_url}/subscriptions", timeout=10).json()["subscriptions"]
        assert [s["source"] for s in subs] == ["kafka://local/reports"], node.name
        clusters = httpx.get(f"{node.admin_url}/kafka-clusters", timeout=10).json()["clusters"]
        assert clusters[0]["properties"]["bootstrap.servers"] == cluster.cfg.kafka_bootstrap


def test_up_again_restarts_only_what_died_and_keeps_one_subscription(cluster: TestStack) -> None:
    stack = cluster.stack
    victims = {"kafka-3", "restate-3", "worker-2"}
    before = stack.status()
    for name in victims:
        stack.component(name).process.kill()

    stack.up()
    RESTATE_RESTARTS.append(time.time())

    after = stack.status()
    assert all(pid is not None for pid in after.values()), after
    changed = {name for name in after if after[name] != before[name]}
    assert changed == victims
    subs = httpx.get(f"{cluster.cfg.admin_url}/subscriptions", timeout=10).json()["subscriptions"]
    assert len(subs) == 1
    run_setup(stack.setup_config(), log=lambda _: None)  # and once more: still idempotent
    assert len(httpx.get(f"{cluster.cfg.admin_url}/subscriptions", timeout=10).json()["subscriptions"]) == 1


def test_status_and_results_read_the_cluster(cluster: TestStack) -> None:
    report_id = unique("ops")
    cluster.send({"id": report_id, "message": "Revenue was $4.2M with 310 customers."}, key=report_id)
    cluster.flush()
    cluster.outputs.wait_for([report_id], timeout=60)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.cfg.kafka_bootstrap,
        "RESTATE_ADMIN_URL": cluster.cfg.admin_url,
    }
    results = subprocess.run(
        [sys.executable, "-m", "ops.results", "--json", "--id", report_id, "--timeout", "30"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert results.returncode == 0, results.stderr
    assert json.loads(results.stdout.splitlines()[0])["report_id"] == report_id
    status = subprocess.run(
        [sys.executable, "-m", "ops.status", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["invocations"]["completed_success"] >= 1


# About 10 reports/s for 15 s, each taking three 0.3 s LLM calls: the kill at 5 s hits reports in
# every state (queued in Restate, mid-chain, publishing). A fresh seed per test keeps report ids apart.
VICTIMS = {"restate-2": 11, "kafka-2": 12, "worker-1": 13}


@pytest.mark.parametrize("victim", list(VICTIMS))
def test_a_killed_node_loses_nothing(cluster: TestStack, llm: LLMServer, victim: str) -> None:
    llm.reset()
    plan = FailoverPlan(victim=victim, reports=150, send_seconds=15, kill_at_s=5, down_s=5, seed=VICTIMS[victim])
    report = run_failover(
        cluster.stack, llm, plan, log=lambda line: print(f"[failover] {line}", flush=True),
        earlier_restarts=RESTATE_RESTARTS,
    )  # fmt: skip
    if victim.startswith("restate") and report.restarted_at is not None:
        RESTATE_RESTARTS.append(report.restarted_at)
    KILL_SUMMARIES.append(report.summary())

    accounting = report.accounting
    assert not report.failures(), f"{report.summary()}\n{accounting.render()}"
    assert accounting.inputs == 150
    # Valid reports with numbers, a correct LLM: every one is a table.
    assert accounting.tables == 150 and accounting.dead_letters == 0
    assert all(d.identical for d in accounting.duplicates)
    assert report.restarted_at is not None
