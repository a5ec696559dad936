"""The load driver: keep N reports in flight, and time each one from input to output.

"In flight" is a closed loop: a new report is sent only when an earlier one's
output has arrived, so N bounds the work inside the pipeline (N = 1 is the
low-load case). Every timestamp is the broker's: the bench topics use
`message.timestamp.type=LogAppendTime`, the input's comes back in its delivery
report and the output's with the record, so a report's latency is "appended to
the input topic" -> "appended to the output topic", on one clock.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from producer.reports import OutgoingReport

# No output for this long while reports are in flight: the rest are lost.
STALL_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 2.0


class DriverError(RuntimeError):
    """The broker did not behave as the measurement needs (e.g. no LogAppendTime)."""


@dataclass
class Run:
    """What happened to the reports of one `Driver.run`."""

    label: str
    sent: int = 0
    input_ts: dict[str, int] = field(default_factory=dict)
    """Report id -> broker append time of its input record (ms)."""
    output_ts: dict[str, int] = field(default_factory=dict)
    """Report id -> broker append time of its first output record (ms)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Report id -> the topic its output went to, when that is a dead-letter topic."""
    lost: int = 0
    """Reports with no output when the run gave up."""
    duplicates: int = 0
    wall_s: float = 0.0

    @property
    def latencies_ms(self) -> list[float]:
        return [float(self.output_ts[k] - self.input_ts[k]) for k in self.output_ts if k in self.input_ts]

    @property
    def span_s(self) -> float:
        """From the first input's append to the last output's append."""
        if not self.output_ts or not self.input_ts:
            return 0.0
        return (max(self.output_ts.values()) - min(self.input_ts.values())) / 1000

    @property
    def throughput(self) -> float:
        """Reports per second over `span_s`."""
        return len(self.output_ts) / self.span_s if self.span_s > 0 else 0.0


class Driver:
    """One producer for an input topic, one consumer for its output topics, reused across runs."""

    def __init__(
        self, bootstrap: str, input_topic: str, output_topics: Sequence[str], failure_topics: Sequence[str] = ()
    ):
        self.input_topic = input_topic
        self.failure_topics = frozenset(failure_topics)
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": "1",
                "enable.idempotence": "true",
                "message.timeout.ms": "30000",
            }
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-driver-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": "false",
                # fetch.wait.max.ms stays at its default: the broker answers a fetch as soon as a
                # record arrives, and shorter waits only add idle requests that cost broker CPU.
            }
        )
        self._assign_from_end([*output_topics, *failure_topics])

    def _assign_from_end(self, topics: Sequence[str]) -> None:
        # Explicit end offsets, read now: OFFSET_END would resolve lazily and could skip early outputs.
        assignment = []
        for topic in topics:
            metadata = self._consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in metadata.partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                assignment.append(TopicPartition(topic, partition, high))
        self._consumer.assign(assignment)

    def close(self) -> None:
        self._producer.flush(10)
        self._consumer.close()
        del self._producer  # confluent-kafka producers have no close(): dropping the last reference ends them

    def run(
        self,
        label: str,
        reports: Sequence[OutgoingReport],
        in_flight: int,
        *,
        on_done: Callable[[int], None] | None = None,
        progress: bool = True,
    ) -> Run:
        """Send `reports` keeping at most `in_flight` without output; wait for every output."""
        run = Run(label)
        keys = {r.id for r in reports if r.id is not None}
        if len(keys) != len(reports):
            raise DriverError("every benchmark report needs a unique id")
        started = last_output = last_print = time.monotonic()
        next_index = 0
        while len(run.output_ts) < len(reports):
            while next_index < len(reports) and next_index - len(run.output_ts) < in_flight:
                self._send(reports[next_index], run)
                next_index += 1
            self._producer.poll(0)
            arrived = self._receive(keys, run)
            now = time.monotonic()
            if arrived:
                last_output = now
                if on_done is not None:
                    on_done(len(run.output_ts))
            elif now - last_output > STALL_TIMEOUT_S:
                run.lost = len(reports) - len(run.output_ts)
                break
            if progress and now - last_print >= PROGRESS_EVERY_S:
                last_print = now
                rate = len(run.output_ts) / (now - started)
                print(
                    f"  [{label}] {len(run.output_ts):,}/{len(reports):,} done, {next_index - len(run.output_ts)} "
                    f"in flight, {rate:,.0f}/s",
                    file=sys.stderr,
                    flush=True,
                )
        if self._producer.flush(30):
            raise DriverError(f"{label}: input records were not acknowledged by the broker")
        run.wall_s = time.monotonic() - started
        return run

    def _send(self, report: OutgoingReport, run: Run) -> None:
        key = report.id or ""

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                raise DriverError(f"producing {key} failed: {error.str()}")
            kind, ts = message.timestamp()
            if kind != TIMESTAMP_LOG_APPEND_TIME:
                raise DriverError(f"{self.input_topic} must use message.timestamp.type=LogAppendTime")
            run.input_ts[key] = ts

        while True:
            try:
                self._producer.produce(
                    self.input_topic, key=report.key(), value=report.value(), on_delivery=on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        run.sent += 1

    def _receive(self, keys: set[str], run: Run) -> int:
        arrived = 0
        for message in self._consumer.consume(num_messages=500, timeout=0.02):
            if message.error() is not None:
                continue
            raw_key = message.key()
            key = raw_key.decode(errors="replace") if raw_key is not None else ""
            if key not in keys:
                continue  # a late output of an earlier run
            if key in run.output_ts:
                run.duplicates += 1
                continue
            kind, ts = message.timestamp()
            if kind != TIMESTAMP_LOG_APPEND_TIME:
                raise DriverError(f"{message.topic()} must use message.timestamp.type=LogAppendTime")
            run.output_ts[key] = ts
            if message.topic() in self.failure_topics:
                run.failed[key] = message.topic() or ""
            arrived += 1
        return arrived
