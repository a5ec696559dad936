"""One idempotent Kafka producer per process, and an awaitable publish.

The producer is created on first use (the Restate ASGI app has no lifespan hook)
and served by a daemon thread that polls for delivery reports, so awaiting a
publish never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from worker import limits
from worker.kafka_logs import librdkafka_logger
from worker.models import Delivery
from worker.settings import get_settings, redact_kafka_properties

log = logging.getLogger(__name__)

# Producer settings we rely on; user KAFKA_* properties may add to them, not weaken them.
REQUIRED = {"enable.idempotence": "true", "acks": "all"}
DEFAULTS = {
    "linger.ms": "5",
    "compression.type": "lz4",
    # Bound one publish attempt: when the broker stays away, the step fails and
    # Restate retries it with backoff (and eventually pauses the invocation).
    "message.timeout.ms": "30000",
}


class PublishError(RuntimeError):
    """The broker did not accept the record; retryable."""


class RecordTooLarge(PublishError):
    """The producer or the broker refused the record for its size: retrying the same bytes cannot help."""


class Publisher:
    def __init__(self, config: dict[str, str]) -> None:
        self._config = {**DEFAULTS, **config, **REQUIRED}
        # librdkafka's own log lines go through Python logging (one format, one stream).
        self._producer = Producer(
            {**self._config, "error_cb": self._on_error, "logger": librdkafka_logger("librdkafka")}
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()
        log.info("kafka producer ready: %s", redact_kafka_properties(self._config))

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    @staticmethod
    def _on_error(error: KafkaError) -> None:
        # Fatal errors end the producer's usefulness; the rest are transient and retried by librdkafka.
        if error.fatal():
            log.error("kafka producer fatal error: %s", error)
        else:
            log.warning("kafka producer: %s", error)

    async def publish(self, topic: str, key: bytes, value: bytes) -> Delivery:
        """Produce one record and wait for the broker's acknowledgement."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Delivery] = loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            # Runs on the poll thread: hand the outcome back to the event loop.
            outcome: Delivery | Exception = (
                _publish_error(topic, error)
                if error is not None
                else Delivery(
                    topic=message.topic() or topic, partition=message.partition() or 0, offset=message.offset() or 0
                )
            )
            # A closed loop: the worker is stopping and nobody waits for this record any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, outcome)

        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                # The local queue is full: wait for deliveries to drain it.
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None:
                    raise PublishError(f"publishing to {topic} failed: {exc}") from None
                raise _publish_error(topic, error) from None
        return await done

    def close(self) -> None:
        """Stop, dropping what is still queued: it belongs to handlers the worker abandoned.

        By the time this runs, every publish step that was allowed to finish has finished
        (see worker/drain.py). Delivering a queued record now would publish it without its
        step ever being journaled, and Restate would publish it again after the restart.
        """
        queued = len(self._producer)
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        self._producer.poll(0)  # deliver the purge reports, releasing their callbacks
        self._stop.set()
        if queued:
            log.warning("kafka producer closed: %d unacknowledged records purged, not delivered", queued)


def _publish_error(topic: str, error: KafkaError) -> PublishError:
    if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return RecordTooLarge(f"{topic} refused the record as too large: {error.str()}")
    return PublishError(f"publishing to {topic} failed: {error.str()}")


def _settle(future: asyncio.Future[Delivery], outcome: Delivery | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


_publisher: Publisher | None = None
_lock = threading.Lock()


async def get_publisher() -> Publisher:
    """The process-wide publisher, created on first use."""
    global _publisher
    if _publisher is None:
        config = get_settings().kafka.client_config()
        if "batch.size" not in config:
            config["batch.size"] = str(await limits.batch_bound())
        with _lock:
            if _publisher is None:
                _publisher = Publisher(config)
    return _publisher


def close_publisher() -> None:
    global _publisher
    with _lock:
        if _publisher is not None:
            _publisher.close()
            _publisher = None
