"""The Restate service `ReportChain`: its handler only orchestrates journaled steps.

Input message => Extract metrics => Sort metrics => Format as table => Publish table

Each LLM step runs down its fallback chain (worker/chain.py): the model, a fallback model, code.

Each step is a `ctx.run_typed`: once it completes, its output is in the journal
and a retry, a worker crash or a Restate restart resumes after it. Input that
can never succeed, and steps that exhaust their attempts, end as one record on
the dead-letter topic instead, so every record has exactly one outcome.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

import restate
from pydantic import BaseModel
from restate.exceptions import TerminalError
from restate.serde import BytesSerde, PydanticJsonSerde, Serde

from worker import faults, steps
from worker.chain import get_chain_config, run_step
from worker.intake import Rejection, original_value, read_report
from worker.models import (
    CompletedSteps,
    DeadLetter,
    DeadLetterReason,
    Delivery,
    ExtractResult,
    FormatResult,
    Ledger,
    Outcome,
    Report,
    SortResult,
    Step,
    TableRecord,
)
from worker.settings import get_settings

log = restate.getLogger("worker.chain")  # type: ignore[no-untyped-call]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

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
)


def _journaled(model: type[M]) -> restate.RunOptions[M]:
    # A ready serde writes the same JSON as the SDK's default one for a pydantic type hint,
    # but spares the SDK its type inspection on every ctx.run (a copy of the options, hint unwrapping).
    serde: Serde[M] = PydanticJsonSerde(model)  # type: ignore[no-untyped-call]
    return restate.RunOptions(serde=serde)


EXTRACT_RUN = _journaled(ExtractResult)
SORT_RUN = _journaled(SortResult)
FORMAT_RUN = _journaled(FormatResult)


# Publishing has no attempt bound of its own: it falls back to the invocation
# retry policy above, which pauses instead of giving up.
PUBLISH = _journaled(Delivery)
# The table's publish, with the crash-after-publish fault composed on when a test or chaos run asks for it.
publish_table = faults.with_faults(steps.publish_table, get_settings())


@report_chain.handler("process", accept="*/*", input_serde=BytesSerde())
async def process(ctx: restate.Context, raw: bytes | None) -> Outcome:
    request = ctx.request()
    invocation_id = request.id
    intake = read_report(raw, request.headers, invocation_id, get_settings().max_message_bytes)
    if isinstance(intake, Rejection):
        return await _dead_letter_rejection(ctx, intake, invocation_id)
    report = intake

    report_id = report.report_id
    chain = get_chain_config()
    # The completed steps are only needed for a dead letter: build them only then.
    extracted: ExtractResult | None = None
    ordered: SortResult | None = None
    step = Step.EXTRACT
    try:
        extracted = await run_step(ctx, step, chain, steps.extract_metrics, EXTRACT_RUN, report=report)
        if not extracted.metrics:
            error = "no metrics were found in the report"
            done = CompletedSteps(extract=extracted)
            return await _dead_letter(ctx, report, raw, invocation_id, DeadLetterReason.NO_METRICS, error, step, done)
        step = Step.SORT
        ordered = await run_step(
            ctx, step, chain, steps.sort_metrics, SORT_RUN, report_id=report_id, metrics=extracted.metrics
        )
        step = Step.FORMAT
        table = await run_step(
            ctx, step, chain, steps.format_table, FORMAT_RUN, report_id=report_id, metrics=ordered.metrics
        )
    except TerminalError as exc:
        done = CompletedSteps(extract=extracted, sort=ordered)
        return await _dead_letter(
            ctx, report, raw, invocation_id, DeadLetterReason.STEP_FAILED, exc.message, step, done
        )

    record = _table_record(report, invocation_id, extracted, ordered, table)
    delivery = await ctx.run_typed(Step.PUBLISH.value, publish_table, PUBLISH, record=record)
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
    )


async def _dead_letter(
    ctx: restate.Context,
    report: Report,
    raw: bytes | None,
    invocation_id: str,
    reason: DeadLetterReason,
    error: str,
    failed_step: Step,
    done: CompletedSteps,
) -> Outcome:
    value, encoding = original_value(raw)
    letter = DeadLetter(
        report_id=report.report_id,
        reason=reason,
        error=error,
        failed_step=failed_step.value,
        completed=done,
        source=report.source,
        invocation_id=invocation_id,
        original_value=value,
        original_encoding=encoding,
    )
    return await _publish_dead_letter(ctx, letter)


async def _dead_letter_rejection(ctx: restate.Context, rejection: Rejection, invocation_id: str) -> Outcome:
    letter = DeadLetter(
        report_id=rejection.report_id,
        reason=rejection.reason,
        error=rejection.error,
        source=rejection.source,
        invocation_id=invocation_id,
        original_value=rejection.original_value,
        original_encoding=rejection.original_encoding,
    )
    return await _publish_dead_letter(ctx, letter)


async def _publish_dead_letter(ctx: restate.Context, letter: DeadLetter) -> Outcome:
    delivery = await ctx.run_typed(Step.DEAD_LETTER.value, steps.publish_dead_letter, PUBLISH, letter=letter)
    log.warning(
        "report %s outcome=dead_letter invocation=%s reason=%s%s: %s",
        letter.report_id, letter.invocation_id, letter.reason,
        f" step={Step(letter.failed_step).short}" if letter.failed_step else "", letter.error,
    )  # fmt: skip
    return Outcome(report_id=letter.report_id, outcome="dead_letter", reason=letter.reason, delivery=delivery)
