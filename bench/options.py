"""What one benchmark run measures, and how much of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devstack.config import REPO_ROOT

KAFKA_FLOOR = "kafka-floor"
ENGINE_FLOOR = "engine-floor"
OFFLINE = "offline"
OPENAI = "openai"
LOW_LOAD = "low-load"
SOAK = "soak"
EXTRACTION = "extraction"
SCALING = "scaling"
BUDGET = "budget"
DEFAULT_SCENARIOS = (KAFKA_FLOOR, ENGINE_FLOOR, OFFLINE, OPENAI, LOW_LOAD, EXTRACTION, BUDGET, SCALING)
# The scenarios run on the bench's single-node stack (the scaling one starts stacks of its own after
# that one stopped; the extraction score needs none).
STACK_SCENARIOS = (KAFKA_FLOOR, ENGINE_FLOOR, OFFLINE, OPENAI, LOW_LOAD, SOAK, BUDGET)
# The soak takes minutes more, so it runs only when asked for (`--soak` or `--scenarios soak`).
SCENARIOS = (*DEFAULT_SCENARIOS, SOAK)

DOCS = REPO_ROOT / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Options:
    reports: int = 2000
    """Measured reports per scenario (and per in-flight level)."""
    warmup: int = 200
    """Reports sent and completed before each measurement (not measured)."""
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    rounds: int = 4
    """Interleaved rounds for the compared scenarios (floors vs worker; low load)."""
    in_flight: int = 256
    """Reports in flight for the throughput scenarios (1-3): enough to saturate this machine."""
    levels: tuple[int, ...] = (100, 500)
    """Reports in flight for the OpenAI scenario's first pass, at `llm_latency`."""
    llm_latency: float = 0.2
    """Seconds per LLM call in the first pass: so fast that the machine's CPU, not the LLM, runs out."""
    slow_levels: tuple[int, ...] = (100, 500)
    """Reports in flight for the second pass, at `slow_llm_latency`."""
    slow_llm_latency: float = 1.0
    """Seconds per LLM call in the second pass (0 skips it): a fast real LLM; real calls take seconds."""
    low_load_reports: int = 200
    soak_reports: int = 20_000
    soak_warmup: int = 2_000
    soak_samples: int = 20
    """RSS samples taken evenly over the soak (after its warm-up)."""
    scaling_reports: int = 1000
    """Measured reports per subject and round of the scaling scenario (1 vs 2 workers, single vs cluster)."""
    scaling_in_flight: int = 100
    scaling_llm_latency: float = 0.2
    failover_reports: int = 150
    """Reports sent over 15 s around each kill of the scaling scenario."""
    port_offset: int = 10500
    docs: Path | None = DOCS
    keep_stack: bool = False

    @classmethod
    def quick(cls) -> Options:
        """A smoke-sized run (about two minutes) for developing the harness; numbers are indicative only."""
        return cls(
            reports=300,
            warmup=50,
            rounds=2,
            low_load_reports=30,
            soak_reports=3_000,
            soak_warmup=500,
            docs=None,
            scaling_reports=200,
            failover_reports=100,
        )

    @property
    def llm_passes(self) -> list[tuple[float, tuple[int, ...]]]:
        """(seconds per LLM call, levels of reports in flight) for each pass of the OpenAI scenario."""
        passes = [(self.llm_latency, self.levels), (self.slow_llm_latency, self.slow_levels)]
        return [(latency, levels) for latency, levels in passes if latency > 0 and levels]

    def wants(self, scenario: str) -> bool:
        return scenario in self.scenarios

    @property
    def soak(self) -> bool:
        return self.wants(SOAK)
