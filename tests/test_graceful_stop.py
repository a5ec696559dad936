"""A stop under load: SIGTERM to the worker (what `make down` does first), then `make up`, leaves no
duplicate, because the worker lets every running step finish and be journaled and starts none
(worker/drain.py). A SIGKILL between the broker's ack and the journal write may still publish a
table twice: the second test measures how often (a measurement, run with `-m bench`).

`STOP_TEST_REPORTS` sets the load (300 here) and `STOP_TEST_LINGER_MS` the producer's linger in
the graceful test (5000 here, to hold many publishes in flight at the stop); `STOP_TEST_WHOLE_STACK=1`
stops the whole stack as `make down` does, not only the worker; `STOP_TEST_LLM_LATENCY=<seconds>`
runs the steps on the OpenAI provider against the test LLM server answering after that long, instead
of the offline provider. The README's numbers come from 1,500 reports with the default linger (5 ms):

    STOP_TEST_REPORTS=1500 STOP_TEST_LINGER_MS=5 STOP_TEST_WHOLE_STACK=1 STOP_TEST_LLM_LATENCY=0.5 \
        .venv/bin/pytest -s -m 'bench or not bench' tests/test_graceful_stop.py
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator

import pytest

from testllm import LLMServer
from tests.harness import TABLES, TestStack, unique

REPORTS = int(os.environ.get("STOP_TEST_REPORTS", "300"))
LINGER_MS = os.environ.get("STOP_TEST_LINGER_MS", "5000")
WHOLE_STACK = os.environ.get("STOP_TEST_WHOLE_STACK") == "1"
LLM_LATENCY = float(os.environ.get("STOP_TEST_LLM_LATENCY", "0"))
TEMPLATES = [
    "Revenue was ${a}.{b}M, up {c}%, and we hired {d} engineers.",
    "Uptime reached 99.{b}{c}%, with {a} incidents and an MTTR of {d} minutes.",
    "Churn fell to {a}.{b}% while {d} new customers signed; NPS stood at {c}.",
]


def message(i: int) -> str:
    rng = random.Random(i)
    return TEMPLATES[i % len(TEMPLATES)].format(
        a=rng.randint(2, 9), b=rng.randint(1, 9), c=rng.randint(11, 89), d=rng.randint(101, 990)
    )


@pytest.fixture
def load_env(stack: TestStack) -> Iterator[dict[str, str]]:
    """The worker's environment for the load: the offline provider, or the test LLM server with latency."""
    if not LLM_LATENCY:
        yield {}
        return
    with LLMServer(latency=LLM_LATENCY) as server:
        yield {"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": server.base_url}
        stack.use_worker_env()


def publishes_started(stack: TestStack) -> int:
    """`Publish table` steps started so far, in the whole session (from Restate's journal)."""
    rows = stack.query(
        "SELECT count(*) AS n FROM sys_journal WHERE entry_type = 'Command: Run' AND name = 'Publish table'"
    )
    return int(rows[0]["n"])


def outcomes_after(stack: TestStack, prefix: str, interrupt: Callable[[], None]) -> tuple[int, int, float]:
    """Send the load, run `interrupt` once a fifth of it has started publishing; returns
    (reports that had an outcome before the interrupt, duplicate tables, seconds until every report had one)."""
    before, published_before = len(stack.outputs.by_key), publishes_started(stack)
    ids = [f"{unique(prefix)}-{i}" for i in range(REPORTS)]
    for i, rid in enumerate(ids):
        stack.send({"id": rid, "message": message(i)}, key=rid)
    stack.flush()
    deadline = time.monotonic() + 60
    while publishes_started(stack) - published_before < REPORTS // 5:
        assert time.monotonic() < deadline, "the reports did not reach `Publish table` within 60 s"
        time.sleep(0.05)
    done = len(stack.outputs.by_key) - before  # keys with an outcome: ours are the only new ones
    started = time.monotonic()
    interrupt()
    outputs = stack.outputs.wait_for(ids, timeout=180)
    recovered = time.monotonic() - started
    time.sleep(3)  # a duplicate would arrive right behind the first record
    outputs = {rid: stack.outputs.records(rid) for rid in ids}
    for rid, records in outputs.items():
        assert {r.topic for r in records} == {TABLES}, f"{rid}: {[(r.topic, r.value[:200]) for r in records]}"
        assert len({r.value for r in records}) == 1, f"{rid}: tables that differ"
    return done, sum(len(records) - 1 for records in outputs.values()), recovered


def test_a_graceful_stop_of_the_worker_under_load_leaves_no_duplicate(
    stack: TestStack, load_env: dict[str, str]
) -> None:
    # Each publish waits 5 s in the producer (linger.ms) before it goes to the broker, so at the
    # stop hundreds of reports are inside `Publish table`, not only the few a fast broker shows:
    # a worker that abandoned them after its 4 s grace and then flushed its producer published
    # every one of them twice (the old worker did: 256 duplicates of 300 here).
    stack.use_worker_env({**load_env, "KAFKA_LINGER_MS": LINGER_MS})

    def stop_then_start() -> None:
        # What `make down` does first (then it stops restate-server and Kafka, which adds nothing here
        # but 20 s; STOP_TEST_WHOLE_STACK=1 does all of it): SIGTERM, and wait until the worker has
        # exited. Then `make up`.
        if WHOLE_STACK:
            stack.stack.down()
        else:
            stack.stack.worker.process.stop()
        stack.stack.up()

    done, duplicates, recovered = outcomes_after(stack, "stop", stop_then_start)
    print(
        f"\n[measured] {'make down' if WHOLE_STACK else 'worker SIGTERM'} -> make up with {REPORTS - done} of "
        f"{REPORTS} reports unfinished: "
        f"{duplicates} duplicate tables, all {REPORTS} done {recovered:.1f} s after the stop began",
        flush=True,
    )
    assert duplicates == 0


@pytest.mark.bench
def test_sigkill_of_the_worker_under_load_may_duplicate_byte_identically(
    stack: TestStack, load_env: dict[str, str]
) -> None:
    stack.use_worker_env(load_env)

    def kill_then_start() -> None:
        stack.stack.worker.process.kill()
        deadline = time.monotonic() + 15
        while stack.stack.worker.process.is_running():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stack.stack.up()

    done, duplicates, recovered = outcomes_after(stack, "kill", kill_then_start)
    print(
        f"\n[measured] worker SIGKILL with {REPORTS - done} of {REPORTS} reports unfinished: "
        f"{duplicates} duplicate tables (byte-identical), all done {recovered:.1f} s after the kill",
        flush=True,
    )
