"""`report-status` whatever Restate holds: paused invocations of hostile records (ids with terminal
escapes, a lone surrogate, 2 KB of id), one of them killed. It answers, exits 0, and prints every
id escaped; its JSON keeps the ids as they are."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import TestStack, unique
from tests.test_status import eventually, publish_fails_then_pauses, restate, run_status, status_json

ESCAPES = "\x1b[2J\x1b[31m"  # clear the screen, then red


def paused_ids(stack: TestStack) -> set[str]:
    rows = stack.query("SELECT id FROM sys_invocation WHERE target = 'ReportChain/process' AND status = 'paused'")
    return {str(r["id"]) for r in rows}


@pytest.fixture
def nothing_publishes(stack: TestStack) -> Iterator[TestStack]:
    """Publishing fails (neither output topic exists), and invocations pause after one attempt."""
    missing = unique("no-such-topic")
    before = paused_ids(stack)
    stack.use_worker_env({**publish_fails_then_pauses(missing, attempts=1), "DEAD_LETTER_TOPIC": missing})
    yield stack
    stack.use_worker_env()
    for invocation in paused_ids(stack) - before:
        httpx.patch(f"{stack.cfg.admin_url}/invocations/{invocation}/kill", timeout=10)


def test_status_answers_for_paused_invocations_of_hostile_records(nothing_publishes: TestStack) -> None:
    stack = nothing_publishes
    tag = unique("odd")
    escaped_id = f"{tag}{ESCAPES}\u202eevil"
    keys = {"escaped": f"{tag}-escaped", "surrogate": f"{tag}-surrogate", "long": f"{tag}-long"}
    # A table, then two dead letters, that cannot be published: all three pause.
    stack.send({"id": escaped_id, "message": "Revenue was $5M, up 3%."}, key=keys["escaped"])
    stack.send(f'{{"id": "{tag}-\\ud800", "message": "Revenue grew"}}'.encode(), key=keys["surrogate"])
    stack.send(json.dumps({"id": tag + "x" * 2000, "message": "Revenue grew 3%"}).encode(), key=keys["long"])
    stack.flush()
    invocations = {name: stack.invocation_of_key(key)["id"] for name, key in keys.items()}
    for name, invocation in invocations.items():
        eventually(lambda i=invocation: i in paused_ids(stack), f"the {name} record's invocation pausing", 90)
    assert restate(stack, "invocations", "kill", invocations["long"], "--yes").returncode == 0

    status = status_json(stack)
    shown = {p["id"]: p for p in status["paused"]}
    assert invocations["long"] not in shown
    assert shown[invocations["escaped"]]["report_id"] == escaped_id  # JSON keeps the id as it is
    assert shown[invocations["surrogate"]]["report_id"].startswith("reports/")  # named by its coordinates
    assert shown[invocations["surrogate"]]["step"] == "Publish dead letter"

    human = run_status(stack, "--since", "7d", "--limit", "1000")
    assert human.returncode == 0, human.stderr
    assert "\x1b" not in human.stdout and "\u202e" not in human.stdout
    assert f"{tag}\\x1b[2J\\x1b[31m\\u202eevil" in human.stdout
