"""The scenarios: what runs where, with how many reports in flight, measured how.

Every measurement first sends a warm-up (connections opened, modules imported,
caches warm) and waits for all of it. Scenarios that are compared with each
other (the two floors and the offline worker; both low-load runs) are measured
in interleaved rounds, A B C / B C A / C A B / ..., so a change in the machine's
background load during the run hits all of them alike instead of skewing the
ratio between them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench import environment as bench_env
from bench.budget import BudgetResults, run_budget
from bench.driver import Driver, Run
from bench.environment import BenchEnvironment
from bench.measure import ProcessUsage, ProcessWatch, rss_mb
from bench.options import ENGINE_FLOOR, KAFKA_FLOOR, OFFLINE, OPENAI, Options
from bench.results import LLM_TARGET_LEVEL, BenchResults, ScenarioResult, SoakResult
from producer.generate import generate_reports
from producer.reports import OutgoingReport

SEED, WARMUP_SEED = 1, 2
LOW_LOAD_WARMUP = 20


class ScenarioError(RuntimeError):
    """A scenario could not be measured (e.g. its warm-up lost reports)."""


def reports(prefix: str, count: int, seed: int = SEED) -> list[OutgoingReport]:
    return list(generate_reports(count, seed=seed, id_prefix=prefix))


@dataclass(frozen=True)
class Subject:
    """One thing under load: where its reports go and which processes serve it."""

    key: str
    title: str
    driver: Driver
    roles: Mapping[str, str]
    """Role (service, restate, kafka, llm-server) -> process name (see BenchEnvironment.pids)."""
    connections: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Label -> (role, port): connections to count, see ProcessWatch."""


@dataclass
class _Measured:
    runs: list[Run] = field(default_factory=list)
    usages: list[dict[str, ProcessUsage]] = field(default_factory=list)
    connections: list[dict[str, int]] = field(default_factory=list)


@dataclass
class Bench:
    options: Options
    env: BenchEnvironment
    log: Callable[[str], None]
    results: BenchResults = field(default_factory=BenchResults)
    budget_results: BudgetResults | None = None
    _drivers: dict[str, Driver] = field(default_factory=dict)

    def driver(self, input_topic: str, output_topic: str, failure_topics: tuple[str, ...] = ()) -> Driver:
        if input_topic not in self._drivers:
            bootstrap = self.env.cfg.kafka_bootstrap
            self._drivers[input_topic] = Driver(bootstrap, input_topic, [output_topic], failure_topics)
        return self._drivers[input_topic]

    def close(self) -> None:
        for driver in self._drivers.values():
            driver.close()
        self._drivers.clear()  # the Kafka clients go now, before the broker they would reconnect to

    # -- the subjects -----------------------------------------------------------------------------------

    def kafka_floor(self) -> Subject:
        self.env.start_kafka_floor()
        driver = self.driver(bench_env.KAFKA_FLOOR_IN, bench_env.KAFKA_FLOOR_OUT)
        return Subject(KAFKA_FLOOR, "(1) Kafka floor", driver, {"service": "kafka-floor", "kafka": "kafka"})

    def engine_floor(self, step_latency: float = 0.0, key: str = ENGINE_FLOOR) -> Subject:
        self.env.start_engine_floor(step_latency)
        title = "(2) engine floor" + (f", steps sleeping {step_latency:g} s" if step_latency else "")
        return Subject(
            key,
            title,
            self.driver(bench_env.ENGINE_FLOOR_IN, bench_env.ENGINE_FLOOR_OUT),
            {"service": "engine-floor", "restate": "restate", "kafka": "kafka"},
            {"restate->service": ("service", self.env.engine_floor_port)},
        )

    def worker(self, key: str, title: str, env: Mapping[str, str]) -> Subject:
        self.env.use_worker_env(env)
        setup = self.env.stack.setup_config()
        roles = {"service": "worker", "restate": "restate", "kafka": "kafka"}
        connections = {"restate->service": ("service", self.env.cfg.worker_port)}
        if env.get("LLM_PROVIDER") == "openai":
            roles["llm-server"] = "llm-server"
            connections["worker->llm"] = ("service", self.env.llm_port)
        driver = self.driver(setup.reports_topic, setup.tables_topic, (setup.dead_letter_topic,))
        return Subject(key, title, driver, roles, connections)

    def offline_worker(self) -> Subject:
        return self.worker(OFFLINE, "(3) worker, offline provider", bench_env.OFFLINE_ENV)

    # -- measuring --------------------------------------------------------------------------------------

    def interleaved(
        self, subjects: Sequence[Subject], in_flight: int, count: int, rounds: int, *, warmup: int, prefix: str = ""
    ) -> dict[str, ScenarioResult]:
        """Warm each subject up, then measure `count` reports of each in `rounds` rotating rounds."""
        for s in subjects:
            self.log(f"{s.title}: warm-up, {warmup:,} reports, {in_flight} in flight")
            run = s.driver.run(
                f"{prefix}{s.key} warm-up", reports(f"{prefix}{s.key}-w", warmup, WARMUP_SEED), in_flight
            )
            _check_warmup(s.key, run)
        measured = {s.key: _Measured() for s in subjects}
        per_round = max(1, count // rounds)
        for r in range(rounds):
            order = [*subjects[r % len(subjects) :], *subjects[: r % len(subjects)]]
            self.log(f"round {r + 1}/{rounds}: {per_round:,} reports each, {in_flight} in flight")
            for s in order:
                label = f"{prefix}{s.key}-r{r + 1}"
                pids = self.env.pids(*s.roles.values())
                watch = ProcessWatch({role: pids[name] for role, name in s.roles.items()}, s.connections).start()
                run = s.driver.run(label, reports(label, per_round), in_flight)
                m = measured[s.key]
                m.usages.append(watch.stop())
                m.runs.append(run)
                m.connections.append(watch.max_connections)
                self.log(f"  {s.title}: {run.throughput:,.1f} reports/s" + (f", LOST {run.lost}" if run.lost else ""))
        return {
            s.key: ScenarioResult.of(s.key, s.title, in_flight, m.runs, m.usages, m.connections)
            for s in subjects
            for m in [measured[s.key]]
        }

    # -- the scenarios ----------------------------------------------------------------------------------

    def throughput(self, keys: Sequence[str]) -> None:
        """Scenarios 1-3, interleaved."""
        make = {KAFKA_FLOOR: self.kafka_floor, ENGINE_FLOOR: self.engine_floor, OFFLINE: self.offline_worker}
        subjects = [make[k]() for k in (KAFKA_FLOOR, ENGINE_FLOOR, OFFLINE) if k in keys]
        o = self.options
        results = self.interleaved(subjects, o.in_flight, o.reports, o.rounds, warmup=o.warmup)
        self.results.scenarios.update(results)
        self._log_results(results.values())

    def low_load(self) -> None:
        """One report at a time: the worker against the engine floor, interleaved."""
        subjects = [self.engine_floor(), self.offline_worker()]
        o = self.options
        results = self.interleaved(subjects, 1, o.low_load_reports, o.rounds, warmup=LOW_LOAD_WARMUP, prefix="low-")
        for key, result in results.items():
            self.results.low_load[key] = result
        self._log_results(results.values())

    def stop_floors(self) -> None:
        self.env.stop_extra("kafka-floor")
        self.env.stop_extra("engine-floor")

    def openai(self) -> None:
        """Scenario 4, per pass (seconds per LLM call) one level after the other, each with its own ideal.

        At the target level the engine floor runs too, interleaved, with steps that sleep as long as
        an LLM call takes: how close Restate + Kafka alone come to the ideal at that latency.
        """
        o = self.options
        for latency, levels in o.llm_passes:
            worker = self.worker(OPENAI, "", bench_env.openai_env(self.env.start_llm_server(latency)))
            for level in levels:
                key = llm_key(OPENAI, level, latency)
                title = f"(4) worker, OpenAI provider, {latency:g} s per call, {level} in flight"
                subjects = [Subject(key, title, worker.driver, worker.roles, worker.connections)]
                if level == LLM_TARGET_LEVEL and o.wants(ENGINE_FLOOR):
                    subjects.insert(0, self.engine_floor(latency, key=llm_key(ENGINE_FLOOR, level, latency)))
                # A full window of warm-up: every connection the level needs is open before measuring.
                results = self.interleaved(subjects, level, o.reports, len(subjects), warmup=max(o.warmup, level))
                for s in subjects:
                    self.results.scenarios[s.key] = results[s.key].with_ideal(level / (3 * latency), latency)
                self._log_results(self.results.scenarios[s.key] for s in subjects)
            self.env.stop_extra("llm-server")
        self.env.stop_extra("engine-floor")

    def budget(self) -> None:
        """Scenarios 5 and 6: what asking for LLM budget costs, and whether a budget holds (bench/budget.py)."""
        self.close()  # the budget scenario drives the worker's topics with a driver of its own
        self.budget_results = run_budget(self.env, self.log)

    def soak(self) -> None:
        """Worker RSS over many reports: flat after the warm-up, or a leak."""
        o = self.options
        driver = self.offline_worker().driver
        self.log(f"soak: {o.soak_warmup:,} warm-up + {o.soak_reports:,} reports, RSS sampled {o.soak_samples} times")
        warm = driver.run("soak warm-up", reports("soak-w", o.soak_warmup, WARMUP_SEED), o.in_flight)
        _check_warmup("soak", warm)
        pid = self.env.pids("worker")["worker"]
        every = max(1, o.soak_reports // o.soak_samples)
        samples = [(0, rss_mb(pid))]

        def sample(done: int) -> None:
            if done // every > samples[-1][0] // every:
                samples.append((done, rss_mb(pid)))

        run = driver.run("soak", reports("soak", o.soak_reports), o.in_flight, on_done=sample)
        soak = SoakResult(o.soak_reports, samples, lost=run.lost, failed=len(run.failed))
        self.results.soak = soak
        self.log(f"soak: worker RSS {samples[0][1]:.1f} -> {samples[-1][1]:.1f} MiB ({soak.growth:+.1%} at peak)")

    def _log_results(self, results: Iterable[ScenarioResult]) -> None:
        for r in results:
            self.log(
                f"{r.title}: {r.throughput:,.1f} reports/s, p50 {r.p50_ms:,.0f} ms, p99 {r.p99_ms:,.0f} ms"
                + (f", LOST {r.lost}" if r.lost else "")
                + (f", {r.failed} dead-lettered" if r.failed else "")
            )


def llm_key(subject: str, level: int, latency: float) -> str:
    """E.g. `openai@100/0.2s`: the worker (or `engine-floor`) at 100 in flight, 0.2 s per LLM call."""
    return f"{subject}@{level}/{latency:g}s"


def _check_warmup(key: str, run: Run) -> None:
    if run.lost or run.failed:
        raise ScenarioError(f"{key}: the warm-up lost {run.lost} and dead-lettered {len(run.failed)} reports")
