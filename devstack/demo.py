"""`make run`: bring the stack up, send the sample reports, print their tables as
they arrive, then say how to go on. The stack keeps running afterwards."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

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

    since = datetime.now(UTC) - timedelta(seconds=1)  # a margin for the invocations' creation times
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
    first = samples[0].id or ""
    print(
        f"""
What next:
  Restate UI, this run's invocations (each with its journal of steps):
    {invocations_link(cfg.admin_url, since)}
  a table again:       .venv/bin/report-results --id {first}
  all results:         .venv/bin/report-results            (--follow: keep printing new ones)
  send your own report, then follow it by the id it prints:
    .venv/bin/report-producer 'Revenue was $4.2M with 310 customers and 97.5% uptime.'
    .venv/bin/report-results --id <the printed id> --timeout 60
  send a file:         .venv/bin/report-producer --file examples/reports.jsonl
  pipeline status:     make status
  stop everything:     make down
"""
    )
    return EXIT_OK if not summary.missing else EXIT_INCOMPLETE


def invocations_link(admin_url: str, since: datetime) -> str:
    """The Restate UI's invocation list showing ReportChain invocations created since `since`, newest first.

    The UI keeps its filters in the query string: `filter_<column>` = {"operation", "value"} as JSON,
    the way its own links do (restate-server 1.7's UI). Without them it opens on running invocations
    only, which on an idle stack is an empty list.
    """
    after = since.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    query = {
        "filter_target_service_name": _compact({"operation": "IN", "value": ["ReportChain"]}),
        "filter_created_at": _compact({"operation": "AFTER", "value": after}),
        "sort_field": "created_at",
        "sort_order": "DESC",
    }
    return f"{admin_url}/ui/invocations?{urlencode(query)}"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))  # as the UI's own JSON.stringify writes it
