"""The engine floor: the least a Restate service can do for each record, served like the worker.

`BenchFloor/process` journals three no-op steps and one publish that waits for
the broker's ack (the worker's own `Publisher`, so the output path is the same),
behind hypercorn with the worker's server settings. What the worker costs on
top of this is our code; what this costs is Restate + Kafka + the SDK.

With `--step-latency S` each step sleeps S seconds instead, like an LLM call
that takes S seconds and costs no CPU: the best the engine can do against the
LLM-bound ideal, to compare the worker's OpenAI runs with.

    python -m bench.engine_floor --bind 127.0.0.1:19581 --bootstrap 127.0.0.1:19592 --output-topic bench.engine.out
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys

import restate
from restate.serde import BytesSerde

from worker.app import Receive, Scope, Send, tune_gc
from worker.models import Delivery
from worker.publisher import Publisher
from worker.server import serve, server_config

SERVICE = "BenchFloor"
HANDLER = "process"
STEPS = ("Step 1", "Step 2", "Step 3")

floor = restate.Service(SERVICE, description="Benchmark floor: three no-op journaled steps and a publish.")
_publisher: Publisher | None = None
_output_topic = ""
_step_latency = 0.0


async def _noop(step: str) -> str:
    if _step_latency:
        await asyncio.sleep(_step_latency)
    return step


async def _publish(key: str, value: bytes) -> Delivery:
    assert _publisher is not None
    return await _publisher.publish(_output_topic, key.encode(), value)


@floor.handler(HANDLER, accept="*/*", input_serde=BytesSerde())
async def process(ctx: restate.Context, raw: bytes | None) -> str:
    for step in STEPS:
        await ctx.run_typed(step, _noop, restate.RunOptions(type_hint=str), step=step)
    # The record key (base64 in the `kafka.key` header) is the report id, as for the worker's outputs.
    key = base64.b64decode(ctx.request().headers.get("kafka.key", "")).decode(errors="replace")
    await ctx.run_typed("Publish", _publish, restate.RunOptions(type_hint=Delivery), key=key, value=raw or b"")
    return key


_restate_app = restate.app(services=[floor])


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    # The SDK's app has no lifespan support (see worker/app.py): acknowledge it here.
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _restate_app(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="host:port to serve on")
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--step-latency", type=float, default=0.0, metavar="S", help="seconds each step sleeps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    global _publisher, _output_topic, _step_latency
    _output_topic = args.output_topic
    _step_latency = args.step_latency
    _publisher = Publisher({"bootstrap.servers": args.bootstrap})

    # The same server settings as `python -m worker`, garbage collector included.
    tune_gc()
    asyncio.run(serve(_app, server_config(args.bind)))
    _publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
