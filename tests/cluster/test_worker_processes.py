"""WORKER_PROCESSES=2 on the single-node stack: two worker processes behind HAProxy, and both work."""

from __future__ import annotations

import pytest

from tests.harness import TestStack, unique

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

    # Each worker logs one line per report it finished.
    handled = {w.name: w.process.log_file.read_text().count(f"report {prefix}-") for w in stack.workers}
    assert sum(handled.values()) >= len(ids)
    # HAProxy hands each invocation (an HTTP/2 stream) to the worker with fewer in flight.
    assert min(handled.values()) >= 0.25 * len(ids), handled
