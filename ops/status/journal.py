"""Restate's rows read into the status models: invocation counts, latency percentiles, and for one
invocation the step it is on, the report it carries and its last failure (journal and events)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ops.status.models import EventFailure, Invocation, InvocationCounts, JournalPosition, Percentiles
from worker.intake import read_report
from worker.models import FALLBACK_MARKER

log = logging.getLogger("ops.status")

# Statuses sys_invocation reports for an invocation that has not completed (restate-server 1.7).
IN_FLIGHT = ("pending", "scheduled", "ready", "running", "backing-off", "suspended", "paused")


def count_invocations(rows: Sequence[Mapping[str, Any]]) -> InvocationCounts:
    counts: dict[str, int] = {}
    other: dict[str, int] = {}
    for row in rows:
        status, n = str(row.get("status")), int(row.get("n") or 0)
        if status == "completed":
            key = "completed_failure" if row.get("completion_result") == "failure" else "completed_success"
        elif status in IN_FLIGHT:
            key = status.replace("-", "_")
        else:
            other[status] = other.get(status, 0) + n
            continue
        counts[key] = counts.get(key, 0) + n
    return InvocationCounts(**counts, other=other)


def fallback_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """{step: {link: count}} from the chain's "<step>: fallback to <link>" markers (worker/chain.py)."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        step, _, link = str(row.get("name")).partition(FALLBACK_MARKER)
        if link:
            counts.setdefault(step, {})[link] = counts.get(step, {}).get(link, 0) + int(row.get("n") or 0)
    return counts


def percentiles_of(row: Mapping[str, Any] | None) -> Percentiles:
    if not row or not row.get("n"):
        return Percentiles()

    def rounded(value: Any) -> float | None:
        return None if value is None else round(float(value), 1)

    return Percentiles(count=int(row["n"]), p50=rounded(row.get("p50")), p95=rounded(row.get("p95")),
                       p99=rounded(row.get("p99")))  # fmt: skip


def journal_position(invocation_id: str, entries: Sequence[Mapping[str, Any]]) -> JournalPosition:
    """Which step an invocation is on, which it finished, and which report it carries."""
    names: dict[int, str] = {}
    order: list[int] = []
    done: set[int] = set()
    report_id = source = None
    for entry in entries:
        if entry.get("input_json"):
            report_id, source = _input_report(invocation_id, str(entry["input_json"]))
        try:
            lite = json.loads(entry.get("entry_lite_json") or "{}")
        except json.JSONDecodeError:
            continue
        run = (lite.get("Command") or {}).get("Run")
        if isinstance(run, dict) and "completion_id" in run:
            names[run["completion_id"]] = str(run.get("name") or "")
            order.append(run["completion_id"])
        notification = lite.get("Notification") or {}
        if (notification.get("ty") or {}).get("Completion") == "Run":
            completion = (notification.get("id") or {}).get("CompletionId")
            if isinstance(completion, int):
                done.add(completion)
    pending = [names[c] for c in order if c not in done]
    return JournalPosition(
        step=pending[-1] if pending else None,
        completed_steps=[names[c] for c in order if c in done],
        report_id=report_id,
        source=source,
    )


def _input_report(invocation_id: str, input_json: str) -> tuple[str | None, str | None]:
    """The report id exactly as the worker derives it, and the record's coordinates.

    Whatever the input holds (any bytes, any headers), this answers: at worst (None, None).
    """
    try:
        command = json.loads(input_json)["Command"]["Input"]
        headers = {str(h["name"]): str(h["value"]) for h in command.get("headers", [])}
        payload = command.get("payload")
        raw = bytes(payload) if isinstance(payload, list) else None
        intake = read_report(raw, headers, invocation_id, sys.maxsize, sys.maxsize)
    except Exception as exc:  # noqa: BLE001 - status must answer for any journal
        log.warning("cannot read the input of %s: %s", invocation_id, type(exc).__name__)
        return None, None
    s = intake.source
    source = f"{s.topic}/{s.partition}/{s.offset}" if s.topic is not None else None
    return safe_text(intake.report_id), source and safe_text(source)


def safe_text(text: str) -> str:
    """`text` with any lone surrogate written as its escape: a model (and JSON) can hold it."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def event_failure(events: Sequence[Mapping[str, Any]]) -> EventFailure:
    """From `TransientError` events and the `Paused` event (which repeats the last failure)."""
    found = EventFailure()
    for event in events:  # oldest first: the last one wins
        try:
            body = json.loads(event.get("event_json") or "{}")
        except json.JSONDecodeError:
            continue
        kind = event.get("event_type")
        failure = body.get("last_failure") if kind == "Paused" else body if kind == "TransientError" else None
        paused_at = _timestamp(event.get("appended_at")) if kind == "Paused" else found.paused_at
        if isinstance(failure, dict):
            code = failure.get("error_code")
            found = EventFailure(
                message=f"[{code}] {failure.get('error_message', '')}" if code else failure.get("error_message"),
                code=failure.get("restate_doc_error_code") or (str(code) if code else None),
                step=failure.get("related_command_name"),
                paused_at=paused_at,
            )
        elif paused_at is not None:
            found = found.model_copy(update={"paused_at": paused_at})
    return found


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _first_line(text: Any) -> str | None:
    lines = safe_text(str(text or "")).strip().splitlines()
    if not lines:
        return None
    return lines[0] if len(lines[0]) <= 300 else lines[0][:297] + "..."


def invocation_of(row: Mapping[str, Any], position: JournalPosition, failure: EventFailure) -> Invocation:
    created = _timestamp(row.get("created_at")) or datetime.fromtimestamp(0, UTC)
    current = row.get("last_failure")  # set while the invocation retries; cleared when it pauses
    step = position.step or row.get("last_failure_related_command_name") or failure.step
    code = row.get("last_failure_error_code") if current else failure.code
    return Invocation(
        id=safe_text(str(row["id"])),
        status=safe_text(str(row.get("status"))),
        report_id=position.report_id,
        source=position.source,
        created_at=created,
        modified_at=_timestamp(row.get("modified_at")),
        paused_at=failure.paused_at if row.get("status") == "paused" else None,
        age_seconds=round(float(row.get("age_ms") or 0) / 1000, 1),
        attempts=None if row.get("retry_count") is None else int(row["retry_count"]),
        # The journal knows the step in progress; a failure may name an earlier, since-recovered one.
        step=safe_text(str(step)) if step else None,
        completed_steps=[safe_text(name) for name in position.completed_steps],
        last_failure=_first_line(current or failure.message),
        last_failure_code=safe_text(str(code)) if code else None,
    )
