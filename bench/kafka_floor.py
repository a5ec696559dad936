"""The Kafka floor: a plain consume -> transform -> produce loop, with no durability at all.

It does the worker's business logic with the offline provider's pure functions
(extract metrics, sort them, format a table) but no journal, no per-record
acknowledgement and auto-committed offsets: a crash may lose or repeat records.
The worker's throughput against this is the price of its guarantees.

    python -m bench.kafka_floor --bootstrap 127.0.0.1:19592 --input-topic bench.kafka.in --output-topic bench.kafka.out
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType

from confluent_kafka import Consumer, Message, Producer

from worker.providers.offline import extract_metrics, markdown_table
from worker.publisher import DEFAULTS, REQUIRED


def transform(value: bytes) -> bytes:
    """Input report JSON -> output JSON with the sorted metrics and their markdown table."""
    message = json.loads(value)["message"]
    metrics = sorted(extract_metrics(message), key=lambda m: m.value, reverse=True)
    return json.dumps(
        {"metrics": [m.model_dump() for m in metrics], "table": markdown_table(metrics)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def run(bootstrap: str, input_topic: str, output_topic: str, group: str) -> None:
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "true",
        }
    )
    # The worker's producer settings, so the output path costs the same.
    producer = Producer({**DEFAULTS, "bootstrap.servers": bootstrap, **REQUIRED})
    consumer.subscribe([input_topic])
    try:
        while not stopping:
            batch: list[Message] = consumer.consume(num_messages=500, timeout=0.1)
            for message in batch:
                if message.error() is not None:
                    continue
                while True:
                    try:
                        producer.produce(output_topic, key=message.key(), value=transform(message.value() or b""))
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
    finally:
        producer.flush(10)
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group", default="bench-kafka-floor", help="consumer group (default: %(default)s)")
    args = parser.parse_args(argv)
    run(args.bootstrap, args.input_topic, args.output_topic, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
