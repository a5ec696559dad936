"""What `report-status` reports, as pydantic models (the `--json` output is their dump)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

SERVICE, HANDLER = "ReportChain", "process"
TARGET = f"{SERVICE}/{HANDLER}"
LAG_NOTE = (
    "lag counts records not yet in Restate's log (Restate commits an offset once the record is durably "
    "in its log, not when the handler finishes); the processing backlog is the in-flight count"
)


class StatusError(RuntimeError):
    """Restate or Kafka could not be read; the message names the address."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class InvocationCounts(_Model):
    pending: int = 0
    scheduled: int = 0
    ready: int = 0
    running: int = 0
    backing_off: int = 0
    suspended: int = 0
    paused: int = 0
    completed_success: int = 0
    completed_failure: int = 0
    other: dict[str, int] = {}
    """Statuses this tool does not know (a newer restate-server), by name."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def in_flight(self) -> int:
        known = (self.pending, self.scheduled, self.ready, self.running, self.backing_off, self.suspended, self.paused)
        return sum(known) + sum(self.other.values())


class Invocation(_Model):
    """One invocation still in flight, with where it is."""

    id: str
    status: str
    report_id: str | None = None
    source: str | None = None
    """topic/partition/offset of the input record."""
    created_at: datetime
    modified_at: datetime | None = None
    paused_at: datetime | None = None
    age_seconds: float
    attempts: int | None = None
    """Attempts so far (Restate's retry_count); null once the retry policy has paused the invocation."""
    step: str | None = None
    """The step it is on: the step started and not finished (journal), else the step of the last failure."""
    completed_steps: list[str] = []
    last_failure: str | None = None
    last_failure_code: str | None = None


class Percentiles(_Model):
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class TopicRecords(_Model):
    topic: str
    records: int
    """Records the topic retains (end offset minus start offset, over partitions)."""
    in_window: int
    """Records written inside the window (by record timestamp)."""


class PartitionLag(_Model):
    partition: int
    committed: int | None
    end: int
    lag: int


class ConsumerGroupLag(_Model):
    group_id: str
    topic: str
    subscription_id: str | None
    partitions: list[PartitionLag]
    total_lag: int
    note: str = LAG_NOTE


class KafkaStatus(_Model):
    bootstrap_servers: str
    tables: TopicRecords
    dead_letters: TopicRecords
    consumer_group: ConsumerGroupLag


class BudgetStatus(_Model):
    """One model's LLM budget (worker/budget): what it holds now and what it has done."""

    key: str
    """provider|endpoint|model"""
    shards: int
    requests_in_window: int
    """Calls occupying the budget: sent in its window, or in flight."""
    prompt_tokens_in_window: int
    completion_tokens_in_window: int
    in_flight: int
    """Granted calls not settled yet."""
    granted_for_later: int
    """Calls granted for the moment capacity frees up, sleeping until then."""
    share: float
    """The share of the configured budget in effect (below 1 after 429s, recovering)."""
    paused_seconds: float
    """Seconds left in a pause after a 429."""
    granted: int
    told_to_wait: int
    throttled: int
    """429s answered to calls with this budget."""
    last_throttled_at: datetime | None
    abandoned: int
    """Grants returned by an attempt a crash interrupted."""
    expired: int
    """Grants never settled (their invocation ended without it)."""


class Status(_Model):
    generated_at: datetime
    window_seconds: int
    admin_url: str
    target: str = TARGET
    invocations: InvocationCounts
    oldest_in_flight: Invocation | None
    paused: list[Invocation]
    """The paused invocations, oldest pause first, at most --limit of them (the count is in invocations)."""
    step_latency_ms: dict[str, Percentiles]
    fallbacks: dict[str, dict[str, int]] = {}
    """Per step, how often it moved on to its next link inside the window, by link (fallback model, code)."""
    end_to_end_ms: Percentiles
    """Created -> completed, for invocations completed inside the window."""
    waiting_for_budget: int = 0
    """Invocations in flight sleeping until their model's budget has room (worker/budget)."""
    budgets: list[BudgetStatus] = []
    kafka: KafkaStatus

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class JournalPosition(_Model):
    step: str | None = None
    completed_steps: list[str] = []
    report_id: str | None = None
    source: str | None = None


class EventFailure(_Model):
    """The last failure recorded in an invocation's journal events."""

    message: str | None = None
    code: str | None = None
    step: str | None = None
    paused_at: datetime | None = None
