"""Pydantic models at the worker's boundaries: the input report, each step's
journaled output, and the records published to Kafka.

Everything a step returns is journaled by Restate, so these models are also the
journal's schema: keep them small, explicit and free of secrets.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base for every boundary model: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Step(StrEnum):
    """The journaled steps, named as they appear in the Restate UI."""

    INPUT = "Input message"
    EXTRACT = "Extract metrics"
    SORT = "Sort metrics"
    FORMAT = "Format as table"
    PUBLISH = "Publish table"
    DEAD_LETTER = "Publish dead letter"

    @property
    def short(self) -> str:
        """A short, env-var friendly name: input, extract, sort, format, publish, dead_letter."""
        return self.name.lower()


class DeadLetterReason(StrEnum):
    """Why a report ended on the dead-letter topic: the `reason` code readers and replay select by."""

    NULL_VALUE = "null_value"
    """The record has no value (a client that sends none; Restate hands a tombstone over as empty)."""
    INVALID_UTF8 = "invalid_utf8"
    EMPTY = "empty"
    """Empty or whitespace-only value or message."""
    INVALID_SCHEMA = "invalid_schema"
    """JSON, but not a report object (`{"id"?: str, "message": str}`)."""
    TOO_LARGE = "too_large"
    """The message is over MAX_MESSAGE_BYTES."""
    NO_METRICS = "no_metrics"
    """Extraction found nothing to put in a table."""
    STEP_FAILED = "step_failed"
    """An LLM step used up its attempts, or failed in a way no retry can fix (an unexpected exception too)."""
    LONE_SURROGATE = "lone_surrogate"
    """The JSON spells a lone UTF-16 surrogate ("\\ud800") somewhere: no UTF-8 writer can output it."""
    ID_TOO_LONG = "id_too_long"
    """The id is over MAX_REPORT_ID_BYTES."""
    OUTPUT_TOO_LARGE = "output_too_large"
    """The table does not fit the tables topic's record size limit."""
    CANCELLED = "cancelled"
    """Someone cancelled the invocation (UI, CLI, admin API) before it finished."""
    NO_SOURCE = "no_source"
    """The invocation did not come from a Kafka record (or, verified, not from the one it claims to be)."""


OutcomeKind = Literal["table", "dead_letter"]
"""How a report ended: a table on the tables topic, or a record on the dead-letter topic."""


class Source(Model):
    """Where a report came from. For Kafka records: the record's coordinates."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None
    key: str | None = Field(default=None, description="The record key, decoded as UTF-8 when possible.")


class SourceRef(Model):
    """The coordinates of one Kafka record: what a report IS (its `id` is only a label)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Report(Model):
    """A validated input report."""

    report_id: str = Field(min_length=1)
    message: str = Field(min_length=1)
    source: Source
    replay_of: SourceRef | None = Field(
        default=None, description="For a report sent again by the replay tool: the record it first arrived as."
    )


class Metric(Model):
    name: str = Field(min_length=1)
    value: float
    unit: str = ""


class Metrics(Model):
    """The structured output of `Extract metrics` and `Sort metrics`."""

    metrics: list[Metric]


class LLMUsage(Model):
    """What one provider answer cost. Offline answers have no response id or tokens."""

    model: str | None = None
    response_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


LinkKind = Literal["primary", "fallback", "code"]
FALLBACK_MARKER = ": fallback to "
"""Journaled when a step moves on to its next link, as "<step>: fallback to <kind>": a zero-length durable
sleep, so it shows in order in the Restate UI, and `report-status` counts fallbacks per step from it."""


class PassedOver(Model):
    """A link of a step's fallback chain that did not produce its result, and why."""

    link: LinkKind
    provider: str
    model: str | None = None
    attempts: int
    error: str


class StepFact(Model):
    """One line of the per-report ledger: how a step was produced."""

    step: str
    provider: str = Field(description='Who produced the result: "openai", "local", or "offline" for code.')
    model: str | None = None
    link: LinkKind = Field(default="primary", description="Which link of the step's chain produced it.")
    passed_over: list[PassedOver] = Field(default_factory=list, description="Earlier links that failed, and why.")
    response_id: str | None = None
    attempts: int = 1
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    ended_at: float | None = Field(default=None, description="When the step's result was ready (epoch seconds).")
    throttled: int = Field(default=0, description="Answers of 429 (rate limited) to this step's calls.")
    budget_wait_s: float = Field(default=0.0, description="Time this step waited for its model's budget.")


class DroppedItem(Model):
    """An extracted item that could not be used (its quote is not in the report, ...): dropped, not published."""

    name: str
    quote: str
    reason: str


class ExtractResult(Model):
    metrics: list[Metric]
    fact: StepFact
    dropped: list[DroppedItem] = Field(default_factory=list)


class SortResult(Model):
    metrics: list[Metric]
    fact: StepFact


class FormatResult(Model):
    table: str
    fact: StepFact


class Delivery(Model):
    """Where the broker stored a published record (from its delivery report)."""

    topic: str
    partition: int
    offset: int


class Ledger(Model):
    """Per-report accounting carried in the output record."""

    steps: list[StepFact]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None = None

    @classmethod
    def of(cls, facts: list[StepFact]) -> Ledger:
        prompt = sum(f.prompt_tokens for f in facts)
        completion = sum(f.completion_tokens for f in facts)
        costs = [f.cost_usd for f in facts if f.cost_usd is not None]
        return cls(
            steps=facts,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=round(sum(costs), 8) if costs else None,
        )


class TableRecord(Model):
    """The value published on the tables topic (key = report_id)."""

    report_id: str
    table: str
    metrics: list[Metric]
    source: Source
    invocation_id: str
    ledger: Ledger
    dropped: list[DroppedItem] = Field(
        default_factory=list, description="Items the model extracted that the quote rules refused: not in the table."
    )
    replay_of: SourceRef | None = None


class CompletedSteps(Model):
    """Outputs of the steps that finished before a report was dead-lettered."""

    extract: ExtractResult | None = None
    sort: SortResult | None = None
    format: FormatResult | None = None


class DeadLetter(Model):
    """The value published on the dead-letter topic (key = report_id)."""

    report_id: str
    reason: DeadLetterReason = Field(
        description="Short machine-readable code, e.g. empty, invalid_schema, step_failed."
    )
    error: str = Field(description="Human-readable explanation.")
    failed_step: str | None = None
    completed: CompletedSteps = CompletedSteps()
    source: Source
    invocation_id: str
    original_value: str | None = Field(default=None, description="The input value as text, or base64 when not UTF-8.")
    original_encoding: str = Field(default="utf-8", description="utf-8, base64, or none for a null value.")
    original_bytes: int | None = Field(default=None, description="Length of the whole input value, in bytes.")
    original_sha256: str | None = Field(default=None, description="sha256 of the whole input value (hex).")
    shortened: list[str] = Field(
        default=[],
        description="Fields cut short or left out so the record fits the topic's size limit, "
        "e.g. original_value (then a prefix of it), completed, source.key.",
    )
    replay_of: SourceRef | None = None


class Published(Model):
    """The journaled result of `Publish table`: where the table went, or why the broker refused it."""

    delivery: Delivery | None = None
    refused: str | None = Field(default=None, description="The broker's error when the record was too large.")


class Rejection(Model):
    """Why an input can never become a report (the original value is kept out of the journal)."""

    report_id: str
    reason: DeadLetterReason
    error: str
    source: Source
    replay_of: SourceRef | None = None


class Outcome(Model):
    """What the handler returns: visible in the Restate UI as the invocation's result."""

    report_id: str
    outcome: OutcomeKind
    reason: DeadLetterReason | None = None
    delivery: Delivery
