"""The chaos accounting rules on synthetic records and call logs (no stack, fast)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import count

from chaos.accounting import Accounting, FaultEvent, LLMCall, OutputRecord, SentRecord, account
from chaos.inputs import EXPECTED_REASONS, POISON_KINDS, build_inputs
from chaos.llm_faults import ChaosLLMServer, fault_of
from chaos.schedule import LLMFault, LLMFaultRates, llm_fault, process_schedule
from worker.models import (
    CompletedSteps,
    DeadLetter,
    ExtractResult,
    Ledger,
    Metric,
    Source,
    StepFact,
    TableRecord,
)

STEP_NAMES = {"extract": "Extract metrics", "sort": "Sort metrics", "format": "Format as table"}
METRICS = [Metric(name="Revenue", value=5.0, unit="%")]
_offsets = count()


def fact(step: str, response_id: str) -> StepFact:
    return StepFact(step=STEP_NAMES[step], provider="openai", response_id=response_id)


def table(report_id: str, ids: dict[str, str], table_text: str = "| t |") -> OutputRecord:
    record = TableRecord(
        report_id=report_id,
        table=table_text,
        metrics=METRICS,
        source=Source(topic="reports", partition=0, offset=1),
        invocation_id="inv_1",
        ledger=Ledger.of([fact(step, rid) for step, rid in ids.items()]),
    )
    return output("table", report_id, record.model_dump_json().encode())


def letter(report_id: str, reason: str, completed: dict[str, str] | None = None) -> OutputRecord:
    """A dead letter; a step_failed one failed at the step after the completed ones."""
    extract = (completed or {}).get("extract")
    failed = ("Sort metrics" if extract else "Extract metrics") if reason == "step_failed" else None
    record = DeadLetter(
        report_id=report_id,
        reason=reason,
        error="boom",
        failed_step=failed,
        completed=CompletedSteps(extract=ExtractResult(metrics=METRICS, fact=fact("extract", extract)))
        if extract
        else CompletedSteps(),
        source=Source(topic="reports", partition=0, offset=1),
        invocation_id="inv_1",
    )
    return output("dead_letter", report_id, record.model_dump_json().encode())


def output(topic: str, key: str, value: bytes, at: float = 100.0) -> OutputRecord:
    return OutputRecord(
        topic="table" if topic == "table" else "dead_letter",
        key=key,
        value=value,
        partition=0,
        offset=next(_offsets),
        received_at=at,
    )


class CallLog:
    """Builds a call log: every call gets the next sequence number and response id."""

    def __init__(self) -> None:
        self.calls: list[LLMCall] = []

    def call(self, report_id: str, step: str, ok: bool = True, at: float = 10.0, fault: str | None = None) -> str:
        seq = len(self.calls) + 1
        response_id = f"chatcmpl-{seq}"
        self.calls.append(
            LLMCall(
                seq=seq,
                report_id=report_id,
                step=step,
                response_id=response_id if ok or fault in ("malformed", "ungrounded") else None,
                successful=ok,
                received_at=at,
                fault=fault,
            )
        )
        return response_id

    def chain(self, report_id: str, at: float = 10.0) -> dict[str, str]:
        """One successful call per step: the journaled response ids."""
        return {step: self.call(report_id, step, at=at) for step in STEP_NAMES}


def valid(*ids: str) -> list[SentRecord]:
    return [SentRecord(report_id=i, kind="valid") for i in ids]


def run(
    sent: Sequence[SentRecord],
    outputs: Sequence[OutputRecord],
    log: CallLog,
    faults: Sequence[FaultEvent] = (),
) -> Accounting:
    return account(sent, outputs, log.calls, faults, step_max_attempts=3)


def test_a_clean_run_passes() -> None:
    log = CallLog()
    outputs = [table("r1", log.chain("r1")), table("r2", log.chain("r2"))]
    result = run(valid("r1", "r2"), outputs, log)
    assert result.ok and result.exit_code == 0, result.failures()
    assert (result.inputs, result.tables, result.llm_calls, result.llm_calls_minimum) == (2, 2, 6, 6)
    assert "RESULT: PASS" in result.render()


def test_a_report_without_outcome_is_missing() -> None:
    log = CallLog()
    result = run(valid("r1", "r2"), [table("r1", log.chain("r1"))], log)
    assert result.missing == ["r2"]
    assert result.exit_code == 1
    assert "1 reports without any outcome" in result.failures()


def test_identical_duplicate_is_counted_but_allowed() -> None:
    log = CallLog()
    first = table("r1", log.chain("r1"))
    again = output("table", "r1", first.value)
    result = run(valid("r1"), [first, again], log)
    assert [(d.copies, d.identical) for d in result.duplicates] == [(2, True)]
    assert result.ok, result.failures()


def test_differing_duplicate_fails() -> None:
    log = CallLog()
    ids = log.chain("r1")
    result = run(valid("r1"), [table("r1", ids, "| a |"), table("r1", ids, "| b |")], log)
    assert [(d.copies, d.identical) for d in result.duplicates] == [(2, False)]
    assert result.exit_code == 1


def test_table_and_dead_letter_for_one_report_is_a_conflict() -> None:
    log = CallLog()
    ids = log.chain("r1")
    result = run(valid("r1"), [table("r1", ids), letter("r1", "step_failed", {"extract": ids["extract"]})], log)
    assert result.conflicts == ["r1"]
    assert result.exit_code == 1


def test_a_call_after_the_journaled_one_is_a_rerun() -> None:
    log = CallLog()
    ids = log.chain("r1")
    log.call("r1", "sort")  # the completed step was asked again
    result = run(valid("r1"), [table("r1", ids)], log)
    assert [(r.step, r.journaled_seq, r.later_seqs) for r in result.reruns] == [("sort", 2, [4])]
    assert result.exit_code == 1
    assert "1 completed steps that ran again" in result.failures()


def test_a_completed_step_of_a_dead_letter_is_checked_too() -> None:
    log = CallLog()
    extract = log.call("r1", "extract")
    log.call("r1", "extract")  # ran again after completing
    for _ in range(3):
        log.call("r1", "sort", ok=False, fault="5xx")
    result = run(valid("r1"), [letter("r1", "step_failed", {"extract": extract})], log)
    assert [(r.step, r.later_seqs) for r in result.reruns] == [("extract", [2])]
    assert result.dead_letters_by_reason == {"step_failed": 1}


def test_retries_before_the_journaled_call_are_not_reruns() -> None:
    log = CallLog()
    log.call("r1", "extract", ok=False, fault="5xx")
    log.call("r1", "extract", ok=False, fault="malformed")
    ids = {"extract": log.call("r1", "extract"), "sort": log.call("r1", "sort"), "format": log.call("r1", "format")}
    result = run(valid("r1"), [table("r1", ids)], log)
    assert result.ok, result.failures()
    assert result.llm_calls == 5 and result.llm_calls_by_fault == {"5xx": 1, "malformed": 1}


def test_two_outcomes_journaling_different_results_is_a_rerun() -> None:
    log = CallLog()
    first = log.chain("r1")
    second = {**first, "format": log.call("r1", "format")}
    result = run(valid("r1"), [table("r1", first), table("r1", second)], log)
    reasons = sorted(r.reason for r in result.reruns)
    assert reasons == ["called again after the journaled answer", "outcomes journal 2 different results"]
    assert result.exit_code == 1


def test_an_answer_lost_to_a_kill_is_waste_not_a_rerun() -> None:
    log = CallLog()
    log.call("r1", "extract", at=10.0)  # answered, then the worker died before the journal write
    ids = {"extract": log.call("r1", "extract", at=20.0), "sort": log.call("r1", "sort", at=21.0)}
    ids["format"] = log.call("r1", "format", at=22.0)
    log.call("r2", "extract", at=30.0)  # answered, never journaled, no kill in between
    ids2 = {"extract": log.call("r2", "extract", at=31.0)}
    ids2 |= {"sort": log.call("r2", "sort", at=32.0), "format": log.call("r2", "format", at=33.0)}
    kill = FaultEvent(component="worker", cause="scheduled", killed_at=12.0, restarted_at=14.0)
    result = run(valid("r1", "r2"), [table("r1", ids), table("r2", ids2)], log, [kill])
    assert result.ok, result.failures()
    assert (result.wasted_calls_kill, result.wasted_calls_other) == (1, 1)
    assert result.llm_calls == 8 and result.llm_calls_minimum == 6


def test_a_journaled_id_the_server_never_sent_fails() -> None:
    log = CallLog()
    ids = log.chain("r1") | {"sort": "chatcmpl-999"}
    result = run(valid("r1"), [table("r1", ids)], log)
    assert [(u.step, u.response_id) for u in result.unserved] == [("sort", "chatcmpl-999")]
    assert result.exit_code == 1


def test_poison_must_end_as_its_dead_letter() -> None:
    log = CallLog()
    sent = [SentRecord(report_id=f"reports/0/{i}", kind=kind) for i, kind in enumerate(POISON_KINDS)]
    outputs = [letter(s.report_id, sorted(EXPECTED_REASONS[s.kind])[0]) for s in sent]
    result = run(sent, outputs, log)
    assert result.ok, result.failures()
    assert result.poison == len(POISON_KINDS) and result.valid == 0 and result.llm_calls_minimum == 0

    wrong = [letter("reports/0/0", "too_large"), table("reports/0/1", {})]
    result = run(sent[:2], wrong, log)
    assert sorted(u.got for u in result.unexpected) == ["dead letter ['too_large']", "table"]
    assert result.exit_code == 1


def test_a_valid_report_may_be_dead_lettered_as_step_failed() -> None:
    log = CallLog()
    extract = log.call("r1", "extract")
    log.call("r1", "sort", ok=False, fault="5xx")  # one failed answer only: kills used up the other attempts
    log.call("r2", "extract")  # answered but lost to a kill: it still used one attempt
    for _ in range(2):
        log.call("r2", "extract", ok=False, fault="5xx")
    for _ in range(3):
        log.call("r3", "extract", ok=False, fault="5xx")  # a persistent failure: the budget as intended
    outputs = [letter("r1", "step_failed", {"extract": extract}), letter("r4", "no_metrics")]
    outputs += [letter(r, "step_failed") for r in ("r2", "r3")]
    result = run(valid("r1", "r2", "r3", "r4"), outputs, log)
    assert result.ok, result.failures()
    assert result.dead_letters_by_reason == {"step_failed": 3, "no_metrics": 1}
    assert result.step_failed_short_of_attempts == 2


def test_unparseable_output_fails_and_unknown_ids_are_listed() -> None:
    log = CallLog()
    outputs = [table("r1", log.chain("r1")), output("table", "r1", b"not json"), table("zz", {})]
    result = run(valid("r1"), outputs, log)
    assert len(result.unparseable) == 1 and result.unknown_ids == ["zz"]
    assert result.exit_code == 1


def test_drain_time_is_measured_from_the_last_restart() -> None:
    log = CallLog()
    outputs = [output("table", "r1", table("r1", log.chain("r1")).value, at=130.0)]
    faults = [FaultEvent(component="kafka", cause="scheduled", killed_at=100.0, restarted_at=110.0)]
    assert run(valid("r1"), outputs, log, faults).drain_after_last_fault_s == 20.0


# --- The seeded schedule --------------------------------------------------------------------------


def test_llm_faults_are_seeded_per_report_step_and_attempt() -> None:
    rates = LLMFaultRates(server_error=0.1, rate_limit=0.1, timeout=0.1, malformed=0.1, ungrounded=0.1)
    draws = [llm_fault(7, rates, f"r{i}", "sort", a) for i in range(2000) for a in (1, 2)]
    assert draws == [llm_fault(7, rates, f"r{i}", "sort", a) for i in range(2000) for a in (1, 2)]
    assert draws != [llm_fault(8, rates, f"r{i}", "sort", a) for i in range(2000) for a in (1, 2)]
    share = sum(d is not None for d in draws) / len(draws)
    assert 0.45 < share < 0.55
    assert {d for d in draws if d is not None} == set(LLMFault)
    assert (
        llm_fault(7, LLMFaultRates(server_error=0, rate_limit=0, timeout=0, malformed=0, ungrounded=0), "r", "s", 1)
        is None
    )


def test_process_schedule_is_reproducible_and_inside_the_window() -> None:
    schedule = process_schedule(3, duration=150, worker_kill_every=20)
    assert schedule == process_schedule(3, duration=150, worker_kill_every=20)
    assert [f.component for f in schedule].count("worker") == 7
    assert [f.component for f in schedule].count("restate") == 1
    assert [f.component for f in schedule].count("kafka") == 1
    assert all(0 < f.at_s <= 150 for f in schedule)
    assert [f.at_s for f in schedule] == sorted(f.at_s for f in schedule)


def test_inputs_are_seeded_with_every_poison_kind() -> None:
    planned = build_inputs(500, seed=2, poison_rate=0.02, max_message_bytes=1024, publish_crashes=3)
    assert planned == build_inputs(500, seed=2, poison_rate=0.02, max_message_bytes=1024, publish_crashes=3)
    poison = [p for p in planned if p.kind != "valid"]
    assert len(poison) == 10 and {p.kind for p in poison} == set(POISON_KINDS)
    assert all(p.report_id is None and p.key is None for p in poison)
    too_large = next(p for p in poison if p.kind == "too_large")
    assert too_large.value is not None and len(json.loads(too_large.value)["message"]) > 1024
    crashes = [p for p in planned if p.crash_after_publish]
    assert len(crashes) == 3 and all(p.report_id and p.report_id.startswith("chaos2-x-") for p in crashes)
    assert len({p.report_id for p in planned if p.kind == "valid"}) == 490


def test_the_chaos_llm_server_labels_what_it_did() -> None:
    rates = LLMFaultRates(server_error=0.2, rate_limit=0.2, timeout=0.2, malformed=0.2, ungrounded=0.2)
    server = ChaosLLMServer(5, rates, hang_seconds=0.01)
    behaviours = [server._next_behaviour("r1", "extract") for _ in range(50)]
    expected = [llm_fault(5, rates, "r1", "extract", attempt) for attempt in range(1, 51)]
    assert [fault_of(b) for b in behaviours] == expected


def test_expected_step_failures_follow_the_fault_rate() -> None:
    log = CallLog()
    result = account(valid("r1"), [table("r1", log.chain("r1"))], log.calls, step_max_attempts=2, llm_fault_rate=0.5)
    assert result.step_failed_expected == round(1 - (1 - 0.25) ** 3, 1)


def test_a_result_journaled_before_a_kill_and_then_redone_is_a_rerun() -> None:
    log = CallLog()
    lost = log.call("r1", "extract", at=10.0)  # Restate's journal held it right before the kill ...
    ids = {"extract": log.call("r1", "extract", at=20.0)}  # ... yet the step ran again after the restart
    ids |= {"sort": log.call("r1", "sort", at=21.0), "format": log.call("r1", "format", at=22.0)}
    kill = FaultEvent(component="restate", cause="scheduled", killed_at=12.0, restarted_at=14.0)
    result = account(valid("r1"), [table("r1", ids)], log.calls, [kill], journaled_before_kills={lost})
    assert [(r.step, r.journaled_seq, r.later_seqs) for r in result.reruns] == [("extract", 1, [2])]
    assert result.wasted_calls_kill == 0 and result.exit_code == 1
    # Without the journal snapshot the same log reads as an answer lost to the kill.
    assert account(valid("r1"), [table("r1", ids)], log.calls, [kill]).wasted_calls_kill == 1
