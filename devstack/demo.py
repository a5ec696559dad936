"""`make run`: bring the stack up, send the sample reports, print their tables as
they arrive, then say how to go on. The stack keeps running afterwards."""

from __future__ import annotations

import time
import uuid

from devstack.stack import Stack
from ops.kafka import consumer_config
from ops.results import ReadOptions, Result, read_results
from producer.kafka import producer_config
from producer.reports import load_samples
from producer.send import send

EXIT_OK, EXIT_INCOMPLETE = 0, 1


def run_demo(stack: Stack) -> int:
    seconds = stack.up()
    cfg = stack.cfg
    print(f"\nstack is up in {seconds:.1f} s. Sending the sample reports to `reports`...\n")

    samples = load_samples(id_prefix=f"demo-{uuid.uuid4().hex[:6]}")
    kafka = {"bootstrap.servers": cfg.kafka_bootstrap}
    sent = send(samples, producer_config(base=kafka), progress=False)
    if not sent.ok:
        print(f"could not send the samples: {sent.describe()}")
        return EXIT_INCOMPLETE

    def show(result: Result) -> None:
        print(result.render(), flush=True)
        print()

    started = time.monotonic()
    summary = read_results(
        consumer_config(base=kafka),
        ReadOptions(ids=frozenset(s.id for s in samples if s.id), timeout=120),
        on_result=show,
    )
    print(f"{summary.results} of {len(samples)} reports came back in {time.monotonic() - started:.1f} s.")
    print(
        f"""
What next:
  Restate UI (invocations, journals):  {cfg.admin_url}
  send a report:       .venv/bin/report-producer 'Revenue was $4.2M with 310 customers and 97.5% uptime.'
  send a file:         .venv/bin/report-producer --file my-reports.jsonl
  with kcat:           echo '{{"id": "k1", "message": "Churn fell to 2.1%"}}' \\
                         | kcat -b {cfg.kafka_bootstrap} -t reports -P
  read results:        .venv/bin/report-results --follow
  pipeline status:     make status
  stop everything:     make down
"""
    )
    return EXIT_OK if not summary.missing else EXIT_INCOMPLETE
