"""Send reports to Kafka and account for every record's delivery."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel, ConfigDict

from producer.reports import OutgoingReport
from worker.kafka_logs import librdkafka_logger
from worker.settings import get_settings

log = logging.getLogger(__name__)
# librdkafka's own log lines (one per reconnect attempt) go here, hidden unless asked for.
librdkafka_log = librdkafka_logger("producer.librdkafka")

FLUSH_MARGIN_S = 5.0


@dataclass(frozen=True)
class DeliveryReport:
    """The broker's answer for one record."""

    report_id: str | None
    topic: str
    partition: int | None
    offset: int | None
    error: str | None
    at: float = field(default_factory=time.time)
    index: int = 0
    """The record's position in what was sent, from 0 (delivery reports arrive out of order)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def coordinates(self) -> str | None:
        """Where the broker stored the record: "reports/2@17"."""
        return f"{self.topic}/{self.partition}@{self.offset}" if self.ok else None

    @property
    def assigned_id(self) -> str | None:
        """The report id the worker uses: the record's own id, else its coordinates "reports/2/17"."""
        if self.report_id is not None:
            return self.report_id
        return f"{self.topic}/{self.partition}/{self.offset}" if self.ok else None

    def as_json(self) -> dict[str, object]:
        return {
            "report_id": self.assigned_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "error": self.error,
        }


class DeliverySummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    sent: int
    delivered: int
    failed: int
    elapsed_s: float
    errors: dict[str, int] = {}
    """Error text -> how many records failed with it."""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """Every record handed to the producer was acknowledged by the broker."""
        return self.failed == 0 and self.delivered == self.sent and not self.interrupted

    @property
    def rate(self) -> float:
        """Delivered records per second."""
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        line = (
            f"delivered {self.delivered:,} of {self.sent:,} records to {self.topic} "
            f"in {self.elapsed_s:.2f} s ({self.rate:,.0f}/s), failed {self.failed:,}"
        )
        if self.interrupted:
            line += " (interrupted)"
        return "\n".join([line, *(f"  {count:,} x {error}" for error, count in self.errors.items())])


class _Tally:
    """Counts delivery reports and prints progress about once a second."""

    def __init__(self, topic: str, progress: bool, on_delivery: Callable[[DeliveryReport], None] | None) -> None:
        self.topic = topic
        self.progress = progress
        self.on_delivery = on_delivery
        self.sent = self.delivered = self.failed = 0
        self.errors: Counter[str] = Counter()
        self.started = time.monotonic()
        self._last_print = self.started

    def refused(self, report_id: str | None, index: int, error: str) -> None:
        """A record the client refused before queueing it (e.g. over message.max.bytes)."""
        self.failed += 1
        self.errors[error] += 1
        if self.on_delivery is not None:
            self.on_delivery(DeliveryReport(report_id, self.topic, None, None, error, index=index))

    def callback(self, report_id: str | None, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.errors[error.str()] += 1
            if self.on_delivery is not None:
                self.on_delivery(
                    DeliveryReport(
                        report_id=report_id,
                        topic=message.topic() or self.topic,
                        partition=message.partition() if error is None else None,
                        offset=message.offset() if error is None else None,
                        error=error.str() if error is not None else None,
                        index=index,
                    )
                )

        return on_delivery

    def tick(self) -> None:
        now = time.monotonic()
        if self.progress and now - self._last_print >= 1.0:
            self._last_print = now
            rate = self.delivered / (now - self.started)
            print(
                f"sent {self.sent:,}  delivered {self.delivered:,}  failed {self.failed:,}  ({rate:,.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    def summary(self, undelivered: int, flush_timeout: float, interrupted: bool) -> DeliverySummary:
        if undelivered:
            self.errors[f"not delivered within {flush_timeout:.0f} s"] += undelivered
        return DeliverySummary(
            topic=self.topic,
            sent=self.sent,
            delivered=self.delivered,
            failed=self.failed + undelivered,
            elapsed_s=round(time.monotonic() - self.started, 3),
            errors=dict(self.errors),
            interrupted=interrupted,
        )


def _on_error(seen: set[int]) -> Callable[[KafkaError], None]:
    def on_error(error: KafkaError) -> None:
        # librdkafka retries by itself and repeats an error on every attempt: say each kind once.
        if error.fatal():
            log.error("kafka: fatal: %s", error.str())
        elif error.code() not in seen:
            seen.add(error.code())
            log.warning("kafka: %s", error.str())

    return on_error


def send(
    records: Iterable[OutgoingReport],
    config: Mapping[str, str],
    topic: str | None = None,
    *,
    progress: bool = False,
    on_delivery: Callable[[DeliveryReport], None] | None = None,
) -> DeliverySummary:
    """Produce every record (key = report id when known) and wait for the broker's acknowledgements.

    `topic` defaults to the settings' reports topic. A record not acknowledged within the config's
    `message.timeout.ms` counts as failed.
    Ctrl-C stops producing; what was already handed over is still flushed and counted.
    """
    topic = topic or get_settings().reports_topic
    delivery_timeout = int(config.get("message.timeout.ms", "300000")) / 1000
    flush_timeout = delivery_timeout + FLUSH_MARGIN_S
    producer = Producer({**config, "error_cb": _on_error(set()), "logger": librdkafka_log})
    tally = _Tally(topic, progress, on_delivery)
    interrupted = False
    try:
        for index, report in enumerate(records):
            _produce(producer, topic, report, tally, index)
            tally.sent += 1
            producer.poll(0)
            tally.tick()
    except KeyboardInterrupt:
        interrupted = True
    except Exception:
        producer.flush(flush_timeout)  # what was handed over still goes out before the error surfaces
        raise
    deadline = time.monotonic() + flush_timeout
    undelivered = len(producer)
    while undelivered and time.monotonic() < deadline:
        undelivered = producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        tally.tick()
    return tally.summary(undelivered, flush_timeout, interrupted)


def _produce(producer: Producer, topic: str, report: OutgoingReport, tally: _Tally, index: int) -> None:
    while True:
        try:
            callback = tally.callback(report.id, index)
            producer.produce(topic, key=report.key(), value=report.value(), on_delivery=callback)
            return
        except KafkaException as exc:
            # Refused before queueing (e.g. the record is over message.max.bytes): it failed, nothing to wait for.
            error = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else str(exc)
            tally.refused(report.id, index, error)
            return
        except BufferError:
            # The local queue is full: serve delivery reports until there is room.
            producer.poll(0.1)
            tally.tick()
