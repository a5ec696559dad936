"""Scale-out, measured in one run (`python -m bench --scenarios scaling`, part of `make bench`).

1. The same load on the single-node stack with 1 and with 2 worker processes, in interleaved
   rounds (1, 2 / 2, 1 / ...), then on the cluster (3 brokers, 3 Restate nodes, 2 workers): the
   OpenAI provider against the test LLM server, a fixed number of reports in flight. Throughput,
   latency and CPU per report of every process, and the ratios between them.
2. On each stack, one SIGKILL under steady load per kind of process (chaos/failover.py): the pause
   the worst-hit report saw, the duplicates, the overlapping LLM calls, and nothing lost.

The stacks run one after the other on the bench's ports, so their ratio carries the machine's
drift between them; the per-round spread shows how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench import environment as bench_env
from bench.driver import Driver, Run
from bench.environment import BenchEnvironment
from bench.measure import ProcessWatch, percentile
from bench.options import Options
from bench.report import _num, _table
from bench.scenarios import reports
from chaos.failover import FailoverPlan, FailoverReport, run_failover
from devstack.config import CLUSTER, SINGLE, Profile
from producer.reports import OutgoingReport
from testllm import LLMServer

SINGLE_KILLS = ("restate", "worker-1")
CLUSTER_KILLS = ("restate-2", "kafka-2", "worker-1")


@dataclass(frozen=True)
class LoadRun:
    """One measured round of one subject."""

    reports: int
    throughput: float
    latencies_ms: list[float]
    cpu_s: dict[str, float]
    """CPU seconds by kind of process: kafka, restate, worker, balancer, llm-server."""
    lost: int
    failed: int


@dataclass
class Subject:
    key: str
    title: str
    runs: list[LoadRun] = field(default_factory=list)

    @property
    def reports(self) -> int:
        return sum(r.reports for r in self.runs)

    @property
    def throughput(self) -> float:
        """Reports over the rounds' summed spans (each round's reports / its reports per second)."""
        seconds = sum(r.reports / r.throughput for r in self.runs if r.throughput)
        return self.reports / seconds if seconds else 0.0

    def latency(self, q: float) -> float:
        return percentile([ms for r in self.runs for ms in r.latencies_ms], q)

    def cpu_ms_per_report(self, kind: str | None = None) -> float:
        total = sum(s for r in self.runs for k, s in r.cpu_s.items() if kind in (None, k))
        return 1000 * total / self.reports if self.reports else 0.0

    @property
    def lost(self) -> int:
        return sum(r.lost + r.failed for r in self.runs)


@dataclass
class ScalingResults:
    subjects: dict[str, Subject] = field(default_factory=dict)
    failovers: list[tuple[str, FailoverReport]] = field(default_factory=list)
    """(stack, report) per kill."""

    @property
    def ok(self) -> bool:
        return all(s.lost == 0 for s in self.subjects.values()) and not any(r.failures() for _, r in self.failovers)


def _kind(name: str) -> str:
    return name.split("-", 1)[0] if not name.startswith("llm") else "llm-server"


class Scaling:
    def __init__(self, options: Options, log: Callable[[str], None]) -> None:
        self.o = options
        self.log = log
        self.results = ScalingResults()

    def run(self) -> ScalingResults:
        self._single()
        self._cluster()
        return self.results

    # -- the two stacks ---------------------------------------------------------------------------------

    def _single(self) -> None:
        env = BenchEnvironment(self.o.port_offset, self.log, SINGLE, worker_processes=1)
        subjects = {n: self._subject(f"single-{n}w", f"single node, {n} worker process(es)") for n in (1, 2)}
        try:
            env.up()
            driver = self._load(env)
            for r in range(self.o.rounds):
                for n in (1, 2) if r % 2 == 0 else (2, 1):
                    env.use_worker_processes(n)
                    self._warm(driver, f"single-{n}w-r{r}")
                    subjects[n].runs.append(self._measure(env, driver, f"single-{n}w-r{r}"))
                    self._say(subjects[n])
            driver.close()
            env.use_worker_processes(2)  # as in the cluster: a killed worker has a peer
            self._kills(env, SINGLE, SINGLE_KILLS)
        finally:
            env.down()

    def _cluster(self) -> None:
        env = BenchEnvironment(self.o.port_offset, self.log, CLUSTER, worker_processes=2)
        subject = self._subject("cluster-2w", "cluster (3 brokers, 3 Restate nodes), 2 worker processes")
        try:
            env.up()
            driver = self._load(env)
            self._warm(driver, "cluster-w")
            for r in range(self.o.rounds):
                subject.runs.append(self._measure(env, driver, f"cluster-r{r}"))
                self._say(subject)
            driver.close()
            self._kills(env, CLUSTER, CLUSTER_KILLS)
        finally:
            env.down()

    # -- measuring --------------------------------------------------------------------------------------

    def _subject(self, key: str, title: str) -> Subject:
        self.results.subjects[key] = Subject(key, title)
        return self.results.subjects[key]

    def _load(self, env: BenchEnvironment) -> Driver:
        env.use_worker_env(bench_env.openai_env(env.start_llm_server(self.o.scaling_llm_latency)))
        setup = env.stack.setup_config()
        return Driver(env.cfg.kafka_bootstrap, setup.reports_topic, [setup.tables_topic], (setup.dead_letter_topic,))

    def _warm(self, driver: Driver, label: str) -> None:
        warm = driver.run(f"{label} warm-up", self._reports(f"{label}-w", self.o.scaling_in_flight), 50)
        if warm.lost or warm.failed:
            raise RuntimeError(f"{label}: the warm-up lost {warm.lost} reports, dead-lettered {len(warm.failed)}")

    def _measure(self, env: BenchEnvironment, driver: Driver, label: str) -> LoadRun:
        pids = {**env.stack_pids(), **env.pids("llm-server")}
        watch = ProcessWatch(pids).start()
        run: Run = driver.run(label, self._reports(label, self.o.scaling_reports), self.o.scaling_in_flight)
        usage = watch.stop()
        cpu: dict[str, float] = {}
        for name, u in usage.items():
            cpu[_kind(name)] = cpu.get(_kind(name), 0.0) + u.cpu_s
        return LoadRun(len(run.output_ts), run.throughput, run.latencies_ms, cpu, run.lost, len(run.failed))

    def _reports(self, prefix: str, count: int) -> list[OutgoingReport]:
        return reports(prefix, count, seed=3)

    def _say(self, s: Subject) -> None:
        last = s.runs[-1]
        self.log(f"{s.title}: {last.throughput:,.1f} reports/s, CPU {s.cpu_ms_per_report():,.1f} ms/report")

    def _kills(self, env: BenchEnvironment, profile: Profile, victims: tuple[str, ...]) -> None:
        """One SIGKILL under steady load per victim, through an in-process LLM server (its call log counts)."""
        env.stop_extra("llm-server")
        llm = LLMServer(latency=self.o.scaling_llm_latency).start()
        try:
            env.use_worker_env(bench_env.openai_env(llm.base_url))
            for seed, victim in enumerate(victims, start=1):
                llm.reset()
                plan = FailoverPlan(
                    victim=victim, reports=self.o.failover_reports, send_seconds=15, kill_at_s=5, down_s=5, seed=seed
                )
                report = run_failover(env.stack, llm, plan, log=lambda line: self.log(f"  {line}"))
                self.results.failovers.append((profile.name, report))
                self.log(f"{profile.name}: {report.summary()}")
        finally:
            llm.stop()


def run_scaling(options: Options, log: Callable[[str], None]) -> ScalingResults:
    return Scaling(options, log).run()


def render_scaling(results: ScalingResults, options: Options) -> str:
    subjects = list(results.subjects.values())
    load = (
        f"Load: the OpenAI provider against the test LLM server at {options.scaling_llm_latency:g} s per call, "
        f"{options.scaling_in_flight} reports in flight, {options.scaling_reports:,} reports per subject and round, "
        f"{options.rounds} rounds (single node: 1 and 2 worker processes interleaved)."
    )
    kinds = ("kafka", "restate", "worker", "balancer", "llm-server")
    load_table = _table(
        ["subject", "reports", "reports/s", "p50 ms", "p99 ms", "CPU ms/report", *(f"{k} ms" for k in kinds), "lost"],
        [
            [s.title, f"{s.reports:,}", _num(s.throughput, 1), _num(s.latency(50)), _num(s.latency(99)),
             _num(s.cpu_ms_per_report(), 1), *(_num(s.cpu_ms_per_report(k), 1) for k in kinds), str(s.lost)]
            for s in subjects
        ],
    )  # fmt: skip
    by_key = results.subjects
    ratios = []
    pairs = [
        ("2 / 1 worker processes (single node), reports/s", "single-2w", "single-1w", "throughput"),
        ("cluster / single node (2 workers each), reports/s", "cluster-2w", "single-2w", "throughput"),
        ("cluster / single node, CPU per report", "cluster-2w", "single-2w", "cpu"),
    ]
    for name, a, b, what in pairs:
        if a in by_key and b in by_key:
            sa, sb = by_key[a], by_key[b]
            if what == "throughput":
                value = sa.throughput / sb.throughput
            else:
                value = sa.cpu_ms_per_report() / sb.cpu_ms_per_report()
            rounds = [ra.throughput / rb.throughput for ra, rb in zip(sa.runs, sb.runs, strict=False) if rb.throughput]
            spread = f"{min(rounds):.2f} - {max(rounds):.2f}" if what == "throughput" and rounds else "-"
            ratios.append([name, f"{value:.2f}", spread])
    kills = _table(
        ["stack", "killed (SIGKILL, back 5 s later)", "reports", "lost", "conflicts", "duplicates (all byte-identical)",
         "steps re-run", "overlapping LLM calls (handover)", "median latency s", "worst hit s", "pause s"],
        [
            [stack, r.plan.victim, str(r.accounting.inputs), str(len(r.accounting.missing)),
             str(len(r.accounting.conflicts)),
             f"{r.extra_copies}" + ("" if not r.accounting.differing_duplicates else " (SOME DIFFER)"),
             str(len(r.accounting.reruns)), str(r.handover_overlaps), _num(r.median_latency_s, 2),
             _num(r.worst_hit_latency_s, 2), _num(r.pause_s, 2)]
            for stack, r in results.failovers
        ],
    )  # fmt: skip
    return "\n".join(
        [
            load,
            "",
            load_table,
            "",
            _table(["ratio (same run)", "value", "per round"], ratios),
            "",
            f"Kills: {options.failover_reports} reports sent over 15 s, the process SIGKILLed at 5 s and restarted "
            "5 s later; pause = worst-hit report's latency minus the median latency before the kill.",
            "",
            kills,
        ]
    )
