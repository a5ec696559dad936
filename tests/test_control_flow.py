"""The handler's control flow against the real stack and the test LLM server: a cancel ends as a
`cancelled` dead letter, an unexpected exception inside a step uses up the step's attempts (then
`step_failed`, naming the exception), and a worker restarted with other settings while an
invocation waits between attempts finishes it with the settings it started with (the policy is
journaled by `Input message`), where the old handler's replay diverged from its journal."""

from __future__ import annotations

import os
import subprocess
import time

from devstack.components import restate_cli
from testllm import Correct, Hang, LLMServer, Status
from tests.harness import DLQ, TABLES, OutputRecord, TestStack, unique


def env(server: LLMServer, **extra: str) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": server.base_url,
        "LLM_TIMEOUT_SECONDS": "30",
        "STEP_MAX_ATTEMPTS": "3",
        "STEP_RETRY_INITIAL_INTERVAL": "2",
        "STEP_RETRY_MAX_INTERVAL": "2",
        **extra,
    }


def one_outcome(stack: TestStack, rid: str, timeout: float = 60) -> OutputRecord:
    [record] = stack.outputs.wait_for([rid], timeout=timeout)[rid]
    time.sleep(0.5)
    assert len(stack.outputs.records(rid)) == 1, f"{rid}: more than one outcome"
    return record


def wait_for_calls(server: LLMServer, rid: str, step: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(server.calls(rid, step)) < count:
        assert time.monotonic() < deadline, f"{rid}: {len(server.calls(rid, step))} of {count} {step} calls"
        time.sleep(0.05)


def test_a_cancel_ends_as_a_cancelled_dead_letter(stack: TestStack, llm_server: LLMServer) -> None:
    stack.use_worker_env(env(llm_server))
    rid = unique("cancel")
    llm_server.script(rid, "extract", [Hang(25)])  # the invocation waits inside `Extract metrics`
    stack.send({"id": rid, "message": "Revenue was $5M, up 3%."}, key=rid)
    stack.flush()
    wait_for_calls(llm_server, rid, "extract", 1)
    invocation = stack.invocation_of_key(rid)["id"]
    cancelled_at = time.monotonic()
    cancel = subprocess.run(
        [str(restate_cli()), "--yes", "invocations", "cancel", invocation],
        env={**os.environ, "RESTATE_ADMIN_URL": stack.cfg.admin_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    letter = one_outcome(stack, rid)
    seconds = time.monotonic() - cancelled_at
    value = letter.json()
    assert (letter.topic, value["reason"], value["failed_step"]) == (DLQ, "cancelled", "Extract metrics")
    assert seconds < 10, f"the cancel took {seconds:.1f} s to become a dead letter (the LLM call was not awaited)"
    assert len(llm_server.calls(rid)) == 1, "no step ran after the cancel"
    print(f"\n[measured] cancel -> dead letter in {seconds:.2f} s", flush=True)


# A usage block a proxy mangled: the provider's own code trips over it (a ValidationError).
BROKEN_USAGE = {"prompt_tokens": "lots", "completion_tokens": 1, "total_tokens": 1}


def test_an_unexpected_exception_in_a_step_uses_up_its_attempts(stack: TestStack, llm_server: LLMServer) -> None:
    stack.use_worker_env(env(llm_server))
    rid = unique("unexpected")
    llm_server.script(rid, "extract", [Correct(usage=BROKEN_USAGE)] * 3)
    stack.send({"id": rid, "message": "Revenue was $5M, up 3%."}, key=rid)
    stack.flush()
    letter = one_outcome(stack, rid)
    value = letter.json()
    assert (letter.topic, value["reason"], value["failed_step"]) == (DLQ, "step_failed", "Extract metrics")
    assert "unexpected ValidationError" in value["error"] and "(attempt 3 of 3)" in value["error"]
    assert len(llm_server.calls(rid, "extract")) == 3, "one call per attempt, then the dead letter"


def test_a_setting_changed_mid_retry_does_not_change_an_invocation_in_flight(
    stack: TestStack, llm_server: LLMServer
) -> None:
    stack.use_worker_env(env(llm_server))
    rid = unique("policy")
    # Two failures, then a correct answer: with 3 attempts (the policy it started with) a table.
    llm_server.script(rid, "extract", [Status(500), Status(500)])
    stack.send({"id": rid, "message": "Revenue was $5M, up 3%."}, key=rid)
    stack.flush()
    wait_for_calls(llm_server, rid, "extract", 1)
    # While it sleeps before attempt 2, the worker restarts allowing 1 attempt per step.
    stack.use_worker_env(env(llm_server, STEP_MAX_ATTEMPTS="1"))
    table = one_outcome(stack, rid)
    assert table.topic == TABLES, table.value[:300]
    extract = next(f for f in table.json()["ledger"]["steps"] if f["step"] == "Extract metrics")
    assert extract["attempts"] == 3
    assert len(llm_server.calls(rid, "extract")) == 3
    assert stack.invocation_of_key(rid)["status"] == "completed"
