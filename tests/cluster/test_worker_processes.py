"""WORKER_PROCESSES=2 on the single-node stack: two worker processes behind HAProxy, and both work."""

from __future__ import annotations

import time

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

    # Each worker logs one line per report once its handler ends (just after the table is out).
    def handled() -> dict[str, int]:
        return {w.name: w.process.log_file.read_text().count(f"report {prefix}-") for w in stack.workers}

    deadline = time.monotonic() + 30
    while sum(handled().values()) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(handled().values()) >= len(ids), handled()
    # HAProxy hands each invocation (an HTTP/2 stream) to the worker with fewer in flight.
    assert min(handled().values()) >= 0.25 * len(ids), handled()
