"""What the run watches: every record on the output topics, and Restate's invocation states."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from chaos.accounting import OutputRecord
from ops.kafka import consumer_config
from worker.models import OutcomeKind
from worker.settings import get_settings


class OutputCollector:
    """Reads the tables and dead-letter topics from the beginning, raw, in a background thread.

    Raw on purpose: the accounting must see duplicates and their bytes, which the
    deduplicating results reader (ops/results.py) hides. librdkafka reconnects by
    itself while the broker is down.
    """

    def __init__(self, bootstrap: str) -> None:
        settings = get_settings()
        self._config = {
            **consumer_config(bootstrap, base={}, group_prefix="chaos-collector"),
            "enable.partition.eof": "false",
            "topic.metadata.refresh.interval.ms": "2000",
            "log_level": "0",
        }
        self._topics: dict[str, OutcomeKind] = {
            settings.tables_topic: "table",
            settings.dead_letter_topic: "dead_letter",
        }
        self._records: list[OutputRecord] = []
        self._ids: set[str] = set()
        self._counts: Counter[OutcomeKind] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-outputs", daemon=True)

    def start(self) -> OutputCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        # Both topics have one partition (devstack/setup.py).
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING) for topic in self._topics])
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                key = message.key()
                record = OutputRecord(
                    topic=self._topics[message.topic() or ""],
                    key=key.decode("utf-8", errors="replace") if key is not None else None,
                    value=message.value() or b"",
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    received_at=time.time(),
                )
                with self._lock:
                    self._records.append(record)
                    self._counts[record.topic] += 1
                    if record.key is not None:
                        self._ids.add(record.key)
        finally:
            consumer.close()

    def records(self) -> list[OutputRecord]:
        with self._lock:
            return list(self._records)

    def ids(self) -> set[str]:
        """Report ids with at least one output record (records are keyed by report id)."""
        with self._lock:
            return set(self._ids)

    def counts(self) -> dict[OutcomeKind, int]:
        with self._lock:
            return dict(self._counts)


def _query(admin_url: str, sql: str, timeout: float) -> list[dict[str, Any]] | None:
    """Rows of a Restate SQL query; None when Restate cannot answer (for instance while it restarts)."""
    try:
        response = httpx.post(
            f"{admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=timeout
        )
        response.raise_for_status()
        return list(response.json()["rows"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def invocation_states(admin_url: str, timeout: float = 10.0) -> dict[str, int] | None:
    """Restate invocations by status (running, backing-off, paused, completed, ...); None when unreachable."""
    rows = _query(admin_url, "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status", timeout)
    return None if rows is None else {str(row["status"]): int(row["n"]) for row in rows}


# Completed invocations cannot run a step again: only the journals of unfinished ones matter.
_IN_FLIGHT_RUNS = (
    "SELECT entry_json FROM sys_journal WHERE entry_type = 'Notification: Run' "
    "AND id IN (SELECT id FROM sys_invocation WHERE status <> 'completed')"
)


def journaled_response_ids(admin_url: str, timeout: float = 10.0) -> set[str] | None:
    """LLM response ids in the journals of unfinished invocations: results Restate has durably stored."""
    rows = _query(admin_url, _IN_FLIGHT_RUNS, timeout)
    if rows is None:
        return None
    found = set()
    for row in rows:
        try:
            result = json.loads(row["entry_json"])["Notification"]["Completion"]["Run"]["result"]
            value = json.loads(bytes(result["Success"]))  # a failure has no "Success"
            response_id = value["fact"]["response_id"]  # step results carry a fact; the publish steps do not
        except (KeyError, TypeError, ValueError):
            continue
        if isinstance(response_id, str):
            found.add(response_id)
    return found
