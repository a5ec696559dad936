"""The real local model (Qwen2.5-Coder-0.5B-Instruct on llama.cpp's server, started by the stack)
through the real chain: a handful of the project's labelled reports, each must end as exactly one
outcome; tables hold only values the report states, sorted, with a ledger entry per step naming
what produced it. Quality over the whole corpus is a benchmark (`make bench`), not a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evaluation import load_corpus
from tests.harness import TestStack, unique
from worker.numbers import is_grounded

# Short reports of several shapes (money, percentages and counts; German decimal commas) and one with
# no metric at all (a date, a time and a room number). One attempt per link keeps the test short:
# a call takes seconds on 2 cores, a minute when the machine is busy.
REPORT_IDS = ("fin-q2", "de-lager", "retro-room")
MODEL = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture
def local_stack(stack: TestStack) -> Iterator[TestStack]:
    stack.use_worker_env({"LLM_PROVIDER": "local", "STEP_MAX_ATTEMPTS": "1"})
    yield stack
    stack.use_worker_env()
    stack.stack.llm.process.stop()  # ~600 MB and a spinning thread pool: not needed by the other tests


def test_labelled_reports_through_the_real_local_model(local_stack: TestStack) -> None:
    reports = {r.id: r for r in load_corpus() if r.id in REPORT_IDS}
    assert sorted(reports) == sorted(REPORT_IDS)
    ids = {unique(f"local-{rid}"): reports[rid] for rid in REPORT_IDS}
    for report_id, labelled in ids.items():
        local_stack.send({"id": report_id, "message": labelled.message}, key=report_id)
    local_stack.flush()
    outputs = local_stack.outputs.wait_for(ids, timeout=600)

    tables = 0
    for report_id, labelled in ids.items():
        (record,) = outputs[report_id]  # exactly one outcome
        value = record.json()
        if record.topic == "reports.dlq":
            # Only a report without metrics may end as a dead letter here.
            assert value["reason"] == "no_metrics", value
            continue
        tables += 1
        values = [m["value"] for m in value["metrics"]]
        assert values, value
        assert all(is_grounded(v, labelled.message) for v in values), (labelled.id, value["metrics"])
        assert values == sorted(values, reverse=True), (labelled.id, values)
        extract, sort, fmt = value["ledger"]["steps"]
        assert [f["step"] for f in (extract, sort, fmt)] == ["Extract metrics", "Sort metrics", "Format as table"]
        # EXTRACT_FALLBACK is off: the model extracted every published metric.
        assert (extract["link"], extract["provider"], extract["model"]) == ("primary", "local", MODEL), extract
        for fact in (sort, fmt):
            if fact["link"] == "code":  # the model failed its attempts: the ledger says so, and why
                assert fact["provider"] == "offline" and fact["passed_over"][0]["model"] == MODEL, fact
            else:
                assert (fact["link"], fact["provider"], fact["model"]) == ("primary", "local", MODEL), fact
                assert fact["response_id"].startswith("chatcmpl-")
    assert tables >= 2, "the reports with metrics must end as tables"
