"""The numbers a benchmark run produces, and the ratios and targets derived from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bench.driver import Run
from bench.measure import ProcessUsage, percentile

# Targets from the "Benchmarks" issue.
WORKER_VS_ENGINE_TARGET = 0.8
LLM_IDEAL_TARGET = 0.9
LLM_TARGET_LEVEL = 100
SOAK_GROWTH_LIMIT = 0.10
# "No collapse": beyond the target level, throughput stays within noise of it.
NO_COLLAPSE = 0.9


@dataclass(frozen=True)
class ScenarioResult:
    key: str
    """Stable identifier, e.g. `offline` or `openai@100`."""
    title: str
    in_flight: int
    reports: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    usage: dict[str, ProcessUsage]
    """By role: `service` (the process doing the work), `restate`, `kafka`, `llm-server`."""
    connections: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    failed: int = 0
    duplicates: int = 0
    ideal: float | None = None
    """For LLM-bound runs: in_flight / (3 x latency), reports/s."""
    llm_latency: float | None = None
    """For LLM-bound runs: seconds per LLM call."""

    round_throughputs: tuple[float, ...] = ()
    """Reports/s of each interleaved round (their spread shows the machine's noise)."""

    @classmethod
    def of(
        cls,
        key: str,
        title: str,
        in_flight: int,
        runs: Sequence[Run],
        usages: Sequence[Mapping[str, ProcessUsage]],
        connections: Sequence[Mapping[str, int]] = (),
    ) -> ScenarioResult:
        """Several rounds as one result: reports over the sum of the rounds' spans, CPU summed, peaks maxed."""
        latencies = [ms for run in runs for ms in run.latencies_ms]
        reports = sum(len(run.output_ts) for run in runs)
        span_s = sum(run.span_s for run in runs)
        roles = {role for usage in usages for role in usage}
        usage = {
            role: ProcessUsage(
                peak_rss_mb=max(u[role].peak_rss_mb for u in usages if role in u),
                cpu_s=sum(u[role].cpu_s for u in usages if role in u),
                wall_s=sum(u[role].wall_s for u in usages if role in u),
            )
            for role in sorted(roles)
        }
        labels = {label for c in connections for label in c}
        return cls(
            key=key,
            title=title,
            in_flight=in_flight,
            reports=reports,
            throughput=reports / span_s if span_s > 0 else 0.0,
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
            usage=usage,
            connections={label: max(c.get(label, 0) for c in connections) for label in sorted(labels)},
            lost=sum(run.lost for run in runs),
            failed=sum(len(run.failed) for run in runs),
            duplicates=sum(run.duplicates for run in runs),
            round_throughputs=tuple(run.throughput for run in runs),
        )

    def with_ideal(self, ideal: float, llm_latency: float) -> ScenarioResult:
        return replace(self, ideal=ideal, llm_latency=llm_latency)

    def cpu_s_per_report(self) -> float:
        """CPU seconds per report summed over every watched process (service, Restate, Kafka, LLM server)."""
        return sum(u.cpu_s for u in self.usage.values()) / self.reports if self.reports else 0.0

    def cpu_ceiling(self, cores: int) -> float | None:
        """Reports/s the machine's cores allow at this CPU cost per report, if nothing else ran on them."""
        per_report = self.cpu_s_per_report()
        return cores / per_report if per_report > 0 else None

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.failed == 0

    def cpu_per_1k(self, role: str) -> float | None:
        usage = self.usage.get(role)
        return usage.cpu_s / self.reports * 1000 if usage is not None and self.reports else None

    def peak_rss_mb(self, role: str) -> float | None:
        usage = self.usage.get(role)
        return usage.peak_rss_mb if usage is not None else None


@dataclass(frozen=True)
class SoakResult:
    reports: int
    samples: list[tuple[int, float]]
    """(reports done after the warm-up, worker RSS in MiB)."""
    lost: int = 0
    failed: int = 0

    @property
    def growth(self) -> float:
        """Largest RSS seen over the first sample, minus one."""
        first = self.samples[0][1]
        return max(rss for _, rss in self.samples) / first - 1

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.failed == 0


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float
    target: str
    met: bool | None
    """None when there is no target."""
    spread: tuple[float, float] | None = None
    """Lowest and highest value over the interleaved rounds."""


@dataclass
class BenchResults:
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    low_load: dict[str, ScenarioResult] = field(default_factory=dict)
    """One report at a time: `offline` (the worker) and `engine-floor`."""
    soak: SoakResult | None = None

    @property
    def ok(self) -> bool:
        runs = [*self.scenarios.values(), *self.low_load.values()]
        return all(r.ok for r in runs) and (self.soak is None or self.soak.ok)

    def ratios(self) -> list[Ratio]:
        s = self.scenarios
        out: list[Ratio] = []
        if "offline" in s and "engine-floor" in s:
            value = s["offline"].throughput / s["engine-floor"].throughput
            met = value >= WORKER_VS_ENGINE_TARGET
            spread = _spread(s["offline"], s["engine-floor"])
            out.append(Ratio("(3)/(2) worker offline / engine floor", value, ">= 0.8", met, spread))
        if "offline" in s and "kafka-floor" in s:
            value = s["offline"].throughput / s["kafka-floor"].throughput
            spread = _spread(s["offline"], s["kafka-floor"])
            out.append(Ratio("(3)/(1) worker offline / Kafka floor", value, "-", None, spread))
        for latency in sorted({r.llm_latency for r in s.values() if r.llm_latency}):
            at_latency = [r for r in s.values() if r.llm_latency == latency]
            worker = [r for r in at_latency if r.key.startswith("openai@")]
            floor = next((r for r in at_latency if r.key.startswith("engine-floor@")), None)
            out.extend(_llm_ratios(worker, floor, latency))
        low = self.low_load
        if "offline" in low and "engine-floor" in low:
            for q, attr in (("p50", "p50_ms"), ("p99", "p99_ms")):
                value = getattr(low["offline"], attr) / getattr(low["engine-floor"], attr)
                out.append(Ratio(f"low-load latency {q}: worker / engine floor", value, "-", None))
        if self.soak is not None:
            growth = self.soak.growth
            out.append(
                Ratio("soak: worker RSS growth", growth, f"< {SOAK_GROWTH_LIMIT:.0%}", growth < SOAK_GROWTH_LIMIT)
            )
        return out


def _llm_ratios(runs: Sequence[ScenarioResult], floor: ScenarioResult | None, latency: float) -> list[Ratio]:
    """Each level against its ideal, the levels past the target's against it (no collapse), and
    the engine floor with sleeping steps against the same ideal (what Restate + Kafka alone reach)."""
    llm = sorted(runs, key=lambda r: r.in_flight)
    out: list[Ratio] = []
    if floor is not None and floor.ideal:
        name = f"(2) engine floor, steps sleeping {latency:g} s / ideal at {floor.in_flight} in flight"
        out.append(Ratio(name, floor.throughput / floor.ideal, "-", None))
    for r in llm:
        assert r.ideal is not None
        value = r.throughput / r.ideal
        targeted = r.in_flight == LLM_TARGET_LEVEL
        out.append(
            Ratio(
                f"(4)/ideal at {r.in_flight} in flight, {latency:g} s per call",
                value,
                f">= {LLM_IDEAL_TARGET}" if targeted else "-",
                value >= LLM_IDEAL_TARGET if targeted else None,
            )
        )
        if targeted and floor is not None and floor.in_flight == r.in_flight:
            name = f"(4)/(2) worker / engine floor at {r.in_flight} in flight, {latency:g} s per call"
            out.append(Ratio(name, r.throughput / floor.throughput, "-", None, _spread(r, floor)))
    # "No collapse": past the target level, more in flight must not mean less throughput.
    base = next((r for r in llm if r.in_flight == LLM_TARGET_LEVEL), None)
    for r in llm:
        if base is not None and r.in_flight > base.in_flight:
            value = r.throughput / base.throughput
            name = f"(4) at {r.in_flight} / at {base.in_flight} in flight, {latency:g} s per call"
            out.append(Ratio(name, value, f">= {NO_COLLAPSE} (no collapse)", value >= NO_COLLAPSE))
    return out


def _spread(a: ScenarioResult, b: ScenarioResult) -> tuple[float, float] | None:
    """Lowest and highest a/b over rounds measured side by side."""
    pairs = [x / y for x, y in zip(a.round_throughputs, b.round_throughputs, strict=False) if y > 0]
    return (min(pairs), max(pairs)) if len(pairs) > 1 else None
