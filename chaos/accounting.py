"""The verdict of a chaos run, from what was sent, what came out and what the LLM server saw.

Pure: no Kafka, no clock. The rules (docs/design.md, "Guarantees" 2-4):
- missing: a sent record with no output at all;
- conflict: a report with both a table and a dead letter;
- duplicate: more than one record for a report on one topic; allowed only byte-identical;
- unexpected: a valid report dead-lettered for a reason other than step_failed/no_metrics,
  or a poison record that made a table or has the wrong reason;
- re-run: the LLM server received a call for (report, step) after the call whose response id
  the outcome journals (the ledger of a table, the completed steps of a dead letter), two
  outcomes journal different results for one step, or Restate's journal held a result right
  before a kill and the outcome carries another one (the journaled result was lost and redone);
- unserved: an outcome journals a response id the LLM server never sent.
Any of these fails the run. Calls that were answered but never journaled are waste, not
failures: a kill between the answer and the journal write legitimately costs a repeat.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from chaos.inputs import EXPECTED_REASONS, VALID_REASONS
from chaos.schedule import component_kind
from worker.models import DeadLetter, OutcomeKind, StepFact, TableRecord

if TYPE_CHECKING:
    from testllm import Call

LLM_STEPS = {"Extract metrics": "extract", "Sort metrics": "sort", "Format as table": "format"}
CALLS_PER_REPORT = len(LLM_STEPS)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- What the run observed -------------------------------------------------------------------------


class SentRecord(_Model):
    report_id: str
    kind: str
    """`valid` or a poison kind (chaos.inputs.POISON_KINDS)."""


class OutputRecord(_Model):
    topic: OutcomeKind
    key: str | None
    value: bytes
    partition: int
    offset: int
    received_at: float


class LLMCall(_Model):
    seq: int
    report_id: str
    step: str
    """extract, sort or format."""
    response_id: str | None
    successful: bool
    received_at: float
    fault: str | None = None

    @classmethod
    def of(cls, call: Call, fault: str | None = None) -> LLMCall:
        """One call from the test LLM server's log (testllm.Call)."""
        return cls(
            seq=call.seq,
            report_id=call.report_id,
            step=call.step,
            response_id=call.response_id,
            successful=call.successful,
            received_at=call.received_at,
            fault=fault,
        )


class FaultEvent(_Model):
    component: str
    cause: str
    """`scheduled` (a SIGKILL of the schedule) or `exited` (died by itself, e.g. a fault-injection crash)."""
    killed_at: float
    restarted_at: float | None = None
    error: str | None = None


# --- The verdict -----------------------------------------------------------------------------------


class Duplicate(_Model):
    report_id: str
    topic: OutcomeKind
    copies: int
    identical: bool


class ReRun(_Model):
    report_id: str
    step: str
    journaled_seq: int | None
    later_seqs: list[int]
    reason: str


class Unexpected(_Model):
    report_id: str
    kind: str
    got: str


class Unserved(_Model):
    report_id: str
    step: str
    response_id: str


class Accounting(_Model):
    inputs: int
    valid: int
    poison_by_kind: dict[str, int]
    tables: int
    dead_letters_by_reason: dict[str, int]
    missing: list[str]
    conflicts: list[str]
    duplicates: list[Duplicate]
    unexpected: list[Unexpected]
    reruns: list[ReRun]
    unserved: list[Unserved]
    unparseable: list[str]
    unknown_ids: list[str]
    llm_calls: int
    llm_calls_by_fault: dict[str, int]
    llm_calls_minimum: int
    wasted_calls_kill: int
    """Answered correctly, never journaled, and the worker or restate-server was down before the next attempt."""
    wasted_calls_other: int
    """Answered correctly, never journaled, no kill in between (e.g. the client timed out first)."""
    step_failed_short_of_attempts: int
    """step_failed dead letters whose failed step got fewer than STEP_MAX_ATTEMPTS failed answers from the
    LLM server: interrupted attempts (kills, restarts; even after a correct answer) used up the budget."""
    step_failed_expected: float
    """How many step_failed dead letters the LLM fault rate alone explains (every attempt of a step failed)."""
    faults: list[FaultEvent]
    journaled_before_kills: int
    """How many results Restate had journaled right before the kills (each checked for a redo)."""
    drain_after_last_fault_s: float | None
    """From the last fault's restart to the last output record (negative: all done before it)."""

    @property
    def poison(self) -> int:
        return sum(self.poison_by_kind.values())

    @property
    def dead_letters(self) -> int:
        return sum(self.dead_letters_by_reason.values())

    @property
    def differing_duplicates(self) -> list[Duplicate]:
        return [d for d in self.duplicates if not d.identical]

    def failures(self) -> list[str]:
        """One line per violated rule; empty when the run proved what it should."""
        checks: list[tuple[Sequence[object], str]] = [
            (self.missing, "reports without any outcome"),
            (self.conflicts, "reports with both a table and a dead letter"),
            (self.reruns, "completed steps that ran again"),
            (self.differing_duplicates, "duplicate records that are not byte-identical"),
            (self.unexpected, "reports with the wrong kind of outcome"),
            (self.unserved, "journaled response ids the LLM server never served"),
            (self.unparseable, "output records that are not valid tables or dead letters"),
        ]
        return [f"{len(found)} {what}" for found, what in checks if found]

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def render(self, sample: int = 5) -> str:
        """The human summary."""
        by_fault = ", ".join(f"{k} {v:,}" for k, v in sorted(self.llm_calls_by_fault.items())) or "none"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.poison_by_kind.items())) or "none"
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters_by_reason.items())) or "none"
        identical = sum(d.identical for d in self.duplicates)
        ratio = self.llm_calls / self.llm_calls_minimum if self.llm_calls_minimum else 0.0
        faults = Counter(f"{f.component} ({f.cause})" for f in self.faults)
        drain = "n/a" if self.drain_after_last_fault_s is None else f"{self.drain_after_last_fault_s:.1f} s"
        lines = [
            "=== chaos accounting ===",
            f"inputs              {self.inputs:,} ({self.valid:,} valid, {self.poison} poison: {kinds})",
            f"tables              {self.tables:,}",
            f"dead letters        {self.dead_letters:,} by reason: {reasons}",
            f"missing             {len(self.missing)}",
            f"table + dead letter {len(self.conflicts)}",
            f"duplicates          {len(self.duplicates)} ({identical} byte-identical, "
            f"{len(self.duplicates) - identical} differing)",
            f"wrong outcome       {len(self.unexpected)}",
            f"steps re-run        {len(self.reruns)} (checked against the LLM call log and "
            f"{self.journaled_before_kills:,} results journaled right before kills)",
            f"unserved ledger ids {len(self.unserved)}",
            f"unparseable outputs {len(self.unparseable)}",
            f"llm calls           {self.llm_calls:,} vs minimum {self.llm_calls_minimum:,} "
            f"(x{ratio:.2f}); injected faults: {by_fault}",
            f"wasted calls        {self.wasted_calls_kill} interrupted by a kill, {self.wasted_calls_other} other "
            "(answered, never journaled)",
            f"step_failed         {self.dead_letters_by_reason.get('step_failed', 0)} "
            f"(~{self.step_failed_expected:.1f} expected from the LLM fault rate alone; "
            f"{self.step_failed_short_of_attempts} with fewer failed LLM calls than STEP_MAX_ATTEMPTS)",
            "process faults      " + (", ".join(f"{k} x{v}" for k, v in sorted(faults.items())) or "none"),
            f"drain after faults  {drain}",
        ]
        if self.unknown_ids:
            lines.append(f"outputs for ids never sent: {len(self.unknown_ids)} e.g. {self.unknown_ids[:sample]}")
        details: list[tuple[str, Sequence[object]]] = [
            ("missing", self.missing),
            ("conflicts", self.conflicts),
            ("re-runs", self.reruns),
            ("differing duplicates", self.differing_duplicates),
            ("wrong outcomes", self.unexpected),
            ("unserved", self.unserved),
            ("unparseable", self.unparseable),
        ]
        for label, found in details:
            if found:
                lines.append(f"  {label}: " + "; ".join(_short(x) for x in found[:sample]))
        failures = self.failures()
        lines.append("RESULT: PASS" if not failures else "RESULT: FAIL - " + "; ".join(failures))
        return "\n".join(lines)


def _short(item: object) -> str:
    if isinstance(item, BaseModel):
        return " ".join(f"{k}={v}" for k, v in item.model_dump().items())
    return str(item)


# --- The rules -------------------------------------------------------------------------------------


class _Parsed:
    """One report's output records, parsed."""

    def __init__(self) -> None:
        self.tables: list[OutputRecord] = []
        self.dead_letters: list[OutputRecord] = []
        self.table_values: list[TableRecord] = []
        self.letter_values: list[DeadLetter] = []

    def journaled(self) -> dict[str, set[str]]:
        """Step short name -> the response ids the outcomes carry for it."""
        facts: list[StepFact] = [f for t in self.table_values for f in t.ledger.steps]
        for letter in self.letter_values:
            done = letter.completed
            facts += [r.fact for r in (done.extract, done.sort, done.format) if r is not None]
        found: dict[str, set[str]] = defaultdict(set)
        for fact in facts:
            if fact.step in LLM_STEPS and fact.response_id:
                found[LLM_STEPS[fact.step]].add(fact.response_id)
        return found


def _group_outputs(outputs: Iterable[OutputRecord], unparseable: list[str]) -> dict[str, _Parsed]:
    grouped: dict[str, _Parsed] = defaultdict(_Parsed)
    for record in outputs:
        try:
            if record.topic == "table":
                table = TableRecord.model_validate_json(record.value)
                report_id = record.key or table.report_id
                grouped[report_id].table_values.append(table)
                grouped[report_id].tables.append(record)
            else:
                letter = DeadLetter.model_validate_json(record.value)
                report_id = record.key or letter.report_id
                grouped[report_id].letter_values.append(letter)
                grouped[report_id].dead_letters.append(record)
        except ValidationError:
            unparseable.append(f"{record.topic}[{record.partition}]@{record.offset}")
    return grouped


def _duplicates(report_id: str, parsed: _Parsed) -> list[Duplicate]:
    found = []
    by_topic: list[tuple[OutcomeKind, list[OutputRecord]]] = [
        ("table", parsed.tables),
        ("dead_letter", parsed.dead_letters),
    ]
    for topic, records in by_topic:
        if len(records) > 1:
            identical = len({r.value for r in records}) == 1
            found.append(Duplicate(report_id=report_id, topic=topic, copies=len(records), identical=identical))
    return found


def _unexpected(sent: SentRecord, parsed: _Parsed) -> Unexpected | None:
    reasons: set[str] = {letter.reason.value for letter in parsed.letter_values}
    if sent.kind == "valid":
        if wrong := reasons - VALID_REASONS:
            return Unexpected(report_id=sent.report_id, kind=sent.kind, got=f"dead letter {sorted(wrong)}")
        return None
    expected = EXPECTED_REASONS.get(sent.kind, frozenset())
    if parsed.tables:
        return Unexpected(report_id=sent.report_id, kind=sent.kind, got="table")
    if not reasons <= expected:
        return Unexpected(report_id=sent.report_id, kind=sent.kind, got=f"dead letter {sorted(reasons)}")
    return None


@dataclass(frozen=True)
class _Evidence:
    outages: list[tuple[float, float]]
    """(down, up) wall-clock intervals of the worker and restate-server."""
    journaled_before_kills: frozenset[str]
    """Response ids Restate's journal held right before a kill."""
    concurrent_grace_s: float = 0.0
    """How long an LLM call takes: later calls that started within it overlapped the journaled one."""


class _StepCheck:
    """Re-runs, unserved ids and waste for one (report, step)."""

    def __init__(self, report_id: str, step: str, calls: list[LLMCall], journaled: set[str], evidence: _Evidence):
        self.reruns: list[ReRun] = []
        self.unserved: list[Unserved] = []
        self.wasted_kill = 0
        self.wasted_other = 0
        kept = [c for c in calls if c.response_id in journaled]
        for response_id in sorted(journaled - {c.response_id for c in kept}):
            self.unserved.append(Unserved(report_id=report_id, step=step, response_id=response_id))
        if len(journaled) > 1:
            self.reruns.append(
                ReRun(
                    report_id=report_id,
                    step=step,
                    journaled_seq=None,
                    later_seqs=sorted(c.seq for c in kept),
                    reason=f"outcomes journal {len(journaled)} different results",
                )
            )
        if kept:
            journaled_call = min(kept, key=lambda c: c.seq)
            first = journaled_call.seq
            # A call that started while the journaled one was still being answered is not a re-run of a
            # completed step but a concurrent attempt (a leadership handover): the caller counts those.
            answered_at = journaled_call.received_at + evidence.concurrent_grace_s
            later = [c.seq for c in calls if c.seq > first and c.received_at >= answered_at]
            if later:
                self.reruns.append(
                    ReRun(
                        report_id=report_id,
                        step=step,
                        journaled_seq=first,
                        later_seqs=later,
                        reason="called again after the journaled answer",
                    )
                )
        # The outcome may journal a later answer: then the one the journal held before a kill was lost and redone.
        redone = [
            c for c in calls if c.response_id in evidence.journaled_before_kills and c.response_id not in journaled
        ]
        if redone:
            self.reruns.append(
                ReRun(
                    report_id=report_id,
                    step=step,
                    journaled_seq=redone[0].seq,
                    later_seqs=[c.seq for c in calls if c.seq > redone[0].seq],
                    reason="journaled before a kill, then done again",
                )
            )
        for i, call in enumerate(calls):
            if not call.successful or call.response_id in journaled or call in redone:
                continue
            until = calls[i + 1].received_at if i + 1 < len(calls) else float("inf")
            # Down between this answer and the next attempt: the answer died with the process (a worker
            # or restate-server that is away, even while the worker's handler still runs, cannot journal).
            if any(down < until and up > call.received_at for down, up in evidence.outages):
                self.wasted_kill += 1
            else:
                self.wasted_other += 1


def account(
    sent: Sequence[SentRecord],
    outputs: Iterable[OutputRecord],
    calls: Iterable[LLMCall],
    faults: Sequence[FaultEvent] = (),
    *,
    step_max_attempts: int = 3,
    llm_fault_rate: float = 0.0,
    journaled_before_kills: Collection[str] = (),
    concurrent_grace_s: float = 0.0,
) -> Accounting:
    """Apply every rule; the result says what happened and whether the run passed."""
    unparseable: list[str] = []
    outputs = list(outputs)
    grouped = _group_outputs(outputs, unparseable)
    calls_by_step: dict[tuple[str, str], list[LLMCall]] = defaultdict(list)
    all_calls = sorted(calls, key=lambda c: c.seq)
    for call in all_calls:
        calls_by_step[(call.report_id, call.step)].append(call)
    evidence = _Evidence(
        outages=[
            (f.killed_at, f.restarted_at if f.restarted_at is not None else float("inf"))
            for f in faults
            if component_kind(f.component) in ("worker", "restate")
        ],
        journaled_before_kills=frozenset(journaled_before_kills),
        concurrent_grace_s=concurrent_grace_s,
    )

    sent_ids = {s.report_id for s in sent}
    missing, conflicts = [], []
    duplicates: list[Duplicate] = []
    unexpected: list[Unexpected] = []
    reruns: list[ReRun] = []
    unserved: list[Unserved] = []
    reasons: Counter[str] = Counter()
    tables = wasted_kill = wasted_other = short_of_attempts = 0
    for record in sent:
        parsed = grouped.get(record.report_id)
        if parsed is None or not (parsed.tables or parsed.dead_letters):
            missing.append(record.report_id)
            continue
        if parsed.tables and parsed.dead_letters:
            conflicts.append(record.report_id)
        tables += bool(parsed.tables)
        if parsed.letter_values and not parsed.tables:
            letter = parsed.letter_values[0]
            reasons[letter.reason] += 1
            if letter.reason == "step_failed" and letter.failed_step in LLM_STEPS:
                tried = calls_by_step.get((record.report_id, LLM_STEPS[letter.failed_step]), [])
                short_of_attempts += sum(not c.successful for c in tried) < step_max_attempts
        duplicates += _duplicates(record.report_id, parsed)
        if (wrong := _unexpected(record, parsed)) is not None:
            unexpected.append(wrong)
        journaled = parsed.journaled()
        for step in LLM_STEPS.values():
            check = _StepCheck(
                record.report_id, step, calls_by_step.get((record.report_id, step), []), journaled[step], evidence
            )
            reruns += check.reruns
            unserved += check.unserved
            wasted_kill += check.wasted_kill
            wasted_other += check.wasted_other

    restarts = [f.restarted_at for f in faults if f.restarted_at is not None]
    last_output = max((o.received_at for o in outputs), default=None)
    drain = None if not restarts or last_output is None else round(last_output - max(restarts), 1)
    valid = sum(s.kind == "valid" for s in sent)
    ours = [c for c in all_calls if c.report_id in sent_ids]
    return Accounting(
        inputs=len(sent),
        valid=valid,
        poison_by_kind=dict(Counter(s.kind for s in sent if s.kind != "valid")),
        tables=tables,
        dead_letters_by_reason=dict(reasons),
        missing=missing,
        conflicts=conflicts,
        duplicates=duplicates,
        unexpected=unexpected,
        reruns=reruns,
        unserved=unserved,
        unparseable=unparseable,
        unknown_ids=sorted(set(grouped) - sent_ids),
        llm_calls=len(ours),
        llm_calls_by_fault=dict(Counter(c.fault for c in ours if c.fault is not None)),
        llm_calls_minimum=CALLS_PER_REPORT * valid,
        wasted_calls_kill=wasted_kill,
        wasted_calls_other=wasted_other,
        step_failed_short_of_attempts=short_of_attempts,
        step_failed_expected=round(valid * (1 - (1 - llm_fault_rate**step_max_attempts) ** CALLS_PER_REPORT), 1),
        faults=list(faults),
        journaled_before_kills=len(evidence.journaled_before_kills),
        drain_after_last_fault_s=drain,
    )
