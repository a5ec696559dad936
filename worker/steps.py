"""The chain's steps as plain async functions: pydantic models in, pydantic models out.

Each call of an LLM step is ONE attempt, run by the handler (worker/service.py)
inside its own `ctx.run_typed`. It either returns the validated result (nothing
invalid is ever journaled) or raises `TerminalError` describing the failure
(`AttemptFailure` in its metadata). Restate journals that failure too, and the
handler decides: try again after a durable sleep, or give up and dead-letter.
Journaling failed attempts keeps a crash from eating the attempt budget: an
attempt a crash interrupted leaves nothing in the journal and simply runs again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel
from restate.exceptions import TerminalError

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
    Provider,
    TransientProviderError,
)
from worker.publisher import get_publisher
from worker.settings import get_settings
from worker.validation import ValidationFailed, check_grounded, check_sorted_permutation, check_table

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

    def error(self, message: str) -> TerminalError:
        metadata = {"retryable": "true" if self.retryable else "false"}
        if self.repair_hint is not None:
            metadata["repair_hint"] = self.repair_hint
        if self.retry_after_s is not None:
            metadata["retry_after_s"] = f"{self.retry_after_s:.3f}"
        return TerminalError(message, status_code=500 if self.retryable else 400, metadata=metadata)

    @classmethod
    def of(cls, error: TerminalError) -> AttemptFailure:
        metadata = error.metadata or {}
        retry_after = metadata.get("retry_after_s")
        return cls(
            retryable=metadata.get("retryable") == "true",
            repair_hint=metadata.get("repair_hint"),
            retry_after_s=float(retry_after) if retry_after else None,
        )


async def _ask(
    call: CallInfo,
    ask: Callable[[Provider, CallInfo], Awaitable[Answer[T]]],
    validate: Callable[[T], None],
) -> tuple[T, StepFact]:
    """One attempt: call the provider, validate the answer, and account for it."""
    provider = get_provider()
    step = call.step
    started = time.perf_counter()
    try:
        answer = await ask(provider, call)
        validate(answer.value)
    except (ValidationFailed, InvalidAnswerError) as exc:
        raise AttemptFailure(retryable=True, repair_hint=str(exc)).error(
            f"{step.value}: invalid answer: {exc}"
        ) from None
    except TransientProviderError as exc:
        delay = None if exc.retry_after is None else min(exc.retry_after, MAX_RETRY_AFTER).total_seconds()
        raise AttemptFailure(retryable=True, retry_after_s=delay).error(f"{step.value}: {exc}") from None
    except PermanentProviderError as exc:
        raise AttemptFailure(retryable=False).error(f"{step.value}: {exc}") from None
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


async def extract_metrics(report: Report, attempt: int = 1, repair_hint: str | None = None) -> ExtractResult:
    call = CallInfo(report.report_id, Step.EXTRACT, attempt, repair_hint)
    metrics, fact = await _ask(
        call,
        lambda provider, c: provider.extract(report.message, c),
        lambda answer: check_grounded(answer, report.message),
    )
    return ExtractResult(metrics=metrics, fact=fact)


async def sort_metrics(
    report_id: str, metrics: list[Metric], attempt: int = 1, repair_hint: str | None = None
) -> SortResult:
    call = CallInfo(report_id, Step.SORT, attempt, repair_hint)
    ordered, fact = await _ask(
        call,
        lambda provider, c: provider.sort(metrics, c),
        lambda answer: check_sorted_permutation(metrics, answer),
    )
    return SortResult(metrics=ordered, fact=fact)


async def format_table(
    report_id: str, metrics: list[Metric], attempt: int = 1, repair_hint: str | None = None
) -> FormatResult:
    call = CallInfo(report_id, Step.FORMAT, attempt, repair_hint)
    table, fact = await _ask(
        call,
        lambda provider, c: provider.format_table(metrics, c),
        lambda answer: check_table(metrics, answer),
    )
    return FormatResult(table=table, fact=fact)


def _encode(record: TableRecord | DeadLetter) -> bytes:
    # Compact, key-sorted JSON: a retried publish yields a byte-identical record.
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


async def publish_table(record: TableRecord) -> Delivery:
    return await get_publisher().publish(get_settings().tables_topic, record.report_id, _encode(record))


async def publish_dead_letter(letter: DeadLetter) -> Delivery:
    return await get_publisher().publish(get_settings().dead_letter_topic, letter.report_id, _encode(letter))
