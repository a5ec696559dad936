"""`make run`: bring the stack up, send the sample reports, print their tables as
they arrive, then say how to go on. The stack keeps running afterwards."""

from __future__ import annotations

import threading
import time
import uuid

from devstack.stack import Stack
from ops.kafka import consumer_config
from ops.results import ReadOptions, Result, read_results
from producer.kafka import producer_config
from producer.reports import load_samples
from producer.send import send
from worker.settings import get_settings, settings_from

EXIT_OK, EXIT_INCOMPLETE = 0, 1
PROGRESS_EVERY = 10.0  # seconds between progress lines while reports are in flight


def run_demo(stack: Stack) -> int:
    seconds = stack.up()
    cfg = stack.cfg
    local = settings_from(stack.worker.env()).provider == "local"
    topic = get_settings().reports_topic
    print(f"\nstack is up in {seconds:.1f} s. Sending the sample reports to `{topic}`...")
    if local:
        print("The local model answers each of the three steps in seconds (more on a busy machine): be patient.")
    print()

    samples = load_samples(id_prefix=f"demo-{uuid.uuid4().hex[:6]}")
    kafka = {"bootstrap.servers": cfg.kafka_bootstrap}
    sent = send(samples, producer_config(base=kafka), progress=False)
    if not sent.ok:
        print(f"could not send the samples: {sent.describe()}")
        return EXIT_INCOMPLETE

    done = 0

    def show(result: Result) -> None:
        nonlocal done
        done += 1
        print(result.render(), flush=True)
        print()

    started = time.monotonic()
    reading = threading.Event()

    def progress() -> None:
        while not reading.wait(PROGRESS_EVERY):
            print(f"... {done} of {len(samples)} reports done after {time.monotonic() - started:.0f} s", flush=True)

    threading.Thread(target=progress, name="demo-progress", daemon=True).start()
    try:
        summary = read_results(
            consumer_config(base=kafka),
            ReadOptions(ids=frozenset(s.id for s in samples if s.id), timeout=1800 if local else 120),
            on_result=show,
        )
    finally:
        reading.set()
    print(f"{summary.results} of {len(samples)} reports came back in {time.monotonic() - started:.1f} s.")
    print(
        f"""
What next:
  Restate UI (invocations, journals):  {cfg.admin_url}
  send a report:       .venv/bin/report-producer 'Revenue was $4.2M with 310 customers and 97.5% uptime.'
  send a file:         .venv/bin/report-producer --file my-reports.jsonl
  with kcat:           echo '{{"id": "k1", "message": "Churn fell to 2.1%"}}' \\
                         | kcat -b {cfg.kafka_bootstrap} -t {topic} -P
  read results:        .venv/bin/report-results --follow
  pipeline status:     make status
  stop everything:     make down
"""
    )
    return EXIT_OK if not summary.missing else EXIT_INCOMPLETE
