"""WORKER_PROCESSES=2 on the single-node stack: two worker processes behind HAProxy, and both work."""

from __future__ import annotations

import time
import uuid

import pytest

from testllm import LLMServer, RateLimit
from tests.harness import TestStack, unique
from tests.test_budget import WINDOW, budget_env, ours, outcomes, peak_of, send_reports

pytestmark = pytest.mark.cluster


def test_two_worker_processes_share_the_invocations(two_workers: TestStack) -> None:
    stack = two_workers.stack
    assert [w.name for w in stack.workers] == ["worker-1", "worker-2"]
    assert stack.balancer is not None and stack.balancer.process.is_running()

    prefix = unique("w2")
    ids = [f"{prefix}-{n}" for n in range(200)]
    for report_id in ids:
        two_workers.send({"id": report_id, "message": f"Revenue was ${len(report_id)}M, churn 2.{len(ids)}%"})
    two_workers.flush()
    two_workers.outputs.wait_for(ids, timeout=120)

    # Each worker logs one line per report once its handler ends (just after the table is out).
    def handled() -> dict[str, int]:
        return {w.name: w.process.log_file.read_text().count(f"report {prefix}-") for w in stack.workers}

    deadline = time.monotonic() + 30
    while sum(handled().values()) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(handled().values()) >= len(ids), handled()
    # HAProxy hands each invocation (an HTTP/2 stream) to the worker with fewer in flight.
    assert min(handled().values()) >= 0.25 * len(ids), handled()


def test_one_budget_holds_across_two_worker_processes(two_workers: TestStack, llm: LLMServer) -> None:
    """Both processes ask the same LLMBudget object: together they stay inside the budget."""
    stack, model = two_workers.stack, f"budget-w2-{uuid.uuid4().hex[:6]}"
    requests = 6  # per WINDOW, for the budget and for the server alike
    llm.reset()
    llm.limit_rate(RateLimit(requests=requests, window=WINDOW))
    two_workers.use_worker_env(budget_env(llm, model, requests))
    try:
        prefix = unique("w2-budget")
        ids = send_reports(two_workers, prefix, 16)  # 48 calls: at least 8 windows' worth
        records = outcomes(two_workers, ids, timeout=180)
        assert {r.topic for r in records} == {"tables"}
        calls = ours(llm, ids)
        assert len(calls) == 48
        assert not [c for c in calls if c.rate_limited]
        assert peak_of(calls)[0] <= requests
        # Both processes made calls under the one budget (each logs one line per report it handled).
        handled = {w.name: w.process.log_file.read_text().count(f"report {prefix}-") for w in stack.workers}
        assert min(handled.values()) >= 1, handled
    finally:
        llm.reset()
        two_workers.use_worker_env({})
