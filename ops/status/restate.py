"""Restate's admin API: the SQL introspection queries `status` runs, and the client that runs them.

Everything is aggregated in SQL (GROUP BY, percentile_cont) and detail queries are LIMITed,
so the answer stays fast with many invocations.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import httpx

from ops.status.models import TARGET, StatusError
from worker.models import FALLBACK_MARKER, Step

TIMEOUT_S = 5.0
# In a cluster, a query fans out to every partition's leader; for a few seconds after a node dies
# or comes back some partitions have none ("expecting a partition store"). Queries only read, so
# a server error is asked again for this long before status gives up.
QUERY_RETRY_S = 20.0
_INVOCATION_ID = re.compile(r"^inv_[0-9A-Za-z]+$")


class _ServerError(StatusError):
    """A 5xx from the admin API: in a cluster, often a partition between leaders."""


class Restate:
    """Restate's admin API: SQL introspection and the subscription list."""

    def __init__(self, admin_url: str, timeout: float = TIMEOUT_S, retry_s: float = QUERY_RETRY_S) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._client = httpx.Client(base_url=self.admin_url, timeout=timeout)
        self._retry_s = retry_s

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StatusError(f"cannot reach Restate admin at {self.admin_url}: {exc}") from None
        if response.status_code >= 400:
            error = _ServerError if response.status_code >= 500 else StatusError
            raise error(
                f"Restate admin at {self.admin_url} answered {method} {path} with "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response

    def query(self, sql: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self._retry_s
        pause = 0.25
        while True:
            try:
                response = self._request("POST", "/query", json={"query": sql}, headers={"accept": "application/json"})
                return list(response.json()["rows"])
            except _ServerError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def subscription(self) -> dict[str, Any] | None:
        """The subscription whose sink is ReportChain/process, if any."""
        for sub in self._request("GET", "/subscriptions").json().get("subscriptions", []):
            if sub.get("sink") == f"service://{TARGET}":
                return dict(sub)
        return None


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_OF_TARGET = f"target = {_sql_str(TARGET)}"


def _window(seconds: int) -> str:
    return f"now() - INTERVAL '{seconds} seconds'"


def _age_ms(column: str) -> str:
    # Ages by the server's clock: now() is a nanosecond timestamp, columns are milliseconds.
    return f"CAST(now() AS BIGINT) / 1000000 - CAST({column} AS BIGINT)"


def counts_sql(window_s: int) -> str:
    return (
        "SELECT status, completion_result, count(*) AS n FROM sys_invocation "
        f"WHERE {_OF_TARGET} AND (status <> 'completed' OR completed_at >= {_window(window_s)}) "
        "GROUP BY status, completion_result"
    )


_DETAIL_COLUMNS = (
    "id, status, created_at, modified_at, retry_count, last_failure, last_failure_error_code, "
    f"last_failure_related_command_name, {_age_ms('created_at')} AS age_ms"
)


def oldest_sql() -> str:
    return (
        f"SELECT {_DETAIL_COLUMNS} FROM sys_invocation WHERE {_OF_TARGET} AND status <> 'completed' "
        "ORDER BY created_at LIMIT 1"
    )


def paused_sql(limit: int) -> str:
    return (
        f"SELECT {_DETAIL_COLUMNS} FROM sys_invocation WHERE {_OF_TARGET} AND status = 'paused' "
        f"ORDER BY modified_at LIMIT {int(limit)}"
    )


def _percentiles(expr: str) -> str:
    return ", ".join(
        f"percentile_cont({q}) WITHIN GROUP (ORDER BY {expr}) AS {name}"
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
    )


def step_latency_sql(window_s: int) -> str:
    names = ", ".join(_sql_str(s.value) for s in Step)
    # Each Run command paired with the entry right after it in the same journal (see module doc). A
    # hash join on (id, index + 1) costs a third of the equivalent LEAD() window, which sorts the journal.
    return (
        f"SELECT step, count(*) AS n, {_percentiles('ms')} FROM ("
        "SELECT c.name AS step, CAST(n.appended_at AS BIGINT) - CAST(c.appended_at AS BIGINT) AS ms "
        "FROM sys_journal c JOIN sys_journal n ON n.id = c.id AND n.index = c.index + 1 "
        "WHERE c.entry_type = 'Command: Run' AND n.entry_type = 'Notification: Run' "
        f"AND c.appended_at >= {_window(window_s)} AND c.name IN ({names})) "
        "GROUP BY step"
    )


def fallbacks_sql(window_s: int) -> str:
    # The chain journals a named zero-length sleep when a step moves on to its next link (worker/chain.py).
    return (
        "SELECT name, count(*) AS n FROM sys_journal WHERE entry_type = 'Command: Sleep' "
        f"AND name LIKE {_sql_str('%' + FALLBACK_MARKER + '%')} AND appended_at >= {_window(window_s)} "
        "GROUP BY name"
    )


def end_to_end_sql(window_s: int) -> str:
    ms = "CAST(completed_at AS BIGINT) - CAST(created_at AS BIGINT)"
    return (
        f"SELECT count(*) AS n, {_percentiles(ms)} FROM sys_invocation "
        f"WHERE {_OF_TARGET} AND status = 'completed' AND completed_at >= {_window(window_s)}"
    )


def _id_list(ids: Sequence[str]) -> str:
    return ", ".join(_sql_str(i) for i in ids if _INVOCATION_ID.match(i)) or "''"


def journals_sql(ids: Sequence[str]) -> str:
    listed = _id_list(ids)
    # The Input command (index 0) carries the Kafka headers and the record value: only it needs entry_json.
    return (
        "SELECT id, index, entry_type, entry_lite_json, CASE WHEN index = 0 THEN entry_json END AS input_json "
        f"FROM sys_journal WHERE id IN ({listed}) ORDER BY id, index"
    )


def events_sql(ids: Sequence[str]) -> str:
    # Failures and pauses are journal *events*: once the retry policy pauses an invocation, its
    # sys_invocation row no longer carries last_failure or retry_count, but the Paused event does.
    return (
        "SELECT id, appended_at, event_type, event_json FROM sys_journal_events "
        f"WHERE id IN ({_id_list(ids)}) ORDER BY id, appended_at"
    )
