"""Sends the planned inputs at a steady pace and learns every record's report id from its delivery.

Pacing spreads the work over the fault window, so kills hit reports in every state
(queued, mid-chain, publishing) instead of an idle pipeline. The producer is
idempotent and waits out a broker outage (the Kafka kill may happen while sending).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

from chaos.accounting import SentRecord
from chaos.inputs import PlannedInput
from producer.kafka import producer_config
from worker.settings import get_settings

# librdkafka logs every reconnect attempt while the broker is down: keep them out of the progress output.
_quiet = logging.getLogger("chaos.librdkafka")
_quiet.setLevel(logging.CRITICAL)
DELIVERY_TIMEOUT_S = 300.0


class SendError(RuntimeError):
    """Some input records were not acknowledged by the broker: the run cannot account for them."""


class Sender:
    def __init__(self, bootstrap: str) -> None:
        self.topic = get_settings().reports_topic
        self.sent: list[SentRecord] = []
        self.queued = 0
        self.errors: list[str] = []
        config = producer_config(bootstrap, base={}, delivery_timeout=DELIVERY_TIMEOUT_S)
        self._producer = Producer({**config, "logger": _quiet, "error_cb": lambda _error: None})

    def send(self, planned: Sequence[PlannedInput], seconds: float, tick: Callable[[], None]) -> None:
        """Produce every record, evenly over `seconds`, calling `tick` about once a second; then flush."""
        started = time.monotonic()
        interval = seconds / max(1, len(planned))
        last_tick = started
        for n, item in enumerate(planned):
            while (wait := started + n * interval - time.monotonic()) > 0:
                self._producer.poll(min(wait, 0.1))
            self._produce(item)
            self.queued += 1
            self._producer.poll(0)
            if time.monotonic() - last_tick >= 1.0:
                last_tick = time.monotonic()
                tick()
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S + 5
        while len(self._producer) and time.monotonic() < deadline:
            self._producer.flush(1.0)
            tick()
        if len(self._producer) or self.errors:
            raise SendError(
                f"{len(self._producer)} records undelivered, {len(self.errors)} failed: {sorted(set(self.errors))[:3]}"
            )

    def _produce(self, item: PlannedInput) -> None:
        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self.errors.append(error.str())
                return
            # Same rule as the worker (worker/intake.py): no id means topic/partition/offset.
            report_id = item.report_id or f"{self.topic}/{message.partition()}/{message.offset()}"
            self.sent.append(SentRecord(report_id=report_id, kind=item.kind))

        while True:
            try:
                self._producer.produce(self.topic, key=item.key, value=item.value, on_delivery=delivered)
                return
            except BufferError:
                self._producer.poll(0.1)
