"""End to end through real Kafka and restate-server: reports in, tables out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack.setup import run_setup
from tests.harness import TestStack, unique

SAMPLES = Path(__file__).resolve().parent.parent / "producer" / "samples.jsonl"
STEPS = ["Input message", "Extract metrics", "Sort metrics", "Format as table", "Publish table"]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.005 * max(abs(a), abs(b), 1e-9)


def test_samples_sent_with_the_producer_cli_come_back_as_sorted_tables(
    offline_stack: TestStack, tmp_path: Path
) -> None:
    samples = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]
    assert len(samples) == 12
    # Unique ids per run: the session's topics are shared by every test.
    run = unique("e2e")
    for s in samples:
        s["id"] = f"{run}-{s['id']}"
    file = tmp_path / "samples.jsonl"
    file.write_text("\n".join(json.dumps(s) for s in samples) + "\n")

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": offline_stack.cfg.kafka_bootstrap}
    sent = subprocess.run(
        [sys.executable, "-m", "producer", "--file", str(file)], env=env, capture_output=True, text=True, timeout=60
    )
    assert sent.returncode == 0, sent.stderr

    outputs = offline_stack.outputs.wait_for([s["id"] for s in samples], timeout=90)
    for sample in samples:
        records = outputs[sample["id"]]
        assert len(records) == 1, f"{sample['id']}: {len(records)} records"
        assert records[0].topic == "tables", records[0].json()
        value = records[0].json()
        values = [m["value"] for m in value["metrics"]]
        assert values == sorted(values, reverse=True), f"{sample['id']} not sorted: {values}"
        for expected in sample["expected"]:
            assert any(_close(expected["value"], v) for v in values), f"{sample['id']}: missing {expected} in {values}"
        assert value["table"].count("\n") >= len(values) + 1  # header, separator, one row per metric
        assert value["source"]["topic"] == "reports"
        assert value["invocation_id"].startswith("inv_")
        assert [s["step"] for s in value["ledger"]["steps"]] == STEPS[1:4]


def test_journal_shows_the_named_steps_in_order(offline_stack: TestStack) -> None:
    report_id = unique("journal")
    offline_stack.send({"id": report_id, "message": "Revenue grew 12% to $4.5M with 310 customers."})
    offline_stack.flush()
    record = offline_stack.outputs.wait_for([report_id])[report_id][0].json()

    journal = offline_stack.journal(record["invocation_id"])
    runs = [e["name"] for e in journal if e["entry_type"] == "Command: Run"]
    assert runs == STEPS
    status = offline_stack.query(f"SELECT status, target FROM sys_invocation WHERE id = '{record['invocation_id']}'")
    assert status == [{"status": "completed", "target": "ReportChain/process"}]


def test_poison_records_go_to_the_dead_letter_topic_and_valid_ones_flow_on(offline_stack: TestStack) -> None:
    run = unique("poison")
    valid = [{"id": f"{run}-ok-{i}", "message": f"Throughput reached {100 + i} requests per second."} for i in range(4)]
    poison = {
        f"{run}-array": b"[1, 2]",
        f"{run}-nomsg": json.dumps({"id": f"{run}-nomsg", "text": "x"}).encode(),
        f"{run}-blank": json.dumps({"id": f"{run}-blank", "message": "  "}).encode(),
    }
    offline_stack.send(valid[0])
    for key, raw in poison.items():
        offline_stack.send(raw, key=key)
    for report in valid[1:]:
        offline_stack.send(report)
    offline_stack.flush()

    outputs = offline_stack.outputs.wait_for([r["id"] for r in valid] + [f"{run}-nomsg", f"{run}-blank"])
    assert all(outputs[r["id"]][0].topic == "tables" for r in valid)
    assert outputs[f"{run}-nomsg"][0].topic == "reports.dlq"
    letter = outputs[f"{run}-nomsg"][0].json()
    assert letter["reason"] == "invalid_schema"
    assert '"message" must be a string' in letter["error"]
    assert letter["source"]["topic"] == "reports" and letter["source"]["offset"] is not None
    assert outputs[f"{run}-blank"][0].json()["reason"] == "empty"


def test_restate_scratch_directories_stay_under_the_run_dir(stack: TestStack) -> None:
    # restate-server makes an invoker-* directory per partition on every start and never
    # removes it; the stack points TMPDIR at the run dir so `make clean` takes them too.
    scratch = stack.stack.restate.scratch_dir
    assert scratch.is_relative_to(stack.cfg.run_dir)
    assert any(p.name.startswith("invoker-") for p in scratch.iterdir())


def test_setup_twice_leaves_exactly_one_subscription(stack: TestStack) -> None:
    cfg = stack.stack.setup_config()
    first = run_setup(cfg, log=lambda _: None)
    second = run_setup(cfg, log=lambda _: None)
    assert first == second
    subs = httpx.get(f"{stack.cfg.admin_url}/subscriptions", timeout=10).json()["subscriptions"]
    ours = [s for s in subs if s["sink"] == "service://ReportChain/process"]
    assert len(ours) == 1, ours
    assert ours[0]["options"]["group.id"] == "report-chain"
    assert ours[0]["options"]["auto.offset.reset"] == "earliest"


@pytest.mark.parametrize("component", ["worker", "restate", "kafka"])
def test_up_restarts_just_the_component_that_was_killed(stack: TestStack, component: str) -> None:
    before = stack.stack.status()
    stack.stack.component(component).process.kill()
    stack.stack.up()
    after = stack.stack.status()
    assert after[component] is not None and after[component] != before[component]
    for other, pid in before.items():
        if other != component:
            assert after[other] == pid, f"{other} was restarted too"
    # And the chain still works.
    report_id = unique(f"after-{component}")
    stack.send({"id": report_id, "message": "Latency p99 was 420 ms across 12 regions."})
    stack.flush()
    assert stack.outputs.wait_for([report_id], timeout=90)[report_id][0].topic == "tables"
