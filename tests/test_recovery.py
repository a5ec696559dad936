"""Crash recovery through real processes: SIGKILL the worker, restate-server or the Kafka
broker while reports are in flight, restart it, and check what docs/design.md promises
("Guarantees"): every report ends as exactly one outcome (3), a step whose result was
journaled never runs again (2, checked against the LLM server's call log and Restate's
journal), and the only duplicate is a byte-identical publish (4).

The LLM server records a call as successful when it sends the answer, so a call that was
in flight when the worker died counts as successful without ever reaching the journal.
The checks therefore say it precisely: per report and step, the call whose response id is
journaled is the last call of that step, and any other successful call was received
before the kill and never journaled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from testllm import Behaviour, Call, Hang, LLMServer, Malformed, Status
from tests.harness import DLQ, REPORTS, TABLES, OutputRecord, TestStack, unique
from worker import faults
from worker.models import Delivery, Ledger, Published, Source, TableRecord
from worker.settings import Settings, settings_from

STEPS = {"extract": "Extract metrics", "sort": "Sort metrics", "format": "Format as table"}
TEMPLATES = [
    "Revenue was ${a}.{b}M, up {c}%, and we hired {d} engineers.",
    "Uptime reached 99.{b}{c}%, with {a} incidents and an MTTR of {d} minutes.",
    "Churn fell to {a}.{b}% while {d} new customers signed; NPS stood at {c}.",
    "Median latency was {d} ms, error rate {a}.{b}% across {c} regions.",
]


def message(i: int) -> str:
    rng = random.Random(i)
    return TEMPLATES[i % len(TEMPLATES)].format(
        a=rng.randint(2, 9), b=rng.randint(1, 9), c=rng.randint(11, 89), d=rng.randint(101, 990)
    )


def openai_env(server: LLMServer, **extra: str) -> dict[str, str]:
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": server.base_url,
        "LLM_TIMEOUT_SECONDS": "20",
        **extra,
    }


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until `predicate()` held; fails with `what` after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(interval)
    return time.monotonic() - started


def kill(stack: TestStack, component: str) -> float:
    """SIGKILL one component and wait until it is gone; returns the wall-clock time of the kill."""
    process = stack.stack.component(component).process
    assert process.is_running(), f"{component} is not running before the kill"
    at = time.time()
    process.kill()
    wait_until(f"{component} to die", lambda: not process.is_running(), timeout=15)
    return at


def journaled_response_ids(
    stack: TestStack, invocation_id: str | None = None, since: float | None = None
) -> dict[str, str]:
    """response id -> step name of every LLM step result in Restate's journal (one invocation, or all;
    only those journaled since `since`, a time.time(), when given: the session's whole journal is slow to read)."""
    where = "entry_type = 'Notification: Run'" + (f" AND id = '{invocation_id}'" if invocation_id else "")
    if since is not None:
        where += f" AND CAST(appended_at AS BIGINT) >= {int(since * 1000)}"
    found = {}
    for row in stack.query(f"SELECT entry_json FROM sys_journal WHERE {where}"):
        result = json.loads(row["entry_json"])["Notification"]["Completion"]["Run"]["result"]
        if "Success" not in result:
            continue
        value = json.loads(bytes(result["Success"]))
        fact = value.get("fact") if isinstance(value, dict) else None
        if fact and fact.get("response_id"):
            found[fact["response_id"]] = fact["step"]
    return found


def running_invocations(stack: TestStack) -> list[str]:
    rows = stack.query("SELECT id FROM sys_invocation WHERE target = 'ReportChain/process' AND status = 'running'")
    return [str(r["id"]) for r in rows]


def ledger_ids(table: dict[str, Any]) -> dict[str, str]:
    """Step name -> the response id the published table's ledger carries."""
    return {fact["step"]: fact["response_id"] for fact in table["ledger"]["steps"]}


@dataclass
class Outcome:
    """What one report ended as, after a crash."""

    table: dict[str, Any]
    duplicates: int
    lost_calls: int
    """Successful LLM calls that never reached the journal (in flight at the kill)."""


def check_one_table(stack: TestStack, report_id: str) -> tuple[dict[str, Any], int]:
    """Exactly one logical outcome, a table; a duplicate must be byte-identical. Returns (table, duplicates)."""
    records = stack.outputs.records(report_id)
    assert records, f"{report_id}: no output"
    assert {r.topic for r in records} == {TABLES}, f"{report_id}: {[(r.topic, r.value[:200]) for r in records]}"
    assert len({r.value for r in records}) == 1, f"{report_id}: {len(records)} tables that differ"
    return records[0].json(), len(records) - 1


def check_steps_ran_once(
    stack: TestStack, llm: LLMServer, report_id: str, lost_before: float, journaled_before: Collection[str]
) -> Outcome:
    """docs/design.md, "Guarantees" 2, for one finished report, from the LLM server's log, the ledger and the journal.

    `journaled_before`: response ids known to be in the journal before the crash; `lost_before`:
    the latest moment a call lost in the crash may have started (the worker's death, or for a
    Restate crash the restart: the worker lives on and may start the step it was about to run).
    """
    table, duplicates = check_one_table(stack, report_id)
    ledger = ledger_ids(table)
    # The journal holds exactly the response ids the table carries.
    assert journaled_response_ids(stack, table["invocation_id"]) == {v: k for k, v in ledger.items()}
    lost = 0
    for short, name in STEPS.items():
        calls = llm.calls(report_id, short)
        journaled = [c for c in calls if c.response_id == ledger[name]]
        assert len(journaled) == 1 and journaled[0].successful, f"{report_id} {name}: {ledger[name]} not served"
        kept = journaled[0]
        after = [c.seq for c in calls if c.seq > kept.seq]
        assert not after, f"{report_id} {name} ran again after it completed: calls {after} after {kept.seq}"
        others = [c for c in calls if c.successful and c is not kept]
        for other in others:
            # Only a call cut off by the crash may have been answered without being journaled.
            assert other.received_at <= lost_before, f"{report_id} {name}: call {other.seq} after the crash not kept"
        if kept.response_id in journaled_before:
            assert not others, f"{report_id} {name} was journaled before the crash yet called again"
        lost += len(others)
    return Outcome(table, duplicates, lost)


def run_results(stack: TestStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = stack.cfg.kafka_bootstrap
    return subprocess.run(
        [sys.executable, "-m", "ops.results", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def warm_up(stack: TestStack) -> None:
    """One report end to end, so the worker's Kafka producer exists before the timed part starts."""
    rid = unique("warm-up")
    stack.send({"id": rid, "message": "Warm-up: 3 checks passed."}, key=rid)
    stack.flush()
    stack.outputs.wait_for([rid], timeout=60)


def send_staggered(stack: TestStack, run: str, count: int, interval: float) -> list[str]:
    """Send `count` reports `interval` seconds apart, so at any moment they are spread over all steps."""
    ids = []
    for i in range(count):
        rid = f"{run}-{i:02d}"
        stack.send({"id": rid, "message": message(i)}, key=rid)
        stack.producer.flush(5)
        ids.append(rid)
        time.sleep(interval)
    stack.flush()
    return ids


def tables_among(stack: TestStack, ids: list[str]) -> int:
    return sum(bool(stack.outputs.records(rid)) for rid in ids)


def measured(label: str, **numbers: object) -> None:
    print(f"\n[measured] {label}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMServer]:
    server = LLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def recovery(stack: TestStack, llm: LLMServer) -> Iterator[TestStack]:
    """The stack; afterwards everything runs again and the worker is back on the offline provider."""
    llm.latency = 0.0
    yield stack
    llm.latency = 0.0
    stack.stack.up()
    stack.use_worker_env()


# --- Kill the worker ---------------------------------------------------------------------------


def test_worker_sigkill_mid_flight_resumes_without_redoing_completed_steps(recovery: TestStack, llm: LLMServer) -> None:
    stack = recovery
    stack.use_worker_env(openai_env(llm))
    llm.latency = 0.3
    warm_up(stack)
    run = unique("wkill")
    ids = send_staggered(stack, run, 20, interval=0.05)

    def ours() -> list[Call]:
        return [c for c in llm.successful_calls() if c.report_id.startswith(run)]

    # Half of the 60 LLM calls answered: reports are spread over the three steps.
    wait_until("LLM steps under way", lambda: len(ours()) >= 30, timeout=90)
    killed_at = kill(stack, "worker")
    # Once Restate has seen every stream to the dead worker end, all it received is in the journal.
    wait_until("Restate to notice the worker is gone", lambda: not running_invocations(stack), timeout=30)
    finished_before = [rid for rid in ids if stack.outputs.records(rid)]
    journaled_at_kill = {r: s for r, s in journaled_response_ids(stack).items() if r in {c.response_id for c in ours()}}
    assert len(finished_before) < len(ids), "every report finished before the kill: nothing was in flight"
    assert journaled_at_kill, "no step was journaled before the kill"

    started = time.monotonic()
    stack.stack.up()
    stack.outputs.wait_for(ids, timeout=120)
    recovered = time.monotonic() - started

    outcomes = [check_steps_ran_once(stack, llm, rid, killed_at, journaled_at_kill) for rid in ids]
    for rid in ids:
        for short in STEPS:
            assert 1 <= len(llm.successful_calls(rid, short)) <= 2, (rid, short)
    # Every journaled result was reused, not recomputed.
    kept = {response_id for o in outcomes for response_id in ledger_ids(o.table).values()}
    assert set(journaled_at_kill) <= kept
    measured(
        "worker SIGKILL",
        reports=len(ids),
        in_flight=len(ids) - len(finished_before),
        steps_journaled_before_kill=len(journaled_at_kill),
        llm_calls_lost_in_crash=sum(o.lost_calls for o in outcomes),
        duplicates=sum(o.duplicates for o in outcomes),
        recovery_s=round(recovered, 1),
    )


def test_worker_killed_while_sort_waits_on_the_llm_never_repeats_extract(recovery: TestStack, llm: LLMServer) -> None:
    """The seed's core guarantee: step 1 succeeded, step 2 hangs, the worker dies; step 1 is not paid twice."""
    stack = recovery
    stack.use_worker_env(openai_env(llm))
    rid = unique("hang")
    llm.script(rid, "sort", [Hang(30)])
    stack.send({"id": rid, "message": "Revenue was $12.5M, up 22%, with 340 employees."}, key=rid)
    stack.flush()
    wait_until("the sort call to hang", lambda: bool(llm.calls(rid, "sort")), timeout=60)
    [extract] = llm.calls(rid, "extract")
    assert extract.successful
    killed_at = kill(stack, "worker")
    wait_until(
        "step 1 in the journal (it was, before the sort call began)",
        lambda: extract.response_id in journaled_response_ids(stack),
        timeout=10,
    )

    started = time.monotonic()
    stack.stack.up()
    stack.outputs.wait_for([rid], timeout=90)
    recovered = time.monotonic() - started

    assert llm.calls(rid, "extract") == [extract], "Extract metrics ran again after the crash"
    sort_calls = llm.calls(rid, "sort")
    assert [c.successful for c in sort_calls] == [False, True]  # the hang, then the retry after the restart
    assert sort_calls[1].received_at > killed_at
    outcome = check_steps_ran_once(stack, llm, rid, killed_at, {extract.response_id or "": "Extract metrics"})
    assert ledger_ids(outcome.table)["Extract metrics"] == extract.response_id
    measured("worker SIGKILL during a hung LLM call", extract_calls=1, recovery_s=round(recovered, 1))


def test_crash_between_publish_and_journal_yields_a_byte_identical_duplicate(
    recovery: TestStack, tmp_path: Path
) -> None:
    """The first of docs/design.md's "Known duplicate windows", forced with worker/faults.py."""
    stack = recovery
    prefix = unique("crash")
    state = tmp_path / "fault-state"
    stack.use_worker_env({"FAULT_CRASH_AFTER_PUBLISH": prefix, "FAULT_STATE_DIR": str(state)})
    rid = f"{prefix}-r1"
    stack.send({"id": rid, "message": "Throughput reached 950 requests per second at 41% CPU."}, key=rid)
    stack.flush()
    worker = stack.stack.component("worker").process
    wait_until("the worker to crash after the publish", lambda: not worker.is_running(), timeout=60)
    assert faults.marker_path(state, rid).exists()
    assert len(stack.outputs.records(rid)) <= 1

    started = time.monotonic()
    stack.stack.up()
    wait_until("the re-run publish step", lambda: len(stack.outputs.records(rid)) >= 2, timeout=90)
    recovered = time.monotonic() - started
    stack.wait_finished([rid])  # nothing else may follow

    records = stack.outputs.records(rid)
    assert [r.topic for r in records] == [TABLES, TABLES]
    assert records[0].value == records[1].value, "the duplicate is not byte-identical"
    assert records[0].offset != records[1].offset
    assert worker.is_running(), "the worker crashed a second time for the same report"

    shown = run_results(stack, "--json", "--id", rid, "--timeout", "30")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(r["kind"], r["report_id"]) for r in lines] == [("table", rid)]
    measured("fault after publish", duplicates=len(records) - 1, recovery_s=round(recovered, 1))


def test_fault_injection_is_off_unless_configured_and_crashes_once_per_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exits: list[int] = []
    published: list[str] = []

    def fake_exit(code: int) -> None:
        exits.append(code)

    async def publish(record: TableRecord) -> Published:
        published.append(record.report_id)
        return Published(delivery=Delivery(topic=TABLES, partition=0, offset=len(published)))

    def publish_all(settings: Settings, *report_ids: str) -> None:
        step = faults.with_faults(publish, settings)
        for rid in report_ids:
            asyncio.run(step(record=table_record(rid)))

    monkeypatch.setattr(os, "_exit", fake_exit)
    off = settings_from({})
    assert faults.with_faults(publish, off) is publish, "with the fault off the step is the plain publish"
    publish_all(settings_from({"FAULT_CRASH_AFTER_PUBLISH": "crash"}), "crash-1")
    assert exits == [], "without FAULT_STATE_DIR a crash would repeat on every attempt"

    on = settings_from({"FAULT_CRASH_AFTER_PUBLISH": "crash", "FAULT_STATE_DIR": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="worker.faults"):
        faults.announce(on)
    assert "FAULT INJECTION ON" in caplog.text
    publish_all(on, "other-1", "crash/1", "crash/1", "crash_1")  # crash_1 sanitizes like crash/1: its own report
    # The marker survives a (simulated) restart: crash/1 crashes once.
    assert exits == [faults.CRASH_EXIT_CODE, faults.CRASH_EXIT_CODE]
    assert published == ["crash-1", "other-1", "crash/1", "crash/1", "crash_1"]


def table_record(report_id: str) -> TableRecord:
    return TableRecord(
        report_id=report_id,
        table="| Metric | Value | Unit |",
        metrics=[],
        source=Source(),
        invocation_id="inv_test",
        ledger=Ledger.of([]),
    )


# --- Kill restate-server and the broker ----------------------------------------------------------


def test_restate_sigkill_with_reports_in_flight_loses_nothing(recovery: TestStack, llm: LLMServer) -> None:
    stack = recovery
    stack.use_worker_env(openai_env(llm))
    llm.latency = 0.3
    warm_up(stack)
    run = unique("rkill")
    sent_at = time.time()
    ids = send_staggered(stack, run, 50, interval=0.03)
    wait_until("the first tables", lambda: tables_among(stack, ids) >= 5, timeout=90)
    ours = {c.response_id for c in llm.successful_calls() if c.report_id.startswith(run)}
    journaled_before = set(journaled_response_ids(stack, since=sent_at - 5)) & ours  # a moment before the kill
    kill(stack, "restate")
    finished_before = [rid for rid in ids if stack.outputs.records(rid)]
    assert len(finished_before) < len(ids), "every report finished before the kill: nothing was in flight"
    assert journaled_before
    # The worker's handlers lost their streams: let the LLM calls they had started end, so every call
    # after the restart comes from a resumed invocation.
    wait_until("the LLM calls in flight at the kill to end", lambda: llm.in_flight == 0, timeout=30)

    restarted_at = time.time()
    started = time.monotonic()
    stack.stack.up()  # same data directory: the journal and the Kafka offsets survive
    stack.outputs.wait_for(ids, timeout=150)
    recovered = time.monotonic() - started

    outcomes = [check_steps_ran_once(stack, llm, rid, restarted_at, journaled_before) for rid in ids]
    kept = {response_id for o in outcomes for response_id in ledger_ids(o.table).values()}
    assert journaled_before <= kept, "a result journaled before the crash was not reused"
    measured(
        "restate SIGKILL",
        reports=len(ids),
        in_flight=len(ids) - len(finished_before),
        steps_journaled_before_kill=len(journaled_before),
        llm_calls_lost_in_crash=sum(o.lost_calls for o in outcomes),
        duplicates=sum(o.duplicates for o in outcomes),
        recovery_s=round(recovered, 1),
    )


def test_kafka_sigkill_during_publishes_retries_until_the_broker_is_back(recovery: TestStack, llm: LLMServer) -> None:
    stack = recovery
    # One publish attempt gives up after 3 s, so Restate (not librdkafka) retries the step.
    stack.use_worker_env(openai_env(llm, KAFKA_MESSAGE_TIMEOUT_MS="3000", INVOCATION_RETRY_MAX_INTERVAL="2"))
    llm.latency = 0.3
    warm_up(stack)
    run = unique("kkill")
    ids = send_staggered(stack, run, 20, interval=0.05)
    wait_until("the first tables", lambda: tables_among(stack, ids) >= 2, timeout=90)
    kill(stack, "kafka")
    finished_before = [rid for rid in ids if stack.outputs.records(rid)]
    assert len(finished_before) < len(ids)

    def failed_publishes() -> int:
        rows = stack.query(
            "SELECT count(*) AS n FROM sys_invocation WHERE status <> 'completed' "
            "AND last_failure_related_command_name = 'Publish table'"
        )
        return int(rows[0]["n"])

    # The broker is away: publishes fail and wait for Restate's retry.
    wait_until("a failed publish attempt", lambda: failed_publishes() > 0, timeout=45, interval=0.5)
    retrying = failed_publishes()

    started = time.monotonic()
    stack.stack.up()
    stack.outputs.wait_for(ids, timeout=150)
    recovered = time.monotonic() - started

    duplicates = sum(check_one_table(stack, rid)[1] for rid in ids)
    measured(
        "kafka SIGKILL",
        reports=len(ids),
        unpublished_at_kill=len(ids) - len(finished_before),
        invocations_retrying_publish=retrying,
        duplicates=duplicates,
        recovery_s=round(recovered, 1),
    )


# --- Accounting: every input has exactly one outcome ---------------------------------------------

POISON: dict[str, tuple[bytes | None, set[str]]] = {
    # kind: (record value, acceptable dead-letter reasons)
    "empty": (b"", {"empty"}),
    "whitespace": (b" \t\n  ", {"empty"}),
    # Restate hands the handler a null value as an empty body, so a tombstone reads as empty.
    "tombstone": (None, {"null_value", "empty"}),
    "invalid_utf8": (b"Revenue \xff\xfe was 5%", {"invalid_utf8"}),
    "json_array": (b'["Revenue was 5%"]', {"invalid_schema"}),
    "json_null": (b"null", {"invalid_schema"}),
    "json_string": (b'"Revenue was 5%"', {"invalid_schema"}),
    "no_message": (b'{"note": "Revenue was 5%"}', {"invalid_schema"}),
    "message_not_string": (b'{"message": 42}', {"invalid_schema"}),
    "nested_object": (b'{"message": {"text": "Revenue was 5%"}}', {"invalid_schema"}),
    "too_large": (json.dumps({"message": "Revenue was 5%. " * 100}).encode(), {"too_large"}),
}
MAX_MESSAGE_BYTES = 1024
STEP_MAX_ATTEMPTS = 3


@dataclass
class Sent:
    kind: str
    value: bytes | None
    key: str | None
    fault_step: str | None = None
    report_id: str | None = None
    """Known for valid reports; for poison derived from where the broker stored it."""


def test_every_input_has_exactly_one_outcome(recovery: TestStack, llm: LLMServer) -> None:
    stack = recovery
    stack.use_worker_env(
        openai_env(
            llm,
            MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
            STEP_MAX_ATTEMPTS=str(STEP_MAX_ATTEMPTS),
            STEP_RETRY_INITIAL_INTERVAL="0.05",
            STEP_RETRY_MAX_INTERVAL="0.2",
        )
    )
    run = unique("acct")
    steps = list(STEPS)
    inputs: list[Sent] = [Sent(kind, raw, None) for kind, (raw, _) in POISON.items() for _ in range(8)]
    faults_by_kind = {
        "clean": 148,
        "no_metrics": 8,
        "500_then_ok": 12,
        "429_retry_after": 8,
        "malformed_then_ok": 12,
        "persistent_500": 12,
        "401": 12,
    }
    for kind, count in faults_by_kind.items():
        for i in range(count):
            rid = f"{run}-{kind}-{i:03d}"
            text = "All quiet this week, nothing to report." if kind == "no_metrics" else message(len(inputs))
            inputs.append(Sent(kind, json.dumps({"id": rid, "message": text}).encode(), rid, steps[i % 3], rid))
    assert len(inputs) == 300
    random.Random(7).shuffle(inputs)  # poison spread among valid reports, in every partition

    scripts: dict[str, list[Behaviour]] = {
        "500_then_ok": [Status(500)],
        "429_retry_after": [Status(429, headers={"Retry-After": "1"})],
        "malformed_then_ok": [Malformed()],
        "persistent_500": [Status(500)] * (STEP_MAX_ATTEMPTS + 3),
        "401": [Status(401)] * 3,
    }
    for sent in inputs:
        if sent.kind in scripts:
            assert sent.report_id is not None and sent.fault_step is not None
            llm.script(sent.report_id, sent.fault_step, scripts[sent.kind])

    # Our own producer: the delivery reports give each poison record's partition and offset.
    producer = Producer({"bootstrap.servers": stack.cfg.kafka_bootstrap, "linger.ms": "5"})
    errors: list[str] = []

    def delivered(sent: Sent) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, msg: Message) -> None:
            if error is not None:
                errors.append(error.str())
            elif sent.report_id is None:
                sent.report_id = f"{REPORTS}/{msg.partition()}/{msg.offset()}"

        return on_delivery

    started = time.monotonic()
    for sent in inputs:
        key = sent.key.encode() if sent.key else None
        producer.produce(REPORTS, key=key, value=sent.value, on_delivery=delivered(sent))
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    ids = [s.report_id for s in inputs if s.report_id is not None]
    assert len(set(ids)) == len(inputs) == 300

    stack.outputs.wait_for(ids, timeout=180)
    elapsed = time.monotonic() - started
    stack.wait_finished(ids)  # every invocation completed: no late duplicate or second outcome can follow

    outputs: dict[str, list[OutputRecord]] = {rid: stack.outputs.records(rid) for rid in ids}
    both = [rid for rid, recs in outputs.items() if len({r.topic for r in recs}) > 1]
    assert not both, f"report ids with a table AND a dead letter: {both[:5]}"
    repeated = [rid for rid, recs in outputs.items() if len(recs) != 1]
    assert not repeated, f"report ids with more than one output: {repeated[:5]}"
    tables = sum(recs[0].topic == TABLES for recs in outputs.values())
    dead = sum(recs[0].topic == DLQ for recs in outputs.values())
    assert tables + dead == len(inputs)

    reasons: dict[str, set[str]] = {}
    for sent in inputs:
        assert sent.report_id is not None
        record = outputs[sent.report_id][0]
        value = record.json()
        if sent.kind in POISON:
            assert record.topic == DLQ, (sent.kind, value)
            reasons.setdefault(sent.kind, set()).add(value["reason"])
            assert value["reason"] in POISON[sent.kind][1], (sent.kind, value["reason"], value["error"])
            assert value["source"]["topic"] == REPORTS
            assert f"{REPORTS}/{value['source']['partition']}/{value['source']['offset']}" == sent.report_id
            continue
        calls = llm.calls(sent.report_id, sent.fault_step)
        if sent.kind in ("persistent_500", "401"):
            expected_calls = STEP_MAX_ATTEMPTS if sent.kind == "persistent_500" else 1
            assert len(calls) == expected_calls, (sent.report_id, sent.kind, [c.status for c in calls])
            if sent.fault_step == "extract":  # no fallback for extract by default: the report is dead-lettered
                assert record.topic == DLQ, (sent.kind, value)
                assert value["reason"] == "step_failed" and value["failed_step"] == STEPS["extract"]
                assert all(v is None for v in value["completed"].values()), value["completed"]
            else:  # sort and format fall back to code, and the ledger says why
                assert record.topic == TABLES, (sent.kind, value)
                fact = value["ledger"]["steps"][steps.index(sent.fault_step or "")]
                assert (fact["link"], fact["provider"]) == ("code", "offline"), fact
                assert [p["attempts"] for p in fact["passed_over"]] == [expected_calls], fact
        elif sent.kind == "no_metrics":
            assert record.topic == DLQ and value["reason"] == "no_metrics", value
        elif sent.kind == "malformed_then_ok" and sent.fault_step != "extract":
            # A wrong answer where code is exact (sort, format) goes to code at once: one call, no repair.
            assert record.topic == TABLES, (sent.kind, value)
            assert len(calls) == 1, (sent.report_id, sent.kind, [c.status for c in calls])
            assert value["ledger"]["steps"][steps.index(sent.fault_step or "")]["link"] == "code"
        else:
            assert record.topic == TABLES, (sent.kind, value)
            for short in STEPS:
                assert len(llm.successful_calls(sent.report_id, short)) == 1, (sent.report_id, short)
            if sent.kind != "clean":
                assert len(calls) == 2, (sent.report_id, sent.kind, [c.status for c in calls])
    measured(
        "accounting",
        inputs=len(inputs),
        tables=tables,
        dead_letters=dead,
        poison=sum(s.kind in POISON for s in inputs),
        seconds_to_all_outcomes=round(elapsed, 1),
        tombstone_reason=sorted(reasons["tombstone"]),
    )
