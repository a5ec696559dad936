"""The Restate service `ReportChain`: its handler only orchestrates journaled steps.

Input message => Extract metrics => Sort metrics => Format as table => Publish table

Each LLM step runs down its fallback chain (worker/chain.py): the model, a fallback model, code.

Each step is a `ctx.run_typed` (through worker/journaled.py): once it completes, its output is in
the journal and a retry, a worker crash or a Restate restart resumes after it. Input that can never
succeed, steps that exhaust their attempts, a table too large for its topic and a cancelled
invocation end as one record on the dead-letter topic instead, so every record has exactly one
outcome.

The handler's control flow reads only journaled values: the input's verdict and the policy (each
step's chain, attempts and backoff, the input limits) come from the `Input message` step, never
from the live settings, so a worker restarted with other settings replays every journal as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TypeVar

import restate
from pydantic import BaseModel
from restate.exceptions import TerminalError
from restate.serde import BytesSerde, PydanticJsonSerde, Serde

from worker import faults, journaled, steps
from worker.admission import Admission, admit
from worker.budget.gate import service_timeouts
from worker.chain import run_step
from worker.intake import read_report
from worker.journaled import Cancelled
from worker.models import (
    CompletedSteps,
    DeadLetter,
    DeadLetterReason,
    Delivery,
    ExtractResult,
    FormatResult,
    Ledger,
    Outcome,
    Published,
    Rejection,
    Report,
    SortResult,
    Step,
    TableRecord,
)
from worker.settings import get_settings

log = restate.getLogger("worker.chain")  # type: ignore[no-untyped-call]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_SUSPEND_AFTER, _ABORT_AFTER = service_timeouts(get_settings())
# When a retryable failure outlasts every step-level bound (the worker is
# unreachable, Kafka refuses the publish), back off and finally PAUSE: an
# operator resumes the invocation after the fix; nothing is dropped.
report_chain = restate.Service(
    "ReportChain",
    description="Turns a report message into a sorted markdown table of its metrics.",
    invocation_retry_policy=restate.InvocationRetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        exponentiation_factor=2.0,
        max_interval=timedelta(seconds=get_settings().invocation_retry_max_interval),
        max_attempts=get_settings().invocation_retry_max_attempts,
        on_max_attempts="pause",
    ),
    # With LLM budgets: suspend while waiting, so waiting invocations never hold the slots the budget needs.
    inactivity_timeout=_SUSPEND_AFTER,
    abort_timeout=_ABORT_AFTER,
)


def _journaled(model: type[M]) -> restate.RunOptions[M]:
    # A ready serde writes the same JSON as the SDK's default one for a pydantic type hint,
    # but spares the SDK its type inspection on every ctx.run (a copy of the options, hint unwrapping).
    serde: Serde[M] = PydanticJsonSerde(model)  # type: ignore[no-untyped-call]
    return restate.RunOptions(serde=serde)


ADMIT_RUN = _journaled(Admission)
EXTRACT_RUN = _journaled(ExtractResult)
SORT_RUN = _journaled(SortResult)
FORMAT_RUN = _journaled(FormatResult)
# Publishing has no attempt bound of its own: a broker that refuses a record for a reason
# other than its size (down, missing topic, ACLs) falls back to the invocation retry policy
# above, which pauses instead of giving up.
PUBLISH_TABLE_RUN = _journaled(Published)
PUBLISH_DEAD_LETTER_RUN = _journaled(Delivery)
CANCELLED = "the invocation was cancelled (Restate UI, CLI or admin API) before it finished"
# The table's publish, with the crash-after-publish fault composed on when a test or chaos run asks for it.
publish_table = faults.with_faults(steps.publish_table, get_settings())


@report_chain.handler("process", accept="*/*", input_serde=BytesSerde())
async def process(ctx: restate.Context, raw: bytes | None) -> Outcome:
    request = ctx.request()
    invocation_id = request.id
    try:
        admission = await journaled.run(
            ctx, Step.INPUT, admit, ADMIT_RUN, raw=raw, headers=dict(request.headers), invocation_id=invocation_id
        )
    except Cancelled:
        return await _cancelled_before_reading(ctx, raw, request.headers, invocation_id)
    if admission.rejection is not None:
        return await _dead_letter(ctx, raw, _rejected(admission.rejection, invocation_id))
    assert admission.report is not None
    report, chain = admission.report, admission.policy.chain

    report_id = report.report_id
    # The completed steps are only needed for a dead letter: build them only then.
    extracted: ExtractResult | None = None
    ordered: SortResult | None = None
    step = Step.EXTRACT
    try:
        extracted = await run_step(ctx, step, chain, steps.extract_metrics, EXTRACT_RUN, report=report)
        if not extracted.metrics:
            error = "no metrics were found in the report"
            done = CompletedSteps(extract=extracted)
            letter = _letter(report, invocation_id, DeadLetterReason.NO_METRICS, error, step, done)
            return await _dead_letter(ctx, raw, letter)
        step = Step.SORT
        ordered = await run_step(
            ctx, step, chain, steps.sort_metrics, SORT_RUN, report_id=report_id, metrics=extracted.metrics
        )
        step = Step.FORMAT
        table = await run_step(
            ctx, step, chain, steps.format_table, FORMAT_RUN, report_id=report_id, metrics=ordered.metrics
        )
    except (TerminalError, Cancelled) as exc:
        done = CompletedSteps(extract=extracted, sort=ordered)
        if isinstance(exc, Cancelled):
            letter = _letter(report, invocation_id, DeadLetterReason.CANCELLED, CANCELLED, step, done)
        else:
            letter = _letter(report, invocation_id, DeadLetterReason.STEP_FAILED, exc.message, step, done)
        return await _dead_letter(ctx, raw, letter)

    record = _table_record(report, invocation_id, extracted, ordered, table)
    done = CompletedSteps(extract=extracted, sort=ordered, format=table)
    try:
        published = await journaled.run(
            ctx, Step.PUBLISH, publish_table, PUBLISH_TABLE_RUN, settle_on_cancel=True, record=record
        )
    except Cancelled as cancelled:
        # A cancel that arrives while the table is being published is too late if the broker took it.
        if not (isinstance(cancelled.result, Published) and cancelled.result.delivery is not None):
            letter = _letter(report, invocation_id, DeadLetterReason.CANCELLED, CANCELLED, Step.PUBLISH, done)
            return await _dead_letter(ctx, raw, letter)
        published = cancelled.result
    if published.delivery is None:
        error = f"the table cannot be published: {published.refused}"
        letter = _letter(report, invocation_id, DeadLetterReason.OUTPUT_TOO_LARGE, error, Step.PUBLISH, done)
        return await _dead_letter(ctx, raw, letter)
    delivery = published.delivery
    log.info(
        "report %s outcome=table invocation=%s -> %s/%s@%s %s",
        report_id, invocation_id, delivery.topic, delivery.partition, delivery.offset, _ledger_summary(record.ledger),
    )  # fmt: skip
    return Outcome(report_id=report.report_id, outcome="table", delivery=delivery)


def _ledger_summary(ledger: Ledger) -> str:
    """One compact line: per-step latency/attempts/tokens, then totals (no report text, no secrets)."""
    steps = " ".join(
        f"{Step(f.step).short}={f.latency_ms:.0f}ms/{f.attempts}x/{f.prompt_tokens + f.completion_tokens}tok"
        + ("" if f.link == "primary" else f"/{f.link}")
        for f in ledger.steps
    )
    cost = f" cost=${ledger.cost_usd:.6f}" if ledger.cost_usd is not None else ""
    return f"{steps} tokens={ledger.total_tokens}{cost}"


def _table_record(
    report: Report, invocation_id: str, extracted: ExtractResult, ordered: SortResult, table: FormatResult
) -> TableRecord:
    return TableRecord(
        report_id=report.report_id,
        table=table.table,
        metrics=ordered.metrics,
        source=report.source,
        invocation_id=invocation_id,
        ledger=Ledger.of([extracted.fact, ordered.fact, table.fact]),
        dropped=extracted.dropped,
        replay_of=report.replay_of,
    )


def _letter(
    report: Report,
    invocation_id: str,
    reason: DeadLetterReason,
    error: str,
    failed_step: Step,
    done: CompletedSteps,
) -> DeadLetter:
    return DeadLetter(
        report_id=report.report_id,
        reason=reason,
        error=error,
        failed_step=failed_step.value,
        completed=done,
        source=report.source,
        invocation_id=invocation_id,
        replay_of=report.replay_of,
    )


def _rejected(rejection: Rejection, invocation_id: str) -> DeadLetter:
    return DeadLetter(
        report_id=rejection.report_id,
        reason=rejection.reason,
        error=rejection.error,
        source=rejection.source,
        invocation_id=invocation_id,
        replay_of=rejection.replay_of,
    )


async def _cancelled_before_reading(
    ctx: restate.Context, raw: bytes | None, headers: Mapping[str, str], invocation_id: str
) -> Outcome:
    # Cancelled before `Input message` was journaled (e.g. while waiting in Restate's queue):
    # name the report as intake would; nothing below depends on a policy.
    s = get_settings()
    verdict = read_report(raw, headers, invocation_id, s.max_message_bytes, s.max_report_id_bytes)
    letter = DeadLetter(
        report_id=verdict.report_id,
        reason=DeadLetterReason.CANCELLED,
        error=CANCELLED,
        failed_step=Step.INPUT.value,
        source=verdict.source,
        invocation_id=invocation_id,
        replay_of=verdict.replay_of,
    )
    return await _dead_letter(ctx, raw, letter)


async def _dead_letter(ctx: restate.Context, raw: bytes | None, letter: DeadLetter) -> Outcome:
    publish = steps.publish_dead_letter
    try:
        delivery = await journaled.run(
            ctx, Step.DEAD_LETTER, publish, PUBLISH_DEAD_LETTER_RUN, settle_on_cancel=True, letter=letter, raw=raw
        )
    except Cancelled as cancelled:
        if isinstance(cancelled.result, Delivery):
            delivery = cancelled.result
        else:
            # Cancelled while (or before) the dead letter was written: the record still needs its outcome.
            delivery = await journaled.run(
                ctx, Step.DEAD_LETTER, publish, PUBLISH_DEAD_LETTER_RUN, letter=letter, raw=raw
            )
    log.warning(
        "report %s outcome=dead_letter invocation=%s reason=%s%s: %s",
        letter.report_id, letter.invocation_id, letter.reason,
        f" step={Step(letter.failed_step).short}" if letter.failed_step else "", letter.error,
    )  # fmt: skip
    return Outcome(report_id=letter.report_id, outcome="dead_letter", reason=letter.reason, delivery=delivery)
