"""The chain's steps as plain async functions: pydantic models in, pydantic models out.

The Restate handler (worker/service.py) runs each one inside `ctx.run_typed`, so
a finished step is journaled and never runs again. A step validates the
provider's answer *before* returning it, so nothing invalid is ever journaled,
and translates failures into what Restate understands:
- a plain exception: retry with the step's backoff, bounded by its max attempts;
- `RetryableError(retry_after=...)`: retry after the delay the server advised;
- `TerminalError`: give up now (the handler then dead-letters the report).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from restate.exceptions import RetryableError, TerminalError

from worker import faults
from worker.attempts import attempts
from worker.models import (
    DeadLetter,
    Delivery,
    ExtractResult,
    FormatResult,
    LLMUsage,
    Metric,
    Report,
    SortResult,
    Step,
    StepFact,
    TableRecord,
)
from worker.providers import get_provider
from worker.providers.base import (
    Answer,
    CallInfo,
    InvalidAnswerError,
    PermanentProviderError,
    TransientProviderError,
)
from worker.publisher import get_publisher
from worker.settings import get_settings
from worker.validation import ValidationFailed, check_grounded, check_sorted_permutation, check_table

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_RETRY_AFTER = timedelta(minutes=5)


class StepAttemptFailed(Exception):
    """One attempt of a step failed in a way worth retrying."""


async def _ask(
    invocation_id: str,
    report_id: str,
    step: Step,
    ask: Callable[[CallInfo], Awaitable[Answer[T]]],
    validate: Callable[[T], None],
) -> tuple[T, StepFact]:
    """Call the provider once, validate the answer, and account for it."""
    provider = get_provider()
    call = attempts.begin(invocation_id, report_id, step)
    started = time.perf_counter()
    try:
        answer = await ask(call)
        validate(answer.value)
    except (ValidationFailed, InvalidAnswerError) as exc:
        # Ask again with the error quoted back to the model; this counts as an attempt.
        attempts.fail(invocation_id, step, repair_hint=str(exc))
        raise StepAttemptFailed(f"{step.value}: invalid answer: {exc}") from None
    except TransientProviderError as exc:
        attempts.fail(invocation_id, step)
        if exc.retry_after is not None:
            # Honour the server's advice, within reason: a bogus hour-long Retry-After must not park a report.
            delay = min(exc.retry_after, MAX_RETRY_AFTER)
            raise RetryableError(f"{step.value}: {exc}", retry_after=delay) from None
        raise StepAttemptFailed(f"{step.value}: {exc}") from None
    except PermanentProviderError as exc:
        attempts.forget(invocation_id, step)
        raise TerminalError(f"{step.value}: {exc}") from None
    attempts.forget(invocation_id, step)
    fact = _fact(step, provider.name, answer.usage, call.attempt, (time.perf_counter() - started) * 1000)
    return answer.value, fact


def _fact(step: Step, provider: str, usage: LLMUsage, attempt: int, latency_ms: float) -> StepFact:
    settings = get_settings()
    cost = None
    if settings.llm_price_prompt_per_1k is not None or settings.llm_price_completion_per_1k is not None:
        cost = round(
            usage.prompt_tokens / 1000 * (settings.llm_price_prompt_per_1k or 0.0)
            + usage.completion_tokens / 1000 * (settings.llm_price_completion_per_1k or 0.0),
            8,
        )
    return StepFact(
        step=step.value,
        provider=provider,
        model=usage.model,
        response_id=usage.response_id,
        attempts=attempt,
        latency_ms=round(latency_ms, 2),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=cost,
    )


async def extract_metrics(report: Report, invocation_id: str) -> ExtractResult:
    provider = get_provider()
    metrics, fact = await _ask(
        invocation_id,
        report.report_id,
        Step.EXTRACT,
        lambda call: provider.extract(report.message, call),
        lambda answer: check_grounded(answer, report.message),
    )
    return ExtractResult(metrics=metrics, fact=fact)


async def sort_metrics(report_id: str, metrics: list[Metric], invocation_id: str) -> SortResult:
    provider = get_provider()
    ordered, fact = await _ask(
        invocation_id,
        report_id,
        Step.SORT,
        lambda call: provider.sort(metrics, call),
        lambda answer: check_sorted_permutation(metrics, answer),
    )
    return SortResult(metrics=ordered, fact=fact)


async def format_table(report_id: str, metrics: list[Metric], invocation_id: str) -> FormatResult:
    provider = get_provider()
    table, fact = await _ask(
        invocation_id,
        report_id,
        Step.FORMAT,
        lambda call: provider.format_table(metrics, call),
        lambda answer: check_table(metrics, answer),
    )
    return FormatResult(table=table, fact=fact)


def _encode(record: TableRecord | DeadLetter) -> bytes:
    # Compact, key-sorted JSON: a retried publish yields a byte-identical record.
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


async def publish_table(record: TableRecord) -> Delivery:
    delivery = await get_publisher().publish(get_settings().tables_topic, record.report_id, _encode(record))
    faults.after_publish(record.report_id)  # off unless FAULT_CRASH_AFTER_PUBLISH is set (tests, chaos runs)
    return delivery


async def publish_dead_letter(letter: DeadLetter) -> Delivery:
    return await get_publisher().publish(get_settings().dead_letter_topic, letter.report_id, _encode(letter))
