"""LLM budgets (worker/budget) on the real stack, held to account at the test LLM server.

The server records when every call arrived and can answer 429 beyond a provider-style rate
limit; `peak()` is the most calls (and tokens) that arrived in any rolling window. The budgets
here use a 3 s window (LLM_BUDGET_WINDOW_SECONDS, which scales the per-minute settings) so that a
burst of a dozen reports exercises many windows in seconds.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.components import restate_cli
from ops.status.budgets import waiting_sql
from ops.status.models import TARGET
from testllm import Call, LLMServer, RateLimit
from tests.harness import OutputRecord, TestStack, unique
from tests.test_status import status_json

WINDOW = 3  # seconds
PER_MINUTE = 60 // WINDOW
MESSAGES = [
    "Revenue was $12.5M, up 22% from last year, with 340 employees.",
    "Uptime reached 99.95%, with 3 incidents and an MTTR of 18 minutes.",
    "Churn fell to 2.1% while 120 new customers signed; NPS stood at 41.",
    "Median latency was 230 ms, error rate 0.4% across 6 regions.",
]


def budget_env(server: LLMServer, model: str, requests_per_window: int, **extra: str) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test-budget",
        "OPENAI_BASE_URL": server.base_url,
        "LLM_MODEL": model,  # a model of its own: a fresh LLMBudget object for each test
        "LLM_TIMEOUT_SECONDS": "5",
        "LLM_BUDGET_WINDOW_SECONDS": str(WINDOW),
        "LLM_REQUESTS_PER_MINUTE": str(requests_per_window * PER_MINUTE),
        **extra,
    }


def send_reports(stack: TestStack, prefix: str, count: int) -> list[str]:
    ids = [unique(prefix) for _ in range(count)]
    for i, report_id in enumerate(ids):
        stack.send({"id": report_id, "message": MESSAGES[i % len(MESSAGES)]}, key=report_id)
    stack.flush()
    return ids


def outcomes(stack: TestStack, ids: list[str], timeout: float = 120) -> list[OutputRecord]:
    found = stack.outputs.wait_for(ids, timeout=timeout)
    assert all(len(records) == 1 for records in found.values()), {k: len(v) for k, v in found.items()}
    return [records[0] for records in found.values()]


def ours(server: LLMServer, ids: list[str]) -> list[Call]:
    wanted = set(ids)
    return [c for c in server.calls() if c.report_id in wanted]


def peak_of(calls: list[Call]) -> tuple[int, int]:
    """The most calls and charged tokens that arrived within any rolling window."""
    from testllm import peak

    found = peak(((c.received_at, c.prompt_tokens + c.completion_tokens) for c in calls), WINDOW)
    return found.requests, found.tokens


def budget_state(status: dict[str, Any], model: str) -> dict[str, Any]:
    (found,) = [b for b in status["budgets"] if b["key"].endswith(f"|{model}")]
    return found


def poll(what: str, predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while (value := predicate()) in (None, False, 0):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


def waiting_for_budget(stack: TestStack) -> int:
    return int(stack.query(waiting_sql(TARGET))[0]["n"])


@pytest.fixture
def budgeted(stack: TestStack, llm_server: LLMServer) -> Iterator[TestStack]:
    """The stack; afterwards the test server has no rate limit or latency and the worker is back offline."""
    llm_server.reset()
    yield stack
    llm_server.reset()
    llm_server.latency = 0.0
    stack.stack.up()
    stack.use_worker_env()


def test_the_budget_holds_under_a_burst_and_the_server_never_refuses(
    budgeted: TestStack, llm_server: LLMServer
) -> None:
    stack, model = budgeted, f"budget-{uuid.uuid4().hex[:6]}"
    requests, tokens = 6, 40_000  # per 3 s, for the budget and for the server alike
    llm_server.latency = 0.1
    llm_server.limit_rate(RateLimit(requests=requests, tokens=tokens, window=WINDOW))
    stack.use_worker_env(
        budget_env(
            llm_server, model, requests,
            LLM_TOKENS_PER_MINUTE=str(tokens * PER_MINUTE), LLM_MAX_TOKENS="256",
        )
    )  # fmt: skip
    ids = send_reports(stack, "budget-burst", 12)  # 36 calls: 18 windows' worth at most 6 a window
    # While the burst is held back, status counts the invocations waiting and shows the budget.
    poll("invocations waiting for budget", lambda: waiting_for_budget(stack))
    seen = budget_state(status_json(stack), model)
    assert 0 < seen["requests_in_window"] <= requests

    records = outcomes(stack, ids)
    assert {r.topic for r in records} == {"tables"}
    calls = ours(llm_server, ids)
    assert len(calls) == 36
    assert not [c for c in calls if c.rate_limited]
    most_calls, most_tokens = peak_of(calls)
    assert most_calls <= requests, most_calls
    assert most_tokens <= tokens
    # The budget, not the server, held the burst back: steps waited, and that is in their ledger.
    waits = [step["budget_wait_s"] for r in records for step in r.json()["ledger"]["steps"]]
    assert sum(1 for w in waits if w > 0) >= 12
    assert all(step["throttled"] == 0 for r in records for step in r.json()["ledger"]["steps"])
    # Every request carried max_tokens, the completion bound the token budget reserved.
    assert {c.body.get("max_tokens") for c in calls} == {256}
    # Waiting was a durable, named sleep, and each call was claimed once before it was sent.
    journal = stack.journal(stack.invocation_of_key(ids[-1])["id"])
    names = [e.get("name") for e in journal]
    assert "Wait for LLM budget" in names
    assert names.count("Claim LLM budget") == 3


def test_429s_lower_the_budget_and_use_up_no_attempt(budgeted: TestStack, llm_server: LLMServer) -> None:
    stack, model = budgeted, f"budget-{uuid.uuid4().hex[:6]}"
    # The provider allows half of what we were told: 429s happen until the budget adapts.
    llm_server.limit_rate(RateLimit(requests=3, window=WINDOW))
    stack.use_worker_env(budget_env(llm_server, model, requests_per_window=6, STEP_MAX_ATTEMPTS="1"))
    ids = send_reports(stack, "budget-429", 6)
    records = outcomes(stack, ids)
    # With one attempt per step, a 429 that used up an attempt would have dead-lettered its report.
    assert {r.topic for r in records} == {"tables"}, [r.json().get("error") for r in records]
    refused = [c for c in ours(llm_server, ids) if c.rate_limited]
    assert refused, "the server never answered 429: nothing was tested"
    # Every 429 is in the ledger of the step it hit, and in status.
    throttled = sum(step["throttled"] for r in records for step in r.json()["ledger"]["steps"])
    assert throttled == len(refused)
    budget = budget_state(status_json(stack), model)
    assert budget["throttled"] == len(refused)
    assert budget["last_throttled_at"] is not None
    # The server advertised its limit (x-ratelimit-limit-requests: 3): the budget went down to it.
    assert budget["share"] <= 0.6


def test_a_worker_killed_while_calls_wait_for_budget_loses_nothing(budgeted: TestStack, llm_server: LLMServer) -> None:
    from tests.test_recovery import kill

    stack, model = budgeted, f"budget-{uuid.uuid4().hex[:6]}"
    requests = 4
    llm_server.latency = 1.0  # calls in flight at the kill
    llm_server.limit_rate(RateLimit(requests=requests, window=WINDOW))
    # The grants of the calls the kill interrupts count until their send deadline (they may have been sent
    # until then): 5 s instead of 30 keeps the test short.
    stack.use_worker_env(budget_env(llm_server, model, requests, LLM_BUDGET_SEND_WITHIN_SECONDS="5"))
    ids = send_reports(stack, "budget-kill", 8)
    poll("invocations waiting for budget", lambda: waiting_for_budget(stack))
    poll("a call in flight", lambda: any(time.time() - c.received_at < 0.5 for c in ours(llm_server, ids)))
    killed_at = kill(stack, "worker")
    stack.stack.up()

    records = outcomes(stack, ids, timeout=180)
    assert {r.topic for r in records} == {"tables"}
    calls = ours(llm_server, ids)
    # Across the kill, the calls in flight at it and their repeats included, no window held more than the
    # budget, and the provider never had to refuse one.
    assert peak_of(calls)[0] <= requests
    assert not [c for c in calls if c.rate_limited]
    # A call in flight at the kill was sent again after the restart under a new grant: the grant of the
    # interrupted attempt went back as abandoned (it may have been sent), it was not reused.
    assert [c for c in calls if c.received_at > killed_at]
    budget = budget_state(status_json(stack), model)
    assert budget["abandoned"] >= 1, budget
    assert budget["expired"] == 0


def test_a_call_cancelled_while_it_sleeps_on_a_grant_gives_the_capacity_back(
    budgeted: TestStack, llm_server: LLMServer
) -> None:
    from tests.test_control_flow import one_outcome

    stack, model = budgeted, f"budget-{uuid.uuid4().hex[:6]}"
    # One call per 10 s window: the report's second call is granted for when the first one's window
    # ends, and sleeps until then.
    stack.use_worker_env(
        budget_env(
            llm_server, model, 1,
            LLM_BUDGET_WINDOW_SECONDS="10", LLM_REQUESTS_PER_MINUTE="6", LLM_BUDGET_SEND_WITHIN_SECONDS="5",
        )
    )  # fmt: skip
    (rid,) = send_reports(stack, "budget-cancel", 1)
    poll("a call granted for later", lambda: budget_state(status_json(stack), model)["granted_for_later"])
    invocation = stack.invocation_of_key(rid)["id"]
    cancel = subprocess.run(
        [str(restate_cli()), "--yes", "invocations", "cancel", invocation],
        env={**os.environ, "RESTATE_ADMIN_URL": stack.cfg.admin_url},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    letter = one_outcome(stack, rid)
    assert letter.json()["reason"] == "cancelled"

    # The grant went back unsent: nothing of it occupies the budget (unreturned, it would count until its
    # send deadline + call timeout + window, 20 s from now).
    def held() -> int:
        budget = budget_state(status_json(stack), model)
        return int(budget["in_flight"] + budget["granted_for_later"])

    poll("the grant returned", lambda: held() == 0, timeout=5)
    assert len(ours(llm_server, [rid])) == 1  # only the first call was made
