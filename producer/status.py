"""`report-status` (`python -m producer.status`): how is the pipeline doing, and where is work stuck?

Two sources, both read-only:

- Restate's SQL introspection (`POST <admin>/query`): invocations of `ReportChain/process` by
  status, the oldest one still in flight, every paused one with its last failure, and per-step
  latency percentiles from the journal. Everything is aggregated in SQL (GROUP BY, percentile_cont)
  and detail queries are LIMITed, so the answer stays fast with many invocations.
- Kafka: records on the tables and dead-letter topics (admin client, end offsets), and the lag of
  the subscription's consumer group on the input topic (its committed offsets vs. end offsets).

Counting rules: an invocation still in flight is counted whatever its age; a completed one when it
completed inside the window (`--since`). Kafka record counts are what the topics retain.

Step latency: Restate appends a step's `Command: Run` entry when the worker starts the step and
the matching `Notification: Run` when its result is durable, each with `appended_at` (ms). The
latency of a step is the time between those two consecutive journal entries (index i and i + 1):
the worker's time including every retry of that step (a publish that waited for a paused invocation
to be resumed counts the pause too). The notification directly follows its command in handlers that
await each step before starting the next, as ReportChain does. Steps still running are not counted.

Exit codes: 0 ok; 1 Restate or Kafka could not be reached (the message names the address);
2 usage error. With --watch, Ctrl-C exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from pydantic import BaseModel, ConfigDict, computed_field

from producer.durations import parse_duration
from producer.kafka import client_config, describe
from worker.intake import read_report
from worker.models import Step
from worker.settings import kafka_properties

log = logging.getLogger("producer.status")
librdkafka_log = logging.getLogger("producer.status.librdkafka")

SERVICE, HANDLER = "ReportChain", "process"
TARGET = f"{SERVICE}/{HANDLER}"
DEFAULT_ADMIN_URL = "http://127.0.0.1:9070"
DEFAULT_GROUP_ID = "report-chain"
TIMEOUT_S = 5.0
# Statuses sys_invocation reports for an invocation that has not completed (restate-server 1.7).
IN_FLIGHT = ("pending", "scheduled", "ready", "running", "backing-off", "suspended", "paused")
LAG_NOTE = (
    "lag counts records not yet in Restate's log (Restate commits an offset once the record is durably "
    "in its log, not when the handler finishes); the processing backlog is the in-flight count"
)
_INVOCATION_ID = re.compile(r"^inv_[0-9A-Za-z]+$")


class StatusError(RuntimeError):
    """Restate or Kafka could not be read; the message names the address."""


# --- the report ---------------------------------------------------------------------------------


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
    end_to_end_ms: Percentiles
    """Created -> completed, for invocations completed inside the window."""
    kafka: KafkaStatus

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- Restate --------------------------------------------------------------------------------------


class Restate:
    """Restate's admin API: SQL introspection and the subscription list."""

    def __init__(self, admin_url: str, timeout: float = TIMEOUT_S) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._client = httpx.Client(base_url=self.admin_url, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise StatusError(f"cannot reach Restate admin at {self.admin_url}: {exc}") from None
        if response.status_code >= 400:
            raise StatusError(
                f"Restate admin at {self.admin_url} answered {method} {path} with "
                f"{response.status_code}: {response.text[:300]}"
            )
        return response

    def query(self, sql: str) -> list[dict[str, Any]]:
        response = self._request("POST", "/query", json={"query": sql}, headers={"accept": "application/json"})
        return list(response.json()["rows"])

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


def count_invocations(rows: Sequence[Mapping[str, Any]]) -> InvocationCounts:
    counts: dict[str, int] = {}
    other: dict[str, int] = {}
    for row in rows:
        status, n = str(row.get("status")), int(row.get("n") or 0)
        if status == "completed":
            key = "completed_failure" if row.get("completion_result") == "failure" else "completed_success"
        elif status in IN_FLIGHT:
            key = status.replace("-", "_")
        else:
            other[status] = other.get(status, 0) + n
            continue
        counts[key] = counts.get(key, 0) + n
    return InvocationCounts(**counts, other=other)


def _as_percentiles(row: Mapping[str, Any] | None) -> Percentiles:
    if not row or not row.get("n"):
        return Percentiles()

    def rounded(value: Any) -> float | None:
        return None if value is None else round(float(value), 1)

    return Percentiles(count=int(row["n"]), p50=rounded(row.get("p50")), p95=rounded(row.get("p95")),
                       p99=rounded(row.get("p99")))  # fmt: skip


class JournalPosition(_Model):
    step: str | None = None
    completed_steps: list[str] = []
    report_id: str | None = None
    source: str | None = None


def journal_position(invocation_id: str, entries: Sequence[Mapping[str, Any]]) -> JournalPosition:
    """Which step an invocation is on, which it finished, and which report it carries."""
    names: dict[int, str] = {}
    order: list[int] = []
    done: set[int] = set()
    report_id = source = None
    for entry in entries:
        if entry.get("input_json"):
            report_id, source = _input_report(invocation_id, str(entry["input_json"]))
        try:
            lite = json.loads(entry.get("entry_lite_json") or "{}")
        except json.JSONDecodeError:
            continue
        run = (lite.get("Command") or {}).get("Run")
        if isinstance(run, dict) and "completion_id" in run:
            names[run["completion_id"]] = str(run.get("name") or "")
            order.append(run["completion_id"])
        notification = lite.get("Notification") or {}
        if (notification.get("ty") or {}).get("Completion") == "Run":
            completion = (notification.get("id") or {}).get("CompletionId")
            if isinstance(completion, int):
                done.add(completion)
    pending = [names[c] for c in order if c not in done]
    return JournalPosition(
        step=pending[-1] if pending else None,
        completed_steps=[names[c] for c in order if c in done],
        report_id=report_id,
        source=source,
    )


def _input_report(invocation_id: str, input_json: str) -> tuple[str | None, str | None]:
    """The report id exactly as the worker derives it, and the record's coordinates."""
    try:
        command = json.loads(input_json)["Command"]["Input"]
        headers = {str(h["name"]): str(h["value"]) for h in command.get("headers", [])}
        payload = command.get("payload")
        raw = bytes(payload) if isinstance(payload, list) else None
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        return None, None
    intake = read_report(raw, headers, invocation_id, sys.maxsize)
    s = intake.source
    source = f"{s.topic}/{s.partition}/{s.offset}" if s.topic is not None else None
    return intake.report_id, source


class EventFailure(_Model):
    """The last failure recorded in an invocation's journal events."""

    message: str | None = None
    code: str | None = None
    step: str | None = None
    paused_at: datetime | None = None


def event_failure(events: Sequence[Mapping[str, Any]]) -> EventFailure:
    """From `TransientError` events and the `Paused` event (which repeats the last failure)."""
    found = EventFailure()
    for event in events:  # oldest first: the last one wins
        try:
            body = json.loads(event.get("event_json") or "{}")
        except json.JSONDecodeError:
            continue
        kind = event.get("event_type")
        failure = body.get("last_failure") if kind == "Paused" else body if kind == "TransientError" else None
        paused_at = _timestamp(event.get("appended_at")) if kind == "Paused" else found.paused_at
        if isinstance(failure, dict):
            code = failure.get("error_code")
            found = EventFailure(
                message=f"[{code}] {failure.get('error_message', '')}" if code else failure.get("error_message"),
                code=failure.get("restate_doc_error_code") or (str(code) if code else None),
                step=failure.get("related_command_name"),
                paused_at=paused_at,
            )
        elif paused_at is not None:
            found = found.model_copy(update={"paused_at": paused_at})
    return found


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _first_line(text: Any) -> str | None:
    if not text:
        return None
    line = str(text).strip().splitlines()[0]
    return line if len(line) <= 300 else line[:297] + "..."


def _invocation(row: Mapping[str, Any], position: JournalPosition, failure: EventFailure) -> Invocation:
    created = _timestamp(row.get("created_at")) or datetime.fromtimestamp(0, UTC)
    current = row.get("last_failure")  # set while the invocation retries; cleared when it pauses
    return Invocation(
        id=str(row["id"]),
        status=str(row.get("status")),
        report_id=position.report_id,
        source=position.source,
        created_at=created,
        modified_at=_timestamp(row.get("modified_at")),
        paused_at=failure.paused_at if row.get("status") == "paused" else None,
        age_seconds=round(float(row.get("age_ms") or 0) / 1000, 1),
        attempts=None if row.get("retry_count") is None else int(row["retry_count"]),
        # The journal knows the step in progress; a failure may name an earlier, since-recovered one.
        step=position.step or row.get("last_failure_related_command_name") or failure.step,
        completed_steps=position.completed_steps,
        last_failure=_first_line(current or failure.message),
        last_failure_code=row.get("last_failure_error_code") if current else failure.code,
    )


# --- Kafka ------------------------------------------------------------------------------------


def kafka_config(environ: Mapping[str, str] | None = None, bootstrap_server: str | None = None) -> dict[str, str]:
    """The admin client's librdkafka properties: the KAFKA_* environment, as for every other client."""
    return client_config(bootstrap_server, kafka_properties(environ))


# The library's OffsetSpec factories are untyped.
LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


OffsetFutures = Mapping[TopicPartition, Future[Any]]


def _request_offsets(admin: AdminClient, specs: Mapping[TopicPartition, OffsetSpec], timeout: float) -> OffsetFutures:
    """Ask for offsets without waiting, so several requests travel at once."""
    return admin.list_offsets(dict(specs), request_timeout=timeout) if specs else {}


def _offsets(futures: OffsetFutures) -> dict[tuple[str, int], int]:
    return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}


# The group coordinator needs a moment after a broker starts; these errors go away by themselves.
_COORDINATOR_NOT_READY = frozenset(
    {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE}
)


def committed_offsets(
    config: Mapping[str, str], group_id: str, topic: str, partitions: Sequence[int], timeout: float
) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read with an OffsetFetch that neither joins nor changes the group.

    (AdminClient.list_consumer_group_offsets crashes the interpreter in confluent-kafka 2.16 when the
    coordinator answers NOT_COORDINATOR, as it does right after a broker starts; a consumer that never
    subscribes reports the same error as an exception.)
    """
    consumer_config: dict[str, Any] = {
        **config,
        "group.id": group_id,
        "enable.auto.commit": "false",
        "logger": librdkafka_log,
    }
    consumer = Consumer(consumer_config)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
                return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0 and tp.error is None}
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or error.code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    reason = error.str() if error is not None else str(exc)
                    bootstrap = config.get("bootstrap.servers", "?")
                    raise StatusError(
                        f"reading the committed offsets of group {group_id} from Kafka at {bootstrap} failed: {reason}"
                    ) from None
                time.sleep(0.2)
    finally:
        consumer.close()


def kafka_status(
    config: Mapping[str, str],
    *,
    tables_topic: str,
    dlq_topic: str,
    reports_topic: str,
    group_id: str,
    subscription_id: str | None,
    since_ms: int,
    timeout: float = TIMEOUT_S,
) -> KafkaStatus:
    bootstrap = config.get("bootstrap.servers", "?")
    admin_config: dict[str, Any] = {**config, "logger": librdkafka_log}
    admin = AdminClient(admin_config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise StatusError(f"cannot reach Kafka at {bootstrap}: {reason}") from None
    partitions: dict[str, list[int]] = {}
    for topic in (tables_topic, dlq_topic, reports_topic):
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise StatusError(f"topic {topic} does not exist on Kafka at {bootstrap}")
        partitions[topic] = sorted(info.partitions)
    every = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
    outputs = [tp for tp in every if tp.topic != reports_topic]
    requests = [
        _request_offsets(admin, {tp: LATEST for tp in every}, timeout),
        _request_offsets(admin, {tp: EARLIEST for tp in every}, timeout),
        _request_offsets(admin, {tp: OffsetSpec.for_timestamp(since_ms) for tp in outputs}, timeout),
    ]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-group") as pool:
        group = pool.submit(committed_offsets, config, group_id, reports_topic, partitions[reports_topic], timeout)
        try:
            ends, starts, at_since = (_offsets(r) for r in requests)
        except KafkaException as exc:
            raise StatusError(f"reading offsets from Kafka at {bootstrap} failed: {exc}") from None
        committed = group.result()

    def records(topic: str) -> TopicRecords:
        total = in_window = 0
        for p in partitions[topic]:
            end, start, first = ends[(topic, p)], starts[(topic, p)], at_since[(topic, p)]
            total += end - start
            in_window += 0 if first < 0 else end - max(first, start)
        return TopicRecords(topic=topic, records=total, in_window=in_window)

    lags = []
    for p in partitions[reports_topic]:
        end, start = ends[(reports_topic, p)], starts[(reports_topic, p)]
        done = committed.get((reports_topic, p))
        # Nothing committed yet: the subscription starts at the beginning (auto.offset.reset=earliest).
        lag = max(0, end - (start if done is None else done))
        lags.append(PartitionLag(partition=p, committed=done, end=end, lag=lag))
    return KafkaStatus(
        bootstrap_servers=bootstrap,
        tables=records(tables_topic),
        dead_letters=records(dlq_topic),
        consumer_group=ConsumerGroupLag(
            group_id=group_id,
            topic=reports_topic,
            subscription_id=subscription_id,
            partitions=lags,
            total_lag=sum(lag.lag for lag in lags),
        ),
    )


# --- collecting -----------------------------------------------------------------------------------


class Options(_Model):
    admin_url: str = DEFAULT_ADMIN_URL
    window: timedelta = timedelta(hours=1)
    limit: int = 10
    kafka: dict[str, str] = {}
    tables_topic: str = "tables"
    dlq_topic: str = "reports.dlq"
    reports_topic: str = "reports"
    group_id: str = DEFAULT_GROUP_ID
    """Used when no subscription to ReportChain/process is registered."""


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
                    options.kafka or kafka_config(),
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
            detail_ids = [str(r["id"]) for r in oldest.result() + paused.result()]
            events = sql(events_sql(detail_ids)) if detail_ids else None
            journals = restate.query(journals_sql(detail_ids)) if detail_ids else []
            details = _Details(journals, events.result() if events else [])
            by_step = {str(r["step"]): _as_percentiles(r) for r in steps.result()}
            e2e_rows = end_to_end.result()
            status = Status(
                generated_at=datetime.now(UTC),
                window_seconds=window_s,
                admin_url=restate.admin_url,
                invocations=count_invocations(counts.result()),
                oldest_in_flight=details.of(oldest.result())[0] if oldest.result() else None,
                paused=details.of(paused.result()),
                step_latency_ms={s.value: by_step.get(s.value, Percentiles()) for s in Step},
                end_to_end_ms=_as_percentiles(e2e_rows[0] if e2e_rows else None),
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
        return [
            _invocation(
                r,
                journal_position(str(r["id"]), self.journals.get(str(r["id"]), [])),
                event_failure(self.events.get(str(r["id"]), [])),
            )
            for r in rows
        ]


def _by_id(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["id"]), []).append(row)
    return grouped


# --- rendering ------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return [indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(status: Status) -> str:
    inv, kafka = status.invocations, status.kafka
    window = _duration(status.window_seconds)
    lines = [
        f"{status.target}  at {status.generated_at:%Y-%m-%d %H:%M:%S}Z  window {window}",
        f"  Restate {status.admin_url}   Kafka {kafka.bootstrap_servers}",
        "",
        "Invocations",
        f"  in flight {inv.in_flight:,}: pending {inv.pending:,}  scheduled {inv.scheduled:,}  ready {inv.ready:,}  "
        f"running {inv.running:,}  backing-off {inv.backing_off:,}  suspended {inv.suspended:,}  "
        f"paused {inv.paused:,}" + "".join(f"  {k} {v:,}" for k, v in inv.other.items()),
        f"  completed in the last {window}: success {inv.completed_success:,}  failure {inv.completed_failure:,}",
    ]
    oldest = status.oldest_in_flight
    if oldest is not None:
        where = f"on step {oldest.step!r}" if oldest.step else "not inside a step"
        lines.append(
            f"  oldest in flight: {oldest.id} (report {oldest.report_id or '?'}), created "
            f"{_duration(oldest.age_seconds)} ago, {oldest.status} {where}"
            + ("" if oldest.attempts is None else f", attempts {oldest.attempts}")
        )
    if inv.paused:
        shown = f" (showing {len(status.paused)})" if len(status.paused) < inv.paused else ""
        lines += ["", f"Paused {inv.paused:,}{shown}: fix the cause, then `restate invocations resume <ID>`"]
        lines += _table(
            ["ID", "REPORT", "PAUSED", "ATTEMPTS", "STEP", "LAST FAILURE"],
            [
                [p.id, p.report_id or "?", _since(status.generated_at, p.paused_at or p.modified_at),
                 "-" if p.attempts is None else str(p.attempts),
                 p.step or "-", _clip(p.last_failure or "-", 70)]
                for p in status.paused
            ],
        )  # fmt: skip
    lines += ["", f"Step latency, last {window} (ms, journal: step started -> result durable, retries included)"]
    e2e = status.end_to_end_ms
    rows = [[name, f"{p.count:,}", _ms(p.p50), _ms(p.p95), _ms(p.p99)] for name, p in status.step_latency_ms.items()]
    rows.append(["end to end (created -> completed)", f"{e2e.count:,}", _ms(e2e.p50), _ms(e2e.p95), _ms(e2e.p99)])
    lines += _table(["STEP", "COUNT", "P50", "P95", "P99"], rows)
    group = kafka.consumer_group
    lines += [
        "",
        "Kafka",
        f"  tables       {kafka.tables.topic:<14} {kafka.tables.records:>9,} records, {kafka.tables.in_window:,} "
        f"in the last {window}",
        f"  dead letters {kafka.dead_letters.topic:<14} {kafka.dead_letters.records:>9,} records, "
        f"{kafka.dead_letters.in_window:,} in the last {window}",
        f"  consumer group {group.group_id} on {group.topic}"
        + (f" (subscription {group.subscription_id})" if group.subscription_id else " (no subscription registered)")
        + f": total lag {group.total_lag:,}",
    ]
    lines += _table(
        ["PARTITION", "COMMITTED", "END", "LAG"],
        [[str(p.partition), "-" if p.committed is None else f"{p.committed:,}", f"{p.end:,}", f"{p.lag:,}"]
         for p in group.partitions],
        indent="    ",
    )  # fmt: skip
    lines.append(f"  note: {group.note}")
    return "\n".join(lines)


def _since(now: datetime, then: datetime | None) -> str:
    return "?" if then is None else _duration(max(0.0, (now - then).total_seconds())) + " ago"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --- command line -----------------------------------------------------------------------------


def parse_window(text: str) -> timedelta:
    """`30m`, `2h`, `1d`, `90s` (a bare number is seconds)."""
    window = parse_duration(text)
    if window is None or window <= timedelta(0):
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return window


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


EPILOG = """\
examples:
  report-status                         invocations, paused work, step latency, Kafka lag (last hour)
  report-status --since 30m             the window for completed invocations and latencies (s, m, h, d)
  report-status --watch 2               refresh every 2 s (Ctrl-C to stop)
  report-status --json | jq .paused     machine-readable; keys are stable

Kafka client settings come from KAFKA_* environment variables, as for the worker; topics from
TABLES_TOPIC, DEAD_LETTER_TOPIC and REPORTS_TOPIC; the consumer group from the registered
subscription (else SUBSCRIPTION_GROUP_ID or report-chain).
exit codes: 0 ok, 1 Restate or Kafka unreachable, 2 usage error (with --watch, Ctrl-C exits 0).
"""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="report-status",
        description=f"Pipeline status of {TARGET}: Restate invocations and journal, Kafka topics and lag.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--since", type=parse_window, default=timedelta(hours=1), metavar="DURATION",
        help="window for completed invocations, latencies and recent records (default: 1h)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON (one document per refresh with --watch)")
    parser.add_argument("--watch", type=_positive(float), metavar="SECONDS", help="refresh every SECONDS until Ctrl-C")
    parser.add_argument(
        "--admin-url", default=env.get("RESTATE_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="Restate admin API (default: $RESTATE_ADMIN_URL or %(default)s)",
    )  # fmt: skip
    parser.add_argument("--bootstrap-server", metavar="HOST:PORT", help="default: $KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument(
        "--limit", type=_positive(int), default=10, metavar="N", help="show at most N paused invocations (default: 10)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show the (redacted) Kafka config and client logs"
    )
    return parser


def options_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Options:
    env = os.environ if environ is None else environ
    return Options(
        admin_url=args.admin_url,
        window=args.since,
        limit=int(args.limit),
        kafka=kafka_config(env, args.bootstrap_server),
        tables_topic=env.get("TABLES_TOPIC", "tables"),
        dlq_topic=env.get("DEAD_LETTER_TOPIC", "reports.dlq"),
        reports_topic=env.get("REPORTS_TOPIC", "reports"),
        group_id=env.get("SUBSCRIPTION_GROUP_ID", DEFAULT_GROUP_ID),
    )


def _show(status: Status, as_json: bool, watching: bool) -> None:
    if as_json:
        print(json.dumps(status.to_json(), indent=None if watching else 2), flush=True)
    else:
        if watching:
            print("\033[H\033[2J", end="")
        print(render(status), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO if args.verbose else logging.WARNING, format="report-status: %(message)s"
    )
    librdkafka_log.setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)
    options = options_from(args)
    log.info("restate admin: %s; kafka config: %s", options.admin_url, describe(options.kafka))
    try:
        while True:
            started = time.monotonic()
            try:
                _show(collect(options), args.json, args.watch is not None)
            except StatusError as exc:
                print(f"report-status: {exc}", file=sys.stderr, flush=True)
                if args.watch is None:
                    return 1
            if args.watch is None:
                return 0
            time.sleep(max(0.0, args.watch - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
