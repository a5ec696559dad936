"""The chain's steps as plain async functions: pydantic models in, pydantic models out.

Each call of an LLM step is ONE attempt of one link of the step's chain (worker/chain.py),
run inside its own `ctx.run_typed`. It either returns the validated result (nothing
invalid is ever journaled) or raises `TerminalError` describing the failure
(`AttemptFailure` in its metadata). Restate journals that failure too, and the
handler decides: try again after a durable sleep, or give up and dead-letter.
Journaling failed attempts keeps a crash from eating the attempt budget: an
attempt a crash interrupted leaves nothing in the journal and simply runs again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from restate.exceptions import TerminalError

from worker import limits, records
from worker.budget.permit import Permit, PermitRefused
from worker.budget.window import Outcome, RateLimitAdvice
from worker.chain import CODE, Link
from worker.models import (
    DeadLetter,
    Delivery,
    ExtractResult,
    FormatResult,
    LLMUsage,
    Metric,
    Published,
    Report,
    SortResult,
    Step,
    StepFact,
    TableRecord,
)
from worker.providers import get_provider, offline
from worker.providers.base import (
    Answer,
    CallInfo,
    InvalidAnswerError,
    PermanentProviderError,
    TransientProviderError,
)
from worker.publisher import RecordTooLarge, get_publisher
from worker.quotes import QuotedMetric, candidates, resolve
from worker.settings import get_settings
from worker.validation import (
    MAX_LISTED,
    ValidationFailed,
    apply_order,
    check_grounded,
    check_rows,
    check_sorted_permutation,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Honour a server's Retry-After, within reason: a bogus hour must not park a report.
MAX_RETRY_AFTER = timedelta(minutes=5)


class AttemptFailure(BaseModel):
    """Why one attempt failed, carried in the journaled TerminalError's metadata."""

    retryable: bool
    repair_hint: str | None = None
    """The validation error, quoted back to the model on the next attempt."""
    retry_after_s: float | None = None
    """The delay the server advised (429 Retry-After)."""
    throttled: RateLimitAdvice | None = None
    """Set when the server answered 429 for its rate limit: what it said about its limits."""
    budget: Outcome | None = None
    """Set when the attempt did not use its budget grant (worker/budget/permit.py): no attempt at all, the grant
    goes back with this outcome and the call waits for a new one."""
    ended_at: float | None = None
    """When the attempt's call ended (epoch seconds), for its model's budget."""

    def error(self, message: str) -> TerminalError:
        metadata = {"retryable": "true" if self.retryable else "false"}
        if self.repair_hint is not None:
            metadata["repair_hint"] = self.repair_hint
        if self.retry_after_s is not None:
            metadata["retry_after_s"] = f"{self.retry_after_s:.3f}"
        if self.throttled is not None:
            metadata["throttled"] = self.throttled.model_dump_json(exclude_none=True)
        if self.budget is not None:
            metadata["budget"] = self.budget.value
        metadata["ended_at"] = f"{time.time() if self.ended_at is None else self.ended_at:.3f}"
        return TerminalError(message, status_code=500 if self.retryable else 400, metadata=metadata)

    @classmethod
    def of(cls, error: TerminalError) -> AttemptFailure:
        metadata = error.metadata or {}
        retry_after = metadata.get("retry_after_s")
        throttled = metadata.get("throttled")
        budget = metadata.get("budget")
        ended_at = metadata.get("ended_at")
        return cls(
            retryable=metadata.get("retryable") == "true",
            repair_hint=metadata.get("repair_hint"),
            retry_after_s=float(retry_after) if retry_after else None,
            throttled=RateLimitAdvice.model_validate_json(throttled) if throttled else None,
            budget=Outcome(budget) if budget else None,
            ended_at=float(ended_at) if ended_at else None,
        )


async def _answer(call: CallInfo, ask: Callable[[], Awaitable[Answer[T]]]) -> Answer[T]:
    """Call the provider, mapping its failures to the journaled failure of this attempt."""
    try:
        return await ask()
    except InvalidAnswerError as exc:
        raise _invalid(call, str(exc)) from None
    except TransientProviderError as exc:
        delay = None if exc.retry_after is None else min(exc.retry_after, MAX_RETRY_AFTER).total_seconds()
        failure = AttemptFailure(retryable=True, retry_after_s=delay, throttled=exc.rate_limit)
        raise failure.error(f"{call.step.value}: {exc}") from None
    except PermitRefused as exc:
        raise AttemptFailure(retryable=True, budget=exc.outcome).error(f"{call.step.value}: {exc}") from None
    except PermanentProviderError as exc:
        raise AttemptFailure(retryable=False).error(f"{call.step.value}: {exc}") from None


def _invalid(call: CallInfo, problem: str) -> TerminalError:
    return AttemptFailure(retryable=True, repair_hint=problem).error(f"{call.step.value}: invalid answer: {problem}")


def _fact(step: Step, link: Link, usage: LLMUsage, attempt: int, started: float) -> StepFact:
    settings = get_settings()
    cost = None
    if link.kind != "code" and (
        settings.llm_price_prompt_per_1k is not None or settings.llm_price_completion_per_1k is not None
    ):
        cost = round(
            usage.prompt_tokens / 1000 * (settings.llm_price_prompt_per_1k or 0.0)
            + usage.completion_tokens / 1000 * (settings.llm_price_completion_per_1k or 0.0),
            8,
        )
    return StepFact(
        step=step.value,
        provider=link.provider,
        model=usage.model if link.kind != "code" else None,
        link=link.kind,
        response_id=usage.response_id,
        attempts=attempt,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=cost,
        ended_at=round(time.time(), 3),
    )


_NO_USAGE = LLMUsage()


async def extract_metrics(
    report: Report,
    link: Link = CODE,
    attempt: int = 1,
    repair_hint: str | None = None,
    permit: Permit | None = None,
) -> ExtractResult:
    started = time.perf_counter()
    text = report.message
    if link.kind == "code":
        return ExtractResult(
            metrics=offline.extract_metrics(text), fact=_fact(Step.EXTRACT, link, _NO_USAGE, 1, started)
        )
    quotes = candidates(text)
    if not quotes:
        # Nothing in the report reads as a quantity: there is nothing to quote, so no call is made.
        return ExtractResult(metrics=[], fact=_fact(Step.EXTRACT, CODE, _NO_USAGE, attempt, started))
    call = CallInfo(report.report_id, Step.EXTRACT, attempt, repair_hint, permit)
    provider = get_provider(link)
    answer = await _answer(call, lambda: provider.extract(text, quotes, call))
    items = [QuotedMetric(name=i.name, quote=i.quote, unit=i.unit) for i in answer.value.metrics]
    resolved = resolve(text, items)
    # Valid items are kept and the others dropped (and recorded): a repair asked for the whole answer
    # again repeats itself, so an answer is invalid only when it has nothing usable at all.
    if not resolved.metrics and resolved.rejected:
        problems = "; ".join(f"{d.quote!r} ({d.name}): {d.reason}" for d in resolved.rejected[:MAX_LISTED])
        raise _invalid(call, f"no item could be used: {problems}. Quote numbers exactly as the report writes them")
    try:
        check_grounded(resolved.metrics, text)
    except ValidationFailed as exc:
        raise _invalid(call, str(exc)) from None
    fact = _fact(Step.EXTRACT, link, answer.usage, attempt, started)
    return ExtractResult(metrics=resolved.metrics, fact=fact, dropped=resolved.rejected)


async def sort_metrics(
    report_id: str,
    metrics: list[Metric],
    link: Link = CODE,
    attempt: int = 1,
    repair_hint: str | None = None,
    permit: Permit | None = None,
) -> SortResult:
    started = time.perf_counter()
    if link.kind == "code":
        return SortResult(metrics=offline.sort_metrics(metrics), fact=_fact(Step.SORT, link, _NO_USAGE, 1, started))
    call = CallInfo(report_id, Step.SORT, attempt, repair_hint, permit)
    provider = get_provider(link)
    answer = await _answer(call, lambda: provider.order(metrics, call))
    try:
        ordered = apply_order(metrics, answer.value.order)
        check_sorted_permutation(metrics, ordered)
    except ValidationFailed as exc:
        raise _invalid(call, str(exc)) from None
    return SortResult(metrics=ordered, fact=_fact(Step.SORT, link, answer.usage, attempt, started))


async def format_table(
    report_id: str,
    metrics: list[Metric],
    link: Link = CODE,
    attempt: int = 1,
    repair_hint: str | None = None,
    permit: Permit | None = None,
) -> FormatResult:
    started = time.perf_counter()
    if link.kind == "code":
        table = offline.markdown_table(metrics)
        return FormatResult(table=table, fact=_fact(Step.FORMAT, link, _NO_USAGE, 1, started))
    call = CallInfo(report_id, Step.FORMAT, attempt, repair_hint, permit)
    provider = get_provider(link)
    answer = await _answer(call, lambda: provider.rows(metrics, call))
    try:
        check_rows(metrics, answer.value)
    except ValidationFailed as exc:
        raise _invalid(call, str(exc)) from None
    # The rows were checked against the metrics: render them in code, so the table is always well formed.
    table = offline.markdown_table(metrics)
    return FormatResult(table=table, fact=_fact(Step.FORMAT, link, answer.usage, attempt, started))


def request_size(step: Step, link: Link, repair_hint: str | None, **inputs: Any) -> tuple[int, int] | None:
    """What the next attempt of `step` on `link` would send to a model (bytes, messages), from the step's
    inputs, for its model's budget; None when the attempt calls no model."""
    if link.kind == "code":
        return None
    provider = get_provider(link)
    if step is Step.EXTRACT:
        report: Report = inputs["report"]
        quotes = candidates(report.message)
        if not quotes:
            return None  # extract_metrics makes no call
        call = CallInfo(report.report_id, step, repair_hint=repair_hint)
        return provider.request_size(call, text=report.message, quotes=quotes)
    call = CallInfo(inputs["report_id"], step, repair_hint=repair_hint)
    return provider.request_size(call, metrics=inputs["metrics"])


async def publish_table(record: TableRecord) -> Published:
    """Publish the table, unless it cannot fit: then say so (the handler dead-letters it)."""
    key, value = records.encode_key(record.report_id), records.encode(record)
    topic = get_settings().tables_topic
    max_bytes = await limits.record_bound(topic)
    if not records.fits(key, value, max_bytes):
        size = len(key) + len(value)
        return Published(refused=f"the table record has {size} bytes, over the {max_bytes} that {topic} takes")
    try:
        return Published(delivery=await (await get_publisher()).publish(topic, key, value))
    except RecordTooLarge as exc:
        return Published(refused=str(exc))


async def publish_dead_letter(letter: DeadLetter, raw: bytes | None) -> Delivery:
    """Publish the dead letter with as much of the original value as fits; a minimal one if the broker refuses it."""
    topic = get_settings().dead_letter_topic
    fitted, value = records.dead_letter_with_original(letter, raw, await limits.record_bound(topic))
    key = records.encode_key(letter.report_id)
    publisher = await get_publisher()
    try:
        return await publisher.publish(topic, key, value)
    except RecordTooLarge as exc:
        log.warning("%s; publishing a minimal dead letter for %s instead", exc, letter.report_id)
        return await publisher.publish(topic, key, records.encode(records.minimal(fitted)))
