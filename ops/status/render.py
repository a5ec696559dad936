"""The status as text for a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ops.status.models import Status
from ops.terminal import printable


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return [indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(status: Status) -> str:
    inv, kafka = status.invocations, status.kafka
    window = _duration(status.window_seconds)
    lines = [
        f"{status.target}  at {status.generated_at:%Y-%m-%d %H:%M:%S}Z  window {window}",
        f"  Restate {status.admin_url}   Kafka {kafka.bootstrap_servers}",
        "",
        "Invocations",
        f"  in flight {inv.in_flight:,}: pending {inv.pending:,}  scheduled {inv.scheduled:,}  ready {inv.ready:,}  "
        f"running {inv.running:,}  backing-off {inv.backing_off:,}  suspended {inv.suspended:,}  "
        f"paused {inv.paused:,}" + "".join(f"  {k} {v:,}" for k, v in inv.other.items()),
        f"  completed in the last {window}: success {inv.completed_success:,}  failure {inv.completed_failure:,}",
    ]
    oldest = status.oldest_in_flight
    if oldest is not None:
        where = f"on step '{printable(oldest.step)}'" if oldest.step else "not inside a step"
        lines.append(
            f"  oldest in flight: {oldest.id} (report {printable(oldest.report_id or '?')}), created "
            f"{_duration(oldest.age_seconds)} ago, {oldest.status} {where}"
            + ("" if oldest.attempts is None else f", attempts {oldest.attempts}")
        )
    if inv.paused:
        shown = f" (showing {len(status.paused)})" if len(status.paused) < inv.paused else ""
        lines += ["", f"Paused {inv.paused:,}{shown}: fix the cause, then `restate invocations resume <ID>`"]
        lines += _table(
            ["ID", "REPORT", "PAUSED", "ATTEMPTS", "STEP", "LAST FAILURE"],
            [
                [printable(p.id), _clip(printable(p.report_id or "?"), 40),
                 _since(status.generated_at, p.paused_at or p.modified_at),
                 "-" if p.attempts is None else str(p.attempts),
                 printable(p.step or "-"), _clip(printable(p.last_failure or "-"), 70)]
                for p in status.paused
            ],
        )  # fmt: skip
    lines += ["", f"Step latency, last {window} (ms, journal: step started -> result durable, retries included)"]
    e2e = status.end_to_end_ms
    rows = [[name, f"{p.count:,}", _ms(p.p50), _ms(p.p95), _ms(p.p99)] for name, p in status.step_latency_ms.items()]
    rows.append(["end to end (created -> completed)", f"{e2e.count:,}", _ms(e2e.p50), _ms(e2e.p95), _ms(e2e.p99)])
    lines += _table(["STEP", "COUNT", "P50", "P95", "P99"], rows)
    fallbacks = [
        f"{step} {sum(links.values()):,} ({', '.join(f'to {link} {n:,}' for link, n in sorted(links.items()))})"
        for step, links in status.fallbacks.items()
    ]
    lines += ["", f"Fallbacks, last {window}: " + ("; ".join(fallbacks) if fallbacks else "none")]
    lines += _budgets(status)
    group = kafka.consumer_group
    lines += [
        "",
        "Kafka",
        f"  tables       {kafka.tables.topic:<14} {kafka.tables.records:>9,} records, {kafka.tables.in_window:,} "
        f"in the last {window}",
        f"  dead letters {kafka.dead_letters.topic:<14} {kafka.dead_letters.records:>9,} records, "
        f"{kafka.dead_letters.in_window:,} in the last {window}",
        f"  consumer group {group.group_id} on {group.topic}"
        + (f" (subscription {group.subscription_id})" if group.subscription_id else " (no subscription registered)")
        + f": total lag {group.total_lag:,}",
    ]
    lines += _table(
        ["PARTITION", "COMMITTED", "END", "LAG"],
        [[str(p.partition), "-" if p.committed is None else f"{p.committed:,}", f"{p.end:,}", f"{p.lag:,}"]
         for p in group.partitions],
        indent="    ",
    )  # fmt: skip
    lines.append(f"  note: {group.note}")
    return "\n".join(lines)


def _budgets(status: Status) -> list[str]:
    if not status.budgets and not status.waiting_for_budget:
        return []
    lines = ["", f"LLM budgets (rolling window; {status.waiting_for_budget:,} invocations waiting for budget)"]
    lines += _table(
        ["MODEL", "IN WINDOW", "TOKENS", "IN FLIGHT", "LATER", "SHARE", "GRANTED", "WAITS", "429s", "LAST 429"],
        [[_clip(printable(b.key), 60), f"{b.requests_in_window:,}",
          f"{b.prompt_tokens_in_window + b.completion_tokens_in_window:,}", f"{b.in_flight:,}",
          f"{b.granted_for_later:,}",
          f"{b.share:.0%}" + (f" (paused {b.paused_seconds:g}s)" if b.paused_seconds else ""), f"{b.granted:,}",
          f"{b.told_to_wait:,}", f"{b.throttled:,}", _since(status.generated_at, b.last_throttled_at)
          if b.last_throttled_at else "-"]
         for b in status.budgets],
    )  # fmt: skip
    return lines


def _since(now: datetime, then: datetime | None) -> str:
    return "?" if then is None else _duration(max(0.0, (now - then).total_seconds())) + " ago"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
