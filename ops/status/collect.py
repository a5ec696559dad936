"""One status snapshot: Restate and Kafka read in parallel, put together."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from ops.status.budgets import budget_statuses, budgets_sql, waiting_sql
from ops.status.journal import (
    count_invocations,
    event_failure,
    fallback_counts,
    invocation_of,
    journal_position,
    percentiles_of,
)
from ops.status.kafka import kafka_status
from ops.status.models import TARGET, EventFailure, Invocation, JournalPosition, KafkaStatus, Percentiles, Status
from ops.status.restate import (
    Restate,
    counts_sql,
    end_to_end_sql,
    events_sql,
    fallbacks_sql,
    journals_sql,
    oldest_sql,
    paused_sql,
    step_latency_sql,
)
from worker.models import Step
from worker.settings import KafkaProperties, Settings

log = logging.getLogger("ops.status")


class Options(BaseModel):
    model_config = ConfigDict(frozen=True)

    admin_url: str
    window: timedelta = timedelta(hours=1)
    limit: int = 10
    kafka: KafkaProperties
    tables_topic: str
    dlq_topic: str
    reports_topic: str
    group_id: str
    """Used when no subscription to ReportChain/process is registered."""

    @classmethod
    def of(cls, settings: Settings, **choices: Any) -> Options:
        """The settings' addresses, topics and group, then the command line's `choices`."""
        return cls.model_validate(
            {
                "admin_url": settings.restate_admin_url,
                "kafka": settings.kafka,
                "tables_topic": settings.tables_topic,
                "dlq_topic": settings.dead_letter_topic,
                "reports_topic": settings.reports_topic,
                "group_id": settings.subscription_group_id,
                **choices,
            }
        )


def _subscription_source(subscription: Mapping[str, Any] | None, options: Options) -> tuple[str, str, str | None]:
    """(group id, input topic, subscription id), from the registered subscription when there is one."""
    if subscription is None:
        return options.group_id, options.reports_topic, None
    group = str((subscription.get("options") or {}).get("group.id") or options.group_id)
    topic = str(subscription.get("source", "")).rsplit("/", 1)[-1] or options.reports_topic
    return group, topic, str(subscription.get("id"))


def collect(options: Options) -> Status:
    """One status snapshot. Restate and Kafka are read in parallel. Raises StatusError."""
    window_s = max(1, int(options.window.total_seconds()))
    since_ms = int((time.time() - window_s) * 1000)
    restate = Restate(options.admin_url)
    try:
        with ThreadPoolExecutor(max_workers=6, thread_name_prefix="status") as pool:

            def sql(text: str) -> Future[list[dict[str, Any]]]:
                return pool.submit(restate.query, text)

            def kafka() -> KafkaStatus:
                group, topic, sub_id = _subscription_source(restate.subscription(), options)
                return kafka_status(
                    options.kafka.client_config(),
                    tables_topic=options.tables_topic,
                    dlq_topic=options.dlq_topic,
                    reports_topic=topic,
                    group_id=group,
                    subscription_id=sub_id,
                    since_ms=since_ms,
                )

            kafka_future = pool.submit(kafka)
            counts, oldest, paused = sql(counts_sql(window_s)), sql(oldest_sql()), sql(paused_sql(options.limit))
            steps, end_to_end = sql(step_latency_sql(window_s)), sql(end_to_end_sql(window_s))
            fallbacks = sql(fallbacks_sql(window_s))
            budgets, waiting = sql(budgets_sql()), sql(waiting_sql(TARGET))
            detail_ids = [str(r["id"]) for r in oldest.result() + paused.result()]
            events = sql(events_sql(detail_ids)) if detail_ids else None
            journals = restate.query(journals_sql(detail_ids)) if detail_ids else []
            details = _Details(journals, events.result() if events else [])
            by_step = {str(r["step"]): percentiles_of(r) for r in steps.result()}
            e2e_rows = end_to_end.result()
            status = Status(
                generated_at=datetime.now(UTC),
                window_seconds=window_s,
                admin_url=restate.admin_url,
                invocations=count_invocations(counts.result()),
                oldest_in_flight=details.of(oldest.result())[0] if oldest.result() else None,
                paused=details.of(paused.result()),
                step_latency_ms={s.value: by_step.get(s.value, Percentiles()) for s in Step},
                fallbacks=fallback_counts(fallbacks.result()),
                end_to_end_ms=percentiles_of(e2e_rows[0] if e2e_rows else None),
                waiting_for_budget=int((waiting.result() or [{}])[0].get("n") or 0),
                budgets=budget_statuses(budgets.result(), time.time()),
                kafka=kafka_future.result(),
            )
    finally:
        restate.close()
    return status


class _Details:
    """Journal entries and events of the invocations shown in detail, by invocation id."""

    def __init__(self, journals: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> None:
        self.journals = _by_id(journals)
        self.events = _by_id(events)

    def of(self, rows: Sequence[Mapping[str, Any]]) -> list[Invocation]:
        return [self._one(r) for r in rows]

    def _one(self, row: Mapping[str, Any]) -> Invocation:
        invocation_id = str(row["id"])
        try:
            position = journal_position(invocation_id, self.journals.get(invocation_id, []))
            failure = event_failure(self.events.get(invocation_id, []))
        except Exception as exc:  # noqa: BLE001 - an odd journal costs its details, never the status
            log.warning("cannot read the journal of %s: %s", invocation_id, type(exc).__name__)
            position, failure = JournalPosition(), EventFailure()
        return invocation_of(row, position, failure)


def _by_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["id"]), []).append(row)
    return grouped
