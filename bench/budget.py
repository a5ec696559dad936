"""The LLM budget scenario (worker/budget), against the test LLM server in its own process.

1. What asking costs: the same load (OVERHEAD_IN_FLIGHT reports in flight, LATENCY s per call) with no
   budget, with a budget that never binds, and with none again (the two runs without bracket the one
   with, so a drift of the machine's load shows). Added latency per call is the p50 difference over
   the three calls of a report; CPU is per 1,000 reports, for the worker and restate-server.
2. Whether it holds, and lets through what it allows: a backlog (HOLD_IN_FLIGHT reports in flight)
   against a budget of BUDGET_RPM requests per minute, well below what the pipeline could do, with the
   server limited to the same rate (it answers 429 beyond it). The server's record of arrivals gives
   the most calls in any rolling minute and the rate after the first minute (the first minute's budget
   is there at once, so the rate is read after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bench import environment as bench_env
from bench.driver import Run
from bench.measure import ProcessWatch
from bench.results import ScenarioResult
from producer.generate import generate_reports
from producer.reports import OutgoingReport
from testllm import peak
from testllm.server import STATS_PATH

LATENCY = 0.5
OVERHEAD_IN_FLIGHT = 10
OVERHEAD_REPORTS = 200
OVERHEAD_WARMUP = 30
UNBOUND_RPM = 10_000
"""A budget of OpenAI's higher tiers: never binding at this load, but asked before every call."""
BUDGET_RPM = 600
HOLD_IN_FLIGHT = 200
HOLD_REPORTS = 600
"""Three calls each: 1,800 calls, three minutes of the budget."""
WINDOW_S = 60.0
THROUGHPUT_TARGET = 0.95
ROLES = {"service": "worker", "restate": "restate", "kafka": "kafka", "llm-server": "llm-server"}


@dataclass(frozen=True)
class HoldResult:
    budget_rpm: int
    reports: int
    failed: int
    lost: int
    calls: int
    rate_limited: int
    peak_per_minute: int
    calls_per_minute_after_first: float
    reports_per_s: float
    in_flight: int

    @property
    def ratio(self) -> float:
        return self.calls_per_minute_after_first / self.budget_rpm

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.lost == 0


@dataclass(frozen=True)
class BudgetResults:
    without: ScenarioResult
    with_budget: ScenarioResult
    without_again: ScenarioResult
    hold: HoldResult

    @property
    def ok(self) -> bool:
        runs = (self.without, self.with_budget, self.without_again)
        return all(r.ok for r in runs) and self.hold.ok


def reports(prefix: str, count: int, seed: int = 3) -> list[OutgoingReport]:
    return list(generate_reports(count, seed=seed, id_prefix=prefix))


def run_budget(env: bench_env.BenchEnvironment, log: Callable[[str], None]) -> BudgetResults:
    env.stop_extra("llm-server")
    url = env.start_llm_server(LATENCY)
    setup = env.stack.setup_config()
    from bench.driver import Driver  # the driver's Kafka clients, for this scenario only

    driver = Driver(env.cfg.kafka_bootstrap, setup.reports_topic, [setup.tables_topic], (setup.dead_letter_topic,))
    try:
        plain = bench_env.openai_env(url)
        budgeted = {**plain, "LLM_REQUESTS_PER_MINUTE": str(UNBOUND_RPM)}
        measured = []
        for key, title, worker_env in (
            ("budget-off", "(5) no budget", plain),
            ("budget-on", f"(5) a budget that never binds ({UNBOUND_RPM:,} requests/min)", budgeted),
            ("budget-off-again", "(5) no budget, again", plain),
        ):
            env.use_worker_env(worker_env)
            warm = driver.run(f"{key} warm-up", reports(f"{key}-w", OVERHEAD_WARMUP), OVERHEAD_IN_FLIGHT)
            if warm.lost or warm.failed:
                raise RuntimeError(f"{key}: the warm-up lost {warm.lost}, dead-lettered {len(warm.failed)}")
            watch = ProcessWatch(_pids(env)).start()
            run = driver.run(key, reports(key, OVERHEAD_REPORTS), OVERHEAD_IN_FLIGHT)
            usage = watch.stop()
            result = ScenarioResult.of(key, title, OVERHEAD_IN_FLIGHT, [run], [usage])
            log(f"{title}: {result.throughput:.1f} reports/s, p50 {result.p50_ms:.0f} ms")
            measured.append(result)

        # The backlog against a budget, on a fresh server that allows exactly as much.
        env.stop_extra("llm-server")
        url = env.start_llm_server(LATENCY, requests_per_minute=BUDGET_RPM)
        # A model of its own: a fresh LLMBudget object, nothing left over from the runs above.
        hold_env = {**bench_env.openai_env(url), "LLM_MODEL": "bench-model-budgeted",
                    "LLM_REQUESTS_PER_MINUTE": str(BUDGET_RPM)}  # fmt: skip
        env.use_worker_env(hold_env)
        log(f"budget {BUDGET_RPM} requests/min: {HOLD_REPORTS} reports, {HOLD_IN_FLIGHT} in flight")
        run = driver.run("budget-hold", reports("budget-hold", HOLD_REPORTS), HOLD_IN_FLIGHT)
        hold = _hold_result(run, url, env)
        log(
            f"budget: most calls in a rolling minute {hold.peak_per_minute} (budget {BUDGET_RPM}), "
            f"{hold.rate_limited} answered 429, {hold.calls_per_minute_after_first:.0f} calls/min after the first "
            f"minute ({hold.ratio:.1%} of the budget)"
        )
    finally:
        driver.close()
        env.stop_extra("llm-server")
    return BudgetResults(measured[0], measured[1], measured[2], hold)


def _pids(env: bench_env.BenchEnvironment) -> dict[str, int]:
    pids = env.pids(*ROLES.values())
    return {role: pids[name] for role, name in ROLES.items()}


def _hold_result(run: Run, url: str, env: bench_env.BenchEnvironment) -> HoldResult:
    base = url.removesuffix("/v1")
    calls = httpx.get(f"{base}{STATS_PATH}", params={"since": "0"}, timeout=30).json()["calls"]
    arrivals = sorted(float(c["at"]) for c in calls)
    first = arrivals[0] if arrivals else 0.0
    later = [a for a in arrivals if a > first + WINDOW_S]
    span = (arrivals[-1] - first - WINDOW_S) if later else 0.0
    return HoldResult(
        budget_rpm=BUDGET_RPM,
        reports=len(run.output_ts),
        failed=len(run.failed),
        lost=run.lost,
        calls=len(calls),
        rate_limited=sum(1 for c in calls if c["rate_limited"]),
        peak_per_minute=peak(((float(c["at"]), int(c["tokens"])) for c in calls), WINDOW_S).requests,
        calls_per_minute_after_first=len(later) / span * 60 if span > 0 else 0.0,
        reports_per_s=run.throughput,
        in_flight=HOLD_IN_FLIGHT,
    )


def render_budget(results: BudgetResults) -> str:
    """The scenario's markdown block."""
    from bench.report import _num, _table, scenarios_table

    off, on, again, hold = results.without, results.with_budget, results.without_again, results.hold
    base_p50 = (off.p50_ms + again.p50_ms) / 2

    def per_1k(role: str) -> float | None:
        values = [r.cpu_per_1k(role) for r in (off, again)]
        return sum(v for v in values if v is not None) / 2 if all(v is not None for v in values) else None

    rows = []
    for role in ("service", "restate"):
        without, with_budget = per_1k(role), on.cpu_per_1k(role)
        added = None if without is None or with_budget is None else (with_budget - without) / 3
        rows.append([f"{'worker' if role == 'service' else 'restate-server'} CPU s per 1,000 reports",
                     _num(without, 2), _num(with_budget, 2), _num(added, 2) + " s per 1,000 calls"])  # fmt: skip
    rows.insert(0, ["p50 latency of a report, ms", _num(base_p50), _num(on.p50_ms),
                    _num((on.p50_ms - base_p50) / 3, 1) + " ms per call"])  # fmt: skip
    verdict = "met" if hold.ratio >= THROUGHPUT_TARGET else "**missed**"
    hold_header = ["reports", "dead letters", "lost", "calls", "429s", "most calls in a rolling minute",
                   "calls/min after the first minute", "of the budget", "target"]  # fmt: skip
    hold_row = [f"{hold.reports:,}", str(hold.failed), str(hold.lost), f"{hold.calls:,}", str(hold.rate_limited),
                f"{hold.peak_per_minute:,} (budget {hold.budget_rpm:,})", _num(hold.calls_per_minute_after_first),
                f"{hold.ratio:.1%}", f">= {THROUGHPUT_TARGET:.0%}: {verdict}"]  # fmt: skip
    return "\n".join(
        [
            f"### (5) Asking for budget: {OVERHEAD_IN_FLIGHT} reports in flight, {LATENCY:g} s per LLM call",
            "",
            scenarios_table([off, on, again]),
            "",
            _table(["", "no budget (mean of the two runs)", "budget", "added by asking"], rows),
            "",
            f"### (6) A budget of {hold.budget_rpm} requests per minute, {hold.in_flight} reports in flight, "
            "server limited to the same rate",
            "",
            _table(hold_header, [hold_row]),
        ]
    )
