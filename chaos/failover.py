"""One SIGKILL under steady load, accounted and measured.

The cluster tests (tests/cluster) and the benchmark (`make bench`) run the same thing:
reports sent at a steady pace through the test LLM server, one process killed part-way
and restarted `down_s` later, then a wait until every report has its outcome. The
result carries the chaos accounting (missing, conflicts, duplicates, steps run again),
how long the kill delayed the reports it hit, and the (report, step) pairs the LLM server
saw being worked on twice at the same time.

Two attempts of one invocation can overlap only around a partition leadership handover:
when a Restate node dies, and again when it rejoins and takes its partitions back. The
deposed leader's attempt may still make the call its last acknowledged step led to, but
nothing it does after the handover reaches the journal (the log is sealed for its epoch),
so the overlap costs LLM calls, never a second result. Overlaps inside those windows are
counted; one anywhere else fails the run, and so does a second journaled result.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from chaos.accounting import Accounting, LLMCall, account
from chaos.injector import FaultInjector
from chaos.inputs import PlannedInput, build_inputs
from chaos.observe import OutputCollector, invocation_states, journaled_response_ids
from chaos.schedule import ProcessFault
from chaos.sender import Sender
from devstack.stack import Stack
from testllm import LLMServer

# Reports sent this long before the kill may already be in the killed process's hands.
HIT_WINDOW_BEFORE_KILL_S = 2.0
# Leadership moves when a node dies (failure detection: seconds) and again once a restarted node is
# seen alive and has caught up (here up to ~10 s after its restart): overlaps are expected in these.
HANDOVER_AFTER_KILL_S = 10.0
HANDOVER_AFTER_RESTART_S = 20.0


class FailoverPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    victim: str
    """A component name: `restate-2`, `kafka-3`, `worker-1`, or `restate` on a single node."""
    reports: int = 300
    send_seconds: float = 15.0
    kill_at_s: float = 5.0
    down_s: float = 5.0
    drain_timeout_s: float = 180.0
    seed: int = 1


class Concurrent(BaseModel):
    """Two calls for one (report, step) whose spans overlap."""

    report_id: str
    step: str
    first_at: float
    second_at: float


class FailoverReport(BaseModel):
    plan: FailoverPlan
    accounting: Accounting
    killed_at: float
    restarted_at: float | None
    median_latency_s: float
    """End to end (planned send -> first output), reports sent before the kill could reach them."""
    worst_hit_latency_s: float
    """The slowest report sent from shortly before the kill until the restart."""
    concurrent: list[Concurrent]
    """Overlapping calls outside the handover windows: two nodes working on one report at once."""
    handover_overlaps: int
    """Overlapping calls inside the handover windows (a deposed leader's last call): wasted, never journaled."""
    llm_call_seconds: float

    @property
    def pause_s(self) -> float:
        """How much longer the worst-hit report took than a typical one: the failover pause."""
        return max(0.0, self.worst_hit_latency_s - self.median_latency_s)

    @property
    def extra_copies(self) -> int:
        """Output records beyond the first per report (each byte-identical, or the accounting fails)."""
        return sum(d.copies - 1 for d in self.accounting.duplicates)

    def failures(self) -> list[str]:
        found = self.accounting.failures()
        if self.concurrent:
            starts = ", ".join(sorted({f"+{c.second_at - self.killed_at:.1f}s" for c in self.concurrent}))
            found.append(
                f"{len(self.concurrent)} (report, step) worked on twice at once outside a handover "
                f"(starting {starts} after the kill)"
            )
        if self.restarted_at is None:
            found.append(f"{self.plan.victim} did not come back")
        return found

    def summary(self) -> str:
        a = self.accounting
        return (
            f"{self.plan.victim}: {a.inputs} reports, {a.tables} tables, {a.dead_letters} dead letters, "
            f"{len(a.missing)} missing, {len(a.conflicts)} conflicts, {self.extra_copies} duplicate records "
            f"({len(a.differing_duplicates)} differing), {len(a.reruns)} steps re-run, "
            f"{self.handover_overlaps} overlapping calls in handovers; median latency "
            f"{self.median_latency_s:.2f} s, worst hit {self.worst_hit_latency_s:.2f} s, pause {self.pause_s:.2f} s"
        )


def run_failover(
    stack: Stack,
    llm: LLMServer,
    plan: FailoverPlan,
    log: Callable[[str], None] = print,
    earlier_restarts: Sequence[float] = (),
) -> FailoverReport:
    """Run `plan` against a stack that is up, with its workers pointed at `llm`.

    `earlier_restarts`: when Restate nodes were restarted before this run (time.time()); leadership may
    still move back to them during it, a handover like the run's own.
    """
    cfg = stack.cfg
    planned = build_inputs(plan.reports, plan.seed, poison_rate=0.0, max_message_bytes=65536)
    kill = ProcessFault(at_s=plan.kill_at_s, component=plan.victim, down_s=plan.down_s)
    outputs = OutputCollector(cfg.kafka_bootstrap).start()
    sender = Sender(cfg.kafka_bootstrap)
    started = time.time()
    injector = FaultInjector(stack, [kill], lambda: journaled_response_ids(cfg.admin_url), log=log).start(started)
    try:
        sender.send(planned, plan.send_seconds, tick=lambda: None)
        injector.wait_schedule(plan.kill_at_s + plan.down_s + 240)
        sent_ids = {s.report_id for s in sender.sent}
        deadline = time.time() + plan.drain_timeout_s
        while time.time() < deadline and not _quiescent(sent_ids, outputs, cfg.admin_url):
            time.sleep(0.5)
        time.sleep(2.0)  # late duplicates would show up now
    finally:
        injector.stop()
        outputs.stop()

    events = injector.done_events()
    ours = [e for e in events if e.component == plan.victim]
    killed_at = ours[0].killed_at if ours else started + plan.kill_at_s
    restarted_at = ours[0].restarted_at if ours else None
    calls = [LLMCall.of(c) for c in llm.calls()]
    accounting = account(
        sender.sent,
        outputs.records(),
        calls,
        events,
        journaled_before_kills=injector.journal_snapshot(),
        concurrent_grace_s=llm.latency,
    )
    median, worst = _latencies(planned, plan, outputs, started, killed_at, restarted_at)
    windows = [(e.killed_at, e.killed_at + HANDOVER_AFTER_KILL_S) for e in events]
    windows += [(e.restarted_at, e.restarted_at + HANDOVER_AFTER_RESTART_S) for e in events if e.restarted_at]
    windows += [(t, t + HANDOVER_AFTER_RESTART_S) for t in earlier_restarts]
    overlapping = concurrent_calls(calls, llm.latency)
    outside = [c for c in overlapping if not any(start <= c.second_at <= end for start, end in windows)]
    return FailoverReport(
        plan=plan,
        accounting=accounting,
        killed_at=killed_at,
        restarted_at=restarted_at,
        median_latency_s=median,
        worst_hit_latency_s=worst,
        concurrent=outside,
        handover_overlaps=len(overlapping) - len(outside),
        llm_call_seconds=llm.latency,
    )


def _quiescent(sent_ids: set[str], outputs: OutputCollector, admin_url: str) -> bool:
    if not sent_ids <= outputs.ids():
        return False
    states = invocation_states(admin_url)
    return states is not None and all(n == 0 for status, n in states.items() if status != "completed")


def _latencies(
    planned: Sequence[PlannedInput],
    plan: FailoverPlan,
    outputs: OutputCollector,
    started: float,
    killed_at: float,
    restarted_at: float | None,
) -> tuple[float, float]:
    """(median latency before the kill, worst latency of the reports the kill could hit)."""
    first_output: dict[str, float] = {}
    for record in outputs.records():
        if record.key is not None:
            first_output.setdefault(record.key, record.received_at)
    interval = plan.send_seconds / max(1, len(planned))
    before, hit = [], []
    hit_until = restarted_at if restarted_at is not None else killed_at + plan.down_s
    for item in planned:
        planned_at = started + item.index * interval
        done = first_output.get(item.report_id or "")
        if done is None:
            continue
        if planned_at < killed_at - HIT_WINDOW_BEFORE_KILL_S:
            before.append(done - planned_at)
        elif planned_at <= hit_until:
            hit.append(done - planned_at)
    return (statistics.median(before) if before else 0.0), max(hit, default=0.0)


def concurrent_calls(calls: Sequence[LLMCall], call_seconds: float) -> list[Concurrent]:
    """Calls for one (report, step) that started while an earlier one for it was still being answered."""
    by_step: dict[tuple[str, str], list[LLMCall]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c.received_at):
        by_step[(call.report_id, call.step)].append(call)
    return [
        Concurrent(report_id=report_id, step=step, first_at=first.received_at, second_at=second.received_at)
        for (report_id, step), group in by_step.items()
        for first, second in itertools.pairwise(group)
        if second.received_at < first.received_at + call_seconds
    ]
