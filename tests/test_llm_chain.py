"""The OpenAI provider through the whole chain: real Kafka, real restate-server,
the real worker process, and a real HTTP LLM server that counts every call.

Each test scripts the LLM server for one report id and asserts both what the
server received (calls per step) and what landed on `tables` or `reports.dlq`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testllm import Answer, Hang, LLMServer, Malformed, Status
from tests.conftest import TEST_API_KEY
from tests.harness import OutputRecord, TestStack, unique
from tests.test_status import run_status, status_json

REPORT = "Quarterly revenue was $12.5M, up 22% from last year, with 340 employees."
STEPS = ("extract", "sort", "format")


def _run(stack: TestStack, prefix: str, message: str = REPORT) -> tuple[str, OutputRecord]:
    report_id = unique(prefix)
    return report_id, _send(stack, report_id, message)


def _send(stack: TestStack, report_id: str, message: str = REPORT) -> OutputRecord:
    stack.send({"id": report_id, "message": message}, key=report_id)
    stack.flush()
    records = stack.outputs.wait_for([report_id], timeout=60)[report_id]
    assert len(records) == 1, [r.json() for r in records]
    return records[0]


def _calls(server: LLMServer, report_id: str) -> dict[str, int]:
    return {step: len(server.calls(report_id, step)) for step in STEPS}


def _assert_no_secret(record: OutputRecord) -> None:
    assert TEST_API_KEY.encode() not in record.value
    assert b"SECRET" not in record.value


def test_normal_answers_for_all_steps_carry_the_ledger(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id, record = _run(openai_stack, "llm-ok")
    assert record.topic == "tables"
    assert _calls(llm_server, report_id) == {"extract": 1, "sort": 1, "format": 1}

    value = record.json()
    assert [m["value"] for m in value["metrics"]] == [12_500_000, 340, 22]
    ledger = value["ledger"]
    for fact, step in zip(ledger["steps"], STEPS, strict=True):
        (call,) = llm_server.successful_calls(report_id, step)
        assert fact["provider"] == "openai"
        assert fact["model"] == "test-model"
        assert fact["response_id"] == call.response_id
        assert fact["attempts"] == 1
        assert fact["prompt_tokens"] > 0 and fact["completion_tokens"] > 0
        assert fact["cost_usd"] > 0
    assert ledger["total_tokens"] == ledger["prompt_tokens"] + ledger["completion_tokens"] > 0
    assert ledger["cost_usd"] == pytest.approx(sum(f["cost_usd"] for f in ledger["steps"]), rel=1e-6)
    # The report text reached the model as delimited data, with structured output requested.
    extract = llm_server.calls(report_id, "extract")[0]
    assert extract.response_format == "json_schema"
    assert "<report>" in extract.prompt and REPORT in extract.prompt
    _assert_no_secret(record)
    # No budget configured: nothing asked one (no call to LLMBudget, no claim), and no max_tokens sent.
    journal = openai_stack.journal(value["invocation_id"])
    assert not [e for e in journal if e["entry_type"] in ("Command: Call", "Command: OneWayCall")]
    assert "Claim LLM budget" not in [e.get("name") for e in journal]
    assert "max_tokens" not in extract.body


def test_500_then_success(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-500")
    llm_server.script(report_id, "extract", [Status(500)])
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    assert _calls(llm_server, report_id) == {"extract": 2, "sort": 1, "format": 1}
    assert record.json()["ledger"]["steps"][0]["attempts"] == 2


def test_429_waits_for_retry_after(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-429")
    llm_server.script(report_id, "sort", [Status(429, headers={"Retry-After": "2"})])
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    first, second = llm_server.calls(report_id, "sort")
    # The step's own backoff starts at 0.2 s here: a 2 s gap means Retry-After was honoured.
    assert second.received_at - first.received_at >= 1.9
    assert _calls(llm_server, report_id) == {"extract": 1, "sort": 2, "format": 1}


def test_a_hanging_answer_times_out_and_is_retried(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-hang")
    llm_server.script(report_id, "format", [Hang(8)])  # the worker's timeout is 2 s
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    first, second = llm_server.calls(report_id, "format")
    assert 1.5 <= second.received_at - first.received_at < 6
    assert len(llm_server.successful_calls(report_id, "format")) == 1


def test_malformed_json_then_valid(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-malformed")
    llm_server.script(report_id, "extract", [Malformed()])
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    first, second = llm_server.calls(report_id, "extract")
    assert "<validation_error>" not in first.prompt
    assert "<validation_error>" in second.prompt  # the repair prompt quotes what was wrong


def test_a_hallucinated_number_is_caught_and_repaired(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-hallucinated")
    invented = {"metrics": [{"name": "Revenue", "quote": "$99M", "unit": "USD"}]}
    llm_server.script(report_id, "extract", [Answer(invented)])
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    values = [m["value"] for m in record.json()["metrics"]]
    assert 99_000_000 not in values
    repair = llm_server.calls(report_id, "extract")[1]
    assert "99" in repair.prompt.split("<validation_error>", 1)[1]
    assert _calls(llm_server, report_id)["extract"] == 2


def test_an_unsorted_answer_is_caught_and_repaired(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-unsorted")
    # The metrics reach the sort step as A = $12.5M, B = 22%, C = 340: this is ascending.
    llm_server.script(report_id, "sort", [Answer({"order": ["B", "C", "A"]})])
    record = _send(openai_stack, report_id)
    values = [m["value"] for m in record.json()["metrics"]]
    assert values == sorted(values, reverse=True)
    # Code sorts exactly: a wrong order moves on to code at once instead of asking the model again.
    assert _calls(llm_server, report_id) == {"extract": 1, "sort": 1, "format": 1}
    sort = record.json()["ledger"]["steps"][1]
    assert sort["link"] == "code" and "not sorted" in sort["passed_over"][0]["error"]


def test_persistent_500_dead_letters_after_exactly_max_attempts(openai_stack: TestStack, llm_server: LLMServer) -> None:
    # Extract has no code fallback by default: its model is the last link.
    report_id = unique("llm-down")
    llm_server.script(report_id, "extract", [Status(500)] * 10)
    record = _send(openai_stack, report_id)
    assert record.topic == "reports.dlq"
    letter = record.json()
    assert letter["reason"] == "step_failed"
    assert letter["failed_step"] == "Extract metrics"
    assert "500" in letter["error"] and "attempt 3 of 3" in letter["error"]
    assert letter["completed"]["extract"] is None
    assert _calls(llm_server, report_id) == {"extract": 3, "sort": 0, "format": 0}
    _assert_no_secret(record)


def test_a_sort_the_model_keeps_failing_falls_back_to_code(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-sort-code")
    llm_server.script(report_id, "sort", [Status(500), Status(503), Status(500)])
    record = _send(openai_stack, report_id)
    assert record.topic == "tables"
    value = record.json()
    assert [m["value"] for m in value["metrics"]] == [12_500_000, 340, 22]
    assert _calls(llm_server, report_id) == {"extract": 1, "sort": 3, "format": 1}
    extract, sort, fmt = value["ledger"]["steps"]
    assert (extract["link"], extract["provider"], extract["model"]) == ("primary", "openai", "test-model")
    assert (sort["link"], sort["provider"], sort["model"], sort["response_id"]) == ("code", "offline", None, None)
    [passed] = sort["passed_over"]
    assert (passed["link"], passed["provider"], passed["model"], passed["attempts"]) == (
        "primary", "openai", "test-model", 3,
    )  # fmt: skip
    assert "500" in passed["error"]
    assert fmt["link"] == "primary" and fmt["passed_over"] == []
    # Every attempt of every link is journaled under the step's name, and the move to code is marked.
    journal = openai_stack.journal(value["invocation_id"])
    runs = [e["name"] for e in journal if e["entry_type"] == "Command: Run"]
    assert runs == ["Input message", "Extract metrics"] + ["Sort metrics"] * 4 + ["Format as table", "Publish table"]
    sleeps = [e["name"] for e in journal if e["entry_type"] == "Command: Sleep"]
    assert sleeps == ["Sort metrics: retry", "Sort metrics: retry", "Sort metrics: fallback to code"]
    # report-status counts the fallbacks per step from those markers.
    status = status_json(openai_stack)
    assert status["fallbacks"]["Sort metrics"]["code"] >= 1, status["fallbacks"]
    assert "Sort metrics" in run_status(openai_stack, "--since", "7d").stdout.split("Fallbacks, last")[1]


def test_401_dead_letters_after_exactly_one_call(openai_stack: TestStack, llm_server: LLMServer) -> None:
    report_id = unique("llm-401")
    llm_server.script(report_id, "extract", [Status(401)] * 5)
    record = _send(openai_stack, report_id)
    assert record.topic == "reports.dlq"
    letter = record.json()
    assert (letter["reason"], letter["failed_step"]) == ("step_failed", "Extract metrics")
    assert "401" in letter["error"]
    assert _calls(llm_server, report_id) == {"extract": 1, "sort": 0, "format": 0}
    _assert_no_secret(record)


class ResettingEndpoint:
    """An endpoint that is 'down': it accepts TCP connections and closes them at once, counting each."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def down_endpoint(stack: TestStack) -> Iterator[ResettingEndpoint]:
    endpoint = ResettingEndpoint()
    yield endpoint
    endpoint.close()


def test_an_endpoint_that_is_down_dead_letters_every_report_after_three_calls(
    openai_stack: TestStack, down_endpoint: ResettingEndpoint
) -> None:
    openai_stack.use_worker_env(
        {**openai_stack.worker_env, "OPENAI_BASE_URL": f"http://127.0.0.1:{down_endpoint.port}/v1"}
    )
    ids = [unique("llm-endpoint-down") for _ in range(3)]
    for report_id in ids:
        openai_stack.send({"id": report_id, "message": REPORT}, key=report_id)
    openai_stack.flush()
    outputs = openai_stack.outputs.wait_for(ids, timeout=60)
    for report_id in ids:
        (record,) = outputs[report_id]
        letter: dict[str, Any] = record.json()
        assert record.topic == "reports.dlq"
        assert (letter["reason"], letter["failed_step"]) == ("step_failed", "Extract metrics")
        _assert_no_secret(record)
    assert down_endpoint.connections == 3 * len(ids)


def test_worker_log_names_provider_and_model_but_never_the_key(openai_stack: TestStack) -> None:
    log = openai_stack.stack.worker.process.log_file.read_text()
    assert "provider=openai model=test-model" in log
    assert TEST_API_KEY not in log
    # One line per report, not one per LLM call from the HTTP client (the tests above made calls).
    assert "outcome=table" in log and "HTTP Request:" not in log


def test_an_attempt_cut_short_by_a_crash_does_not_use_up_the_step_budget(
    openai_stack: TestStack, llm_server: LLMServer
) -> None:
    # Budget 2: the first attempt fails for real (500), the second hangs and the worker is
    # killed meanwhile. The interrupted attempt left nothing in the journal, so after the
    # restart attempt 2 runs again and succeeds: a table, not a dead letter.
    openai_stack.use_worker_env({**openai_stack.worker_env, "STEP_MAX_ATTEMPTS": "2", "LLM_TIMEOUT_SECONDS": "30"})
    report_id = unique("llm-crash-budget")
    llm_server.script(report_id, "extract", [Status(500), Hang(60)])
    openai_stack.send({"id": report_id, "message": REPORT}, key=report_id)
    openai_stack.flush()
    deadline = time.monotonic() + 30
    while len(llm_server.calls(report_id, "extract")) < 2:
        assert time.monotonic() < deadline, "the second attempt never reached the LLM server"
        time.sleep(0.05)
    openai_stack.stack.worker.process.kill()
    openai_stack.stack.up()

    (record,) = openai_stack.outputs.wait_for([report_id], timeout=90)[report_id]
    assert record.topic == "tables", record.json()
    assert record.json()["ledger"]["steps"][0]["attempts"] == 2
    assert len(llm_server.calls(report_id, "extract")) == 3  # 500, the hung call cut off by the kill, success
    # Every attempt is in the journal: the failed one and the successful one (the cut-off one left nothing).
    journal = openai_stack.journal(record.json()["invocation_id"])
    runs = [e["name"] for e in journal if e["entry_type"] == "Command: Run"]
    assert runs == [
        "Input message",
        "Extract metrics",
        "Extract metrics",
        "Sort metrics",
        "Format as table",
        "Publish table",
    ]


def test_a_fallback_model_takes_over_when_the_primary_is_refused(
    openai_stack: TestStack, llm_server: LLMServer
) -> None:
    openai_stack.use_worker_env({**openai_stack.worker_env, "LLM_FALLBACK_MODEL": "fallback-model"})
    report_id = unique("llm-fallback-model")
    llm_server.script(report_id, "extract", [Status(401)])  # permanent for the primary: no retry, next link
    record = _send(openai_stack, report_id)
    assert record.topic == "tables", record.json()
    first, second = llm_server.calls(report_id, "extract")
    assert (first.model, first.status, second.model, second.status) == ("test-model", 401, "fallback-model", 200)
    extract = record.json()["ledger"]["steps"][0]
    assert (extract["link"], extract["provider"], extract["model"]) == ("fallback", "openai", "fallback-model")
    assert extract["response_id"] == second.response_id
    [passed] = extract["passed_over"]
    assert (passed["link"], passed["model"], passed["attempts"]) == ("primary", "test-model", 1)
    assert "401" in passed["error"]
    _assert_no_secret(record)
