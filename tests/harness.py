"""Test harness around the real local stack: send records, watch the output topics,
query Restate's journal, restart the worker with another environment.

Nothing here is a mock: records go through a real Kafka broker and real
restate-server to the real worker process.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from devstack.config import StackConfig
from devstack.setup import run_setup
from devstack.stack import Stack
from worker.settings import get_settings

# The stack's worker and setup read the same settings (the worker inherits this environment).
TABLES = get_settings().tables_topic
DLQ = get_settings().dead_letter_topic
REPORTS = get_settings().reports_topic

# The worker under test never inherits an LLM key from the machine running the suite.
BASE_WORKER_ENV = {
    "LLM_PROVIDER": "offline",
    "OPENAI_API_KEY": "",
    "OPENAI_BASE_URL": "",
    "LOG_LEVEL": "INFO",
    "STEP_RETRY_INITIAL_INTERVAL": "0.2",
    "STEP_RETRY_MAX_INTERVAL": "1",
}


INVOCATION_ID = re.compile(r"inv_[0-9A-Za-z]+")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class OutputRecord:
    topic: str
    key: str | None
    value: bytes
    partition: int
    offset: int

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.value))


@dataclass
class OutputWatcher:
    """Reads `tables` and `reports.dlq` from the beginning, in the background, for the whole session."""

    bootstrap: str
    by_key: dict[str, list[OutputRecord]] = field(default_factory=lambda: defaultdict(list))
    read_up_to: dict[tuple[str, int], int] = field(default_factory=dict)
    """The next offset to read, per (topic, partition)."""
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="output-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": unique("test-watcher"),
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": "1000",
                # Tests kill the broker on purpose; its connection errors are expected noise.
                "log_level": "0",
            }
        )
        consumer.assign([TopicPartition(TABLES, 0, 0), TopicPartition(DLQ, 0, 0)])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                raw_key = msg.key()
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                record = OutputRecord(
                    msg.topic() or "", key, msg.value() or b"", msg.partition() or 0, msg.offset() or 0
                )
                with self._lock:
                    self.by_key[key or ""].append(record)
                    self.read_up_to[(record.topic, record.partition)] = record.offset + 1
                    self._lock.notify_all()
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def records(self, key: str) -> list[OutputRecord]:
        with self._lock:
            return list(self.by_key.get(key, []))

    def wait_caught_up(self, timeout: float = 60.0) -> None:
        """Wait until every record the output topics hold now has been read."""
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": unique("test-probe"), "log_level": "0"})
        try:
            ends = {
                (t, 0): int(probe.get_watermark_offsets(TopicPartition(t, 0), timeout=10)[1]) for t in (TABLES, DLQ)
            }
        finally:
            probe.close()
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(self.read_up_to.get(tp, 0) < end for tp, end in ends.items()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the output watcher read up to {self.read_up_to}, not {ends}, in {timeout} s")
                self._lock.wait(min(remaining, 0.5))

    def wait_for(self, keys: Iterable[str], timeout: float = 60.0) -> dict[str, list[OutputRecord]]:
        """Wait until every key has at least one output record; fail with the missing keys."""
        wanted = list(keys)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                missing = [k for k in wanted if not self.by_key.get(k)]
                if not missing:
                    return {k: list(self.by_key[k]) for k in wanted}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(missing)} of {len(wanted)} reports produced no output in {timeout} s: {missing[:10]}"
                    )
                self._lock.wait(min(remaining, 0.5))


class TestStack:
    """The session's stack plus the handles tests need."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.stack = Stack(cfg, log=lambda line: print(f"[stack] {line}", flush=True))
        self.worker_env: dict[str, str] = dict(BASE_WORKER_ENV)
        self.stack.worker_env = dict(self.worker_env)
        self.producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap, "linger.ms": "2", "log_level": "0"})
        self.outputs = OutputWatcher(cfg.kafka_bootstrap)

    def start(self, fresh: bool = True) -> None:
        if fresh:
            self.stack.down()
            shutil.rmtree(self.cfg.run_dir, ignore_errors=True)
        seconds = self.stack.up()
        print(f"[stack] up in {seconds:.1f} s", flush=True)
        self.outputs.start()

    def stop(self) -> None:
        self.outputs.stop()
        self.producer.flush(5)
        self.stack.down()

    # -- the worker under test ------------------------------------------------
    def use_worker_env(self, env: Mapping[str, str] | None = None) -> None:
        """Run the worker with BASE_WORKER_ENV plus `env`; restarts it only when that changes."""
        wanted = {**BASE_WORKER_ENV, **(env or {})}
        if wanted == self.worker_env and all(w.process.is_running() for w in self.stack.workers):
            return
        self.worker_env = wanted
        self.stack.worker_env = dict(wanted)
        if self.stack.llm.wanted():  # LLM_PROVIDER=local: the local LLM server first (a no-op when it runs)
            self.stack.start(self.stack.llm, timeout=180)
        self.stack.restart("worker")
        # Re-register: service options (e.g. the retry policy) come from the worker's environment.
        run_setup(self.stack.setup_config(), log=lambda _: None)

    # -- input ------------------------------------------------------------------
    def send(self, value: bytes | str | dict[str, Any] | None, key: str | None = None, topic: str = REPORTS) -> None:
        if isinstance(value, dict):
            payload: bytes | None = json.dumps(value).encode()
        elif isinstance(value, str):
            payload = value.encode()
        else:
            payload = value
        self.producer.produce(topic, key=key.encode() if key else None, value=payload)
        self.producer.poll(0)

    def flush(self) -> None:
        remaining = self.producer.flush(30)
        assert remaining == 0, f"{remaining} input records were not delivered to Kafka"

    # -- Restate introspection ---------------------------------------------------
    def query(self, sql: str) -> list[dict[str, Any]]:
        response = httpx.post(
            f"{self.cfg.admin_url}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=30
        )
        response.raise_for_status()
        return list(response.json()["rows"])

    def invocation_of_key(self, key: str, timeout: float = 30) -> dict[str, Any]:
        """id and status of the invocation of the record keyed `key` (Restate keeps the key, base64,
        in the `kafka.key` header of the journal's input entry)."""
        encoded = base64.b64encode(key.encode()).decode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query(
                "SELECT i.id AS id, i.status AS status FROM sys_invocation i JOIN sys_journal j ON j.id = i.id "
                f"WHERE j.index = 0 AND i.target = 'ReportChain/process' AND j.entry_json LIKE '%{encoded}%'"
            )
            if rows:
                return rows[0]
            time.sleep(0.2)
        raise AssertionError(f"no invocation of the record keyed {key!r} within {timeout} s")

    def invocation_statuses(self, invocation_ids: Iterable[str]) -> dict[str, str]:
        """Restate's status of each invocation (pending, running, backing-off, suspended, paused, completed, ...)."""
        listed = ", ".join(f"'{i}'" for i in invocation_ids if INVOCATION_ID.fullmatch(i))
        if not listed:
            return {}
        return {
            str(r["id"]): str(r["status"])
            for r in self.query(f"SELECT id, status FROM sys_invocation WHERE id IN ({listed})")
        }

    def wait_finished(self, report_ids: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until the invocations behind the outputs of `report_ids` completed in Restate and the output
        watcher has read every output record: from then on none of them can publish anything more."""
        wanted = {r.json()["invocation_id"] for rid in report_ids for r in self.outputs.records(rid)}

        def unfinished() -> set[str]:
            statuses = self.invocation_statuses(wanted)
            return {i for i in wanted if statuses.get(i) != "completed"}

        deadline = time.monotonic() + timeout
        while pending := unfinished():
            assert time.monotonic() < deadline, f"{len(pending)} invocations not completed in {timeout} s: {pending}"
            time.sleep(0.1)
        self.outputs.wait_caught_up(timeout)

    def journal(self, invocation_id: str) -> list[dict[str, Any]]:
        return self.query(
            f"SELECT index, entry_type, name, completed FROM sys_journal WHERE id = '{invocation_id}' ORDER BY index"
        )
