"""The LLM budgets (worker/budget) as `status` shows them: what each model's budget holds now, how many
invocations wait for one, and the 429s that still happened.

Each budget is the state of one `LLMBudget` virtual object (or of its shards), read through Restate's
SQL `state` table; the invocations waiting are those whose journal ends in the sleep the handler names
`Wait for LLM budget`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ops.status.models import BudgetStatus
from worker.budget import OBJECT, STATE, WAIT_NAME
from worker.budget.window import BudgetState, at, usage_of

log = logging.getLogger("ops.status")
SHARD_MARK = "#"


def budgets_sql() -> str:
    return f"SELECT service_key, value_utf8 FROM state WHERE service_name = '{OBJECT}' AND key = '{STATE}'"


def waiting_sql(target: str) -> str:
    """In-flight invocations of `target` whose last journal entry is the budget's sleep: they wait for budget."""
    return (
        "SELECT count(*) AS n FROM sys_journal j JOIN ("
        "SELECT l.id, max(l.index) AS last FROM sys_journal l JOIN sys_invocation i ON i.id = l.id "
        f"WHERE i.target = '{target}' AND i.status <> 'completed' GROUP BY l.id"
        ") m ON j.id = m.id AND j.index = m.last "
        f"WHERE j.entry_type = 'Command: Sleep' AND j.name = '{WAIT_NAME}'"
    )


def budget_statuses(rows: Sequence[Mapping[str, Any]], now: float) -> list[BudgetStatus]:
    """One entry per model budget (its shards summed), as of `now` (epoch seconds)."""
    shards: dict[str, list[BudgetState]] = {}
    for row in rows:
        key = str(row.get("service_key", ""))
        try:
            state = BudgetState.model_validate_json(str(row.get("value_utf8") or "{}"))
        except ValidationError:
            log.warning("status: unreadable LLMBudget state of %s", key)
            continue
        shards.setdefault(key.split(SHARD_MARK, 1)[0], []).append(at(state, now))
    return [_status(key, states, now) for key, states in sorted(shards.items())]


def _status(key: str, states: list[BudgetState], now: float) -> BudgetStatus:
    usage = [usage_of(s) for s in states]
    counters = [s.counters for s in states]
    throttled_at = [c.last_throttled_at for c in counters if c.last_throttled_at is not None]
    paused = max(s.adapt.paused_until for s in states) - now
    return BudgetStatus(
        key=key,
        shards=len(states),
        requests_in_window=sum(u.requests for u in usage),
        prompt_tokens_in_window=sum(u.prompt_tokens for u in usage),
        completion_tokens_in_window=sum(u.completion_tokens for u in usage),
        in_flight=sum(1 for s in states for o in s.outstanding if o.granted_at <= now),
        granted_for_later=sum(1 for s in states for o in s.outstanding if o.granted_at > now),
        share=round(min(s.adapt.factor_at(now) for s in states), 3),
        paused_seconds=round(max(0.0, paused), 1),
        granted=sum(c.granted for c in counters),
        told_to_wait=sum(c.denied for c in counters),
        throttled=sum(c.throttled for c in counters),
        last_throttled_at=datetime.fromtimestamp(max(throttled_at), UTC) if throttled_at else None,
        abandoned=sum(c.abandoned for c in counters),
        expired=sum(c.expired for c in counters),
    )
