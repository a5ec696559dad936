"""`python -m ops.status` against the session stack: real invocations, read back as a subprocess.

The session's stack is shared, so each test first waits until nothing is on its way, then asserts
exact differences between two snapshots.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from devstack.components import restate_cli
from devstack.config import REPO_ROOT
from tests.harness import TestStack, unique

STEPS = ["Extract metrics", "Sort metrics", "Format as table"]
CLEAR_SCREEN = "\033[H\033[2J"
TARGET_FILTER = "target = 'ReportChain/process'"


def status_env(stack: TestStack, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KAFKA_") and k not in {"TABLES_TOPIC", "DEAD_LETTER_TOPIC", "REPORTS_TOPIC"}
    }
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=stack.cfg.kafka_bootstrap,
        RESTATE_ADMIN_URL=stack.cfg.admin_url,
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(overrides)
    return env


def run_status(stack: TestStack, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.status", *args],
        env=status_env(stack, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status_json(stack: TestStack) -> dict[str, Any]:
    # 7 days covers everything Restate retains (1 day), so nothing leaves the window during a test.
    result = run_status(stack, "--json", "--since", "7d", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def restate(stack: TestStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The real restate CLI, pointed at the session's Restate."""
    return subprocess.run(
        [str(restate_cli()), *args],
        env={**os.environ, "RESTATE_ADMIN_URL": stack.cfg.admin_url},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(every)


def settled(stack: TestStack, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until no invocation is on its way (paused ones wait for an operator) and Kafka lag is 0."""

    def check() -> dict[str, Any] | None:
        status = status_json(stack)
        moving = status["invocations"]["in_flight"] - status["invocations"]["paused"]
        return status if moving == 0 and status["kafka"]["consumer_group"]["total_lag"] == 0 else None

    return dict(eventually(check, "the stack settling", timeout, every=0.5))


def counts(status: dict[str, Any]) -> dict[str, int]:
    flat = {f"invocations.{k}": v for k, v in status["invocations"].items() if isinstance(v, int)}
    flat |= {f"steps.{name}": p["count"] for name, p in status["step_latency_ms"].items()}
    flat |= {
        "end_to_end": status["end_to_end_ms"]["count"],
        "tables": status["kafka"]["tables"]["records"],
        "dead_letters": status["kafka"]["dead_letters"]["records"],
    }
    return flat


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    a, b = counts(after), counts(before)
    return {k: a[k] - b.get(k, 0) for k in a if a[k] != b.get(k, 0)}


def in_flight_ids(stack: TestStack) -> list[str]:
    rows = stack.query(f"SELECT id FROM sys_invocation WHERE {TARGET_FILTER} AND status NOT IN ('completed', 'paused')")
    return [str(r["id"]) for r in rows]


def invocation(stack: TestStack, invocation_id: str) -> dict[str, Any]:
    rows = stack.query(
        "SELECT status, completion_result, last_failure, last_failure_related_command_name "
        f"FROM sys_invocation WHERE id = '{invocation_id}'"
    )
    return rows[0] if rows else {}


def publish_fails_then_pauses(missing_topic: str, attempts: int) -> dict[str, str]:
    """Worker env whose publish fails fast (the topic does not exist) and whose invocations pause
    after `attempts` tries (40 by default)."""
    return {
        "TABLES_TOPIC": missing_topic,
        "KAFKA_MESSAGE_TIMEOUT_MS": "1000",
        "INVOCATION_RETRY_MAX_ATTEMPTS": str(attempts),
        "INVOCATION_RETRY_MAX_INTERVAL": "1",
    }


def test_status_counts_a_table_a_dead_letter_and_a_paused_invocation(offline_stack: TestStack) -> None:
    stack = offline_stack
    before = settled(stack)

    # One report that becomes a table, one that is dead-lettered (invalid schema).
    table_id, dead_id = unique("status-table"), unique("status-dead")
    stack.send({"id": table_id, "message": "Revenue was $12.5M, up 22%, with 340 employees."}, key=table_id)
    stack.send({"id": dead_id, "message": 42}, key=dead_id)
    stack.flush()
    stack.outputs.wait_for([table_id, dead_id])
    middle = settled(stack)
    assert delta(middle, before) == {
        "invocations.completed_success": 2,
        "steps.Input message": 2,
        **{f"steps.{s}": 1 for s in STEPS},
        "steps.Publish table": 1,
        "steps.Publish dead letter": 1,
        "end_to_end": 2,
        "tables": 1,
        "dead_letters": 1,
    }
    group = middle["kafka"]["consumer_group"]
    assert (group["group_id"], group["topic"]) == ("report-chain", "reports")
    assert group["subscription_id"].startswith("sub_")
    assert [p["partition"] for p in group["partitions"]] == [0, 1, 2, 3]
    assert all(p["committed"] in (None, p["end"]) and p["lag"] == 0 for p in group["partitions"])
    assert "not yet in Restate's log" in group["note"]
    assert middle["step_latency_ms"]["Extract metrics"]["p50"] is not None

    # A paused invocation, for real: the publish fails (the topic does not exist) until the invocation
    # retry policy gives up and pauses it (3 attempts here instead of 40).
    missing_topic = unique("no-such-topic")
    paused_report = unique("status-paused")
    stuck: str | None = None
    stack.use_worker_env(publish_fails_then_pauses(missing_topic, attempts=3))
    try:
        stack.send({"id": paused_report, "message": "Uptime was 99.9% with 3 incidents."}, key=paused_report)
        stack.flush()
        stuck = str(eventually(lambda: in_flight_ids(stack)[:1], "the invocation starting")[0])
        eventually(lambda: invocation(stack, stuck or "").get("status") == "paused", "the pause", timeout=90)

        after = status_json(stack)
        # Its input and its three LLM steps are done (and counted); the publish is not.
        assert delta(after, middle) == {
            "invocations.paused": 1,
            "invocations.in_flight": 1,
            "steps.Input message": 1,
            **{f"steps.{s}": 1 for s in STEPS},
        }
        [entry] = [p for p in after["paused"] if p["id"] == stuck]
        assert entry["status"] == "paused"
        assert entry["report_id"] == paused_report
        assert entry["source"].startswith("reports/")
        assert entry["step"] == "Publish table"
        assert entry["completed_steps"] == ["Input message", *STEPS]
        # Once paused by the policy, Restate clears retry_count and last_failure from sys_invocation: the
        # failure shown comes from the journal's Paused event.
        assert entry["attempts"] in (None, 3)
        assert entry["paused_at"] is not None
        assert missing_topic in entry["last_failure"] and "PublishError" in entry["last_failure"]
        assert entry["last_failure_code"] == "RT0007"  # Restate's code for a retryable error from the service
        assert "Traceback" not in entry["last_failure"]  # one line, not the worker's stack trace
        assert after["oldest_in_flight"] is not None
        assert after["oldest_in_flight"]["created_at"] <= entry["created_at"]

        human = run_status(stack, "--since", "7d", "--limit", "1000")
        assert human.returncode == 0, human.stderr
        row = next(line for line in human.stdout.splitlines() if line.strip().startswith(stuck))  # the paused table
        assert "Publish table" in row and "PublishError" in row
        assert "restate invocations resume" in human.stdout

        # The README's operator path: list the paused invocations, fix the cause, resume.
        listed = restate(stack, "invocations", "list", "--status", "paused")
        assert stuck in listed.stdout, listed.stdout + listed.stderr
        stack.use_worker_env()
        resumed = restate(stack, "invocations", "resume", stuck, "--yes")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        stack.outputs.wait_for([paused_report])
        eventually(lambda: invocation(stack, stuck or "").get("completion_result") == "success", "completion")
        final = settled(stack)
        assert delta(final, middle) == {
            "invocations.completed_success": 1,
            "steps.Input message": 1,
            **{f"steps.{s}": 1 for s in STEPS},
            "steps.Publish table": 1,
            "end_to_end": 1,
            "tables": 1,
        }
        assert all(p["id"] != stuck for p in final["paused"])
    finally:
        stack.use_worker_env()
        if stuck is not None and invocation(stack, stuck).get("status") != "completed":
            httpx.patch(f"{stack.cfg.admin_url}/invocations/{stuck}/kill", timeout=10)


def test_status_counts_a_killed_invocation_as_a_failure(offline_stack: TestStack) -> None:
    # The handler never fails on its own (bad input ends as a dead letter), so a failed invocation
    # is one an operator gave up on: paused, then killed.
    stack = offline_stack
    before = settled(stack)
    report_id = unique("status-killed")
    stuck: str | None = None
    stack.use_worker_env(publish_fails_then_pauses(unique("no-such-topic"), attempts=2))
    try:
        stack.send({"id": report_id, "message": "Churn fell to 2.1% across 480 accounts."}, key=report_id)
        stack.flush()
        stuck = str(eventually(lambda: in_flight_ids(stack)[:1], "the invocation starting")[0])
        eventually(lambda: invocation(stack, stuck or "").get("status") == "paused", "the pause", timeout=90)
        killed = restate(stack, "invocations", "kill", stuck, "--yes")
        assert killed.returncode == 0, killed.stdout + killed.stderr
        eventually(lambda: invocation(stack, stuck or "").get("completion_result") == "failure", "the kill")
        after = settled(stack)
        changes = delta(after, before)
        assert changes["invocations.completed_failure"] == 1, changes
        assert "invocations.paused" not in changes and "invocations.completed_success" not in changes, changes
        assert "tables" not in changes and "dead_letters" not in changes, changes
    finally:
        stack.use_worker_env()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_restate_exits_1_naming_the_address(stack: TestStack) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = run_status(stack, "--admin-url", url)
    assert result.returncode == 1
    assert f"cannot reach Restate admin at {url}" in result.stderr
    assert result.stdout == ""


def test_unreachable_kafka_exits_1_naming_the_address(stack: TestStack) -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    result = run_status(stack, "--json", KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    assert result.returncode == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.stderr


def test_usage_errors_exit_2_and_help_exits_0(stack: TestStack) -> None:
    assert run_status(stack, "--since", "ten minutes").returncode == 2
    assert run_status(stack, "--since", "0h").returncode == 2
    assert run_status(stack, "--watch", "-1").returncode == 2
    shown = run_status(stack, "--help")
    assert shown.returncode == 0
    for option in ("--since", "--json", "--watch", "--admin-url", "exit codes"):
        assert option in shown.stdout


def test_watch_refreshes_until_ctrl_c_and_exits_0(stack: TestStack) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.status", "--watch", "0.3"],
        env=status_env(stack),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    try:

        def refreshed_twice() -> bool:  # two screens, the second complete (it ends with the lag note)
            shown = "".join(lines)
            return shown.count(CLEAR_SCREEN) >= 2 and shown.count("note:") >= 2

        eventually(refreshed_twice, "two refreshes")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
        reader.join(timeout=15)
        out, err = "".join(lines), process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.count(CLEAR_SCREEN) >= 2, out[-2000:]
    assert "Invocations" in out and "Kafka" in out


LOAD = 10_000


@pytest.mark.bench
def test_status_answers_within_two_seconds_with_10000_invocations(offline_stack: TestStack) -> None:
    stack = offline_stack
    before = settled(stack)
    prefix = unique("load")
    sent = subprocess.run(
        [sys.executable, "-m", "producer", "--generate", str(LOAD), "--id-prefix", prefix, "-q"],
        env=status_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    started = time.monotonic()
    settled(stack, timeout=280)
    after = status_json(stack)
    processed = time.monotonic() - started
    assert after["invocations"]["completed_success"] - before["invocations"]["completed_success"] == LOAD
    assert after["invocations"]["completed_success"] >= LOAD

    timings = []
    for _ in range(3):
        began = time.monotonic()
        result = run_status(stack, "--json")
        timings.append(time.monotonic() - began)
        assert result.returncode == 0, result.stderr
    print(
        f"\n{LOAD} reports processed in {processed:.0f} s; "
        f"`status --json` over {after['invocations']['completed_success']} invocations took "
        + ", ".join(f"{t:.2f}" for t in timings)
        + " s (wall clock, including interpreter start)"
    )
    assert json.loads(result.stdout)["step_latency_ms"]["Extract metrics"]["count"] >= LOAD
    # The best of three runs: on a machine shared with other test sessions a single run can stall on
    # CPU (interpreter start alone went from 0.25 s to 1.1 s at load average 10 on 2 cores). A status
    # that aggregated client-side or skipped a LIMIT would take far longer than 2 s in every run.
    assert min(timings) < 2.0, timings
