"""A report is its input record; its id is a label. Two reports that share an id, through the real
worker: both end with their own outcome, the reader shows both (flagging the reuse), and replay
selects the one that has no table even though the other one, with the same id, has one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.harness import DLQ, TABLES, OutputRecord, TestStack, unique


def run(stack: TestStack, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = stack.cfg.kafka_bootstrap
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )


def wait_for_records(stack: TestStack, key: str, count: int, timeout: float = 60) -> list[OutputRecord]:
    deadline = time.monotonic() + timeout
    while len(found := stack.outputs.records(key)) < count:
        assert time.monotonic() < deadline, f"{key}: {len(found)} of {count} output records"
        time.sleep(0.1)
    return found


def test_two_reports_with_one_id_each_end_once_and_are_both_shown(offline_stack: TestStack) -> None:
    stack = offline_stack
    rid = unique("same-id")
    stack.send({"id": rid, "message": "Revenue was $4.2M, up 12%."}, key=rid)
    stack.send({"id": rid, "message": "All quiet this week, nothing to report."}, key=rid)
    stack.flush()
    # Both are processed: one table, one dead letter (no numbers), each naming its own record.
    records = wait_for_records(stack, rid, 2)
    assert sorted(r.topic for r in records) == sorted([TABLES, DLQ]), records
    sources = {(r.json()["source"]["partition"], r.json()["source"]["offset"]) for r in records}
    assert len(sources) == 2

    shown = run(stack, "ops.results", "--json", "--id", rid, "--timeout", "30")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(line["kind"] for line in lines) == ["dead_letter", "table"]
    assert [line["id_reused"] for line in lines] == [False, True]
    assert len({line["origin"] for line in lines}) == 2
    assert "carried by more than one report" in shown.stderr

    # The dead-lettered one is still unresolved, whatever the other report with its id became.
    dry = run(stack, "ops.replay", "--report-id", rid, "--dry-run", "--timeout", "30")
    assert dry.returncode == 0, dry.stderr
    assert f"would re-send  {rid} (no_metrics" in dry.stdout and "selected 1," in dry.stdout
