"""The small interface every LLM provider implements, and the errors it raises.

A provider answers one step at a time and reports what the answer cost. It does
not retry: Restate owns retries (docs/design.md, "Guarantees" 5). It raises
- `TransientProviderError` for failures worth retrying (connection, timeout, 5xx),
  optionally with `retry_after` when the server advised a delay (429);
- `PermanentProviderError` for failures that no retry can fix (400/401/403/404/422).
Invalid model output is not the provider's concern: steps validate answers
(worker/validation.py, worker/quotes.py) and ask again with a repair hint.
Code that does a step without a model (the `code` link of a step's chain) is not a
provider: worker/providers/offline.py holds those functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from worker.budget.permit import Permit
from worker.budget.window import RateLimitAdvice
from worker.models import LLMUsage, Metric, Step
from worker.prompts import OrderAnswer, QuotesAnswer, RowItem

T = TypeVar("T")


@dataclass(frozen=True)
class Answer(Generic[T]):
    value: T
    usage: LLMUsage


@dataclass(frozen=True)
class CallInfo:
    """Context for one provider call."""

    report_id: str
    step: Step
    attempt: int = 1
    repair_hint: str | None = None
    """The validation error of the previous answer, quoted back to the model."""
    permit: Permit | None = None
    """The model's budget granted this call: spent right before the request is sent (worker/budget)."""


class ProviderError(Exception):
    """Base of provider failures. Messages must never contain secrets."""


class TransientProviderError(ProviderError):
    def __init__(
        self, message: str, retry_after: timedelta | None = None, rate_limit: RateLimitAdvice | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limit = rate_limit
        """Set for a 429 rate limit: what the server said about its limits."""


class PermanentProviderError(ProviderError):
    pass


class InvalidAnswerError(ProviderError):
    """The provider's answer could not be parsed into the expected shape (retry with a repair hint)."""


class Provider(Protocol):
    """An LLM behind the step contracts of worker/prompts.py (one implementation: OpenAI-compatible APIs)."""

    @property
    def name(self) -> str: ...

    def model_for(self, step: Step) -> str: ...

    def request_size(
        self,
        call: CallInfo,
        *,
        text: str = "",
        quotes: list[str] | None = None,
        metrics: list[Metric] | None = None,
    ) -> tuple[int, int]:
        """The UTF-8 size of what the call would send (messages and response schema), and its message count:
        what a budget reserves before the call (worker/budget)."""
        ...

    async def extract(self, text: str, quotes: list[str], call: CallInfo) -> Answer[QuotesAnswer]:
        """Metrics as quoted items; `quotes` are the quantities in the text, to choose from."""
        ...

    async def order(self, metrics: list[Metric], call: CallInfo) -> Answer[OrderAnswer]:
        """The metrics' letters, largest value first."""
        ...

    async def rows(self, metrics: list[Metric], call: CallInfo) -> Answer[list[RowItem]]:
        """One table row per metric, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections (called once, at shutdown, on the loop that made the calls)."""
        ...
