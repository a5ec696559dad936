"""The seeded fault schedule: which LLM call fails how, and when which process dies.

Everything is a pure function of the seed, so a failing run can be replayed with the
same decisions. LLM decisions hash (seed, report, step, attempt) instead of drawing
from a shared random stream: the order in which concurrent calls arrive then cannot
change which call gets which fault.
"""

from __future__ import annotations

import hashlib
import random
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator


class LLMFault(StrEnum):
    """What the test LLM server does instead of answering correctly."""

    SERVER_ERROR = "5xx"
    RATE_LIMIT = "429"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    UNGROUNDED = "ungrounded"


class LLMFaultRates(BaseModel):
    """Probability of each fault per LLM call (attempt); the rest are answered correctly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server_error: float = Field(default=0.04, ge=0, le=1)
    rate_limit: float = Field(default=0.02, ge=0, le=1)
    timeout: float = Field(default=0.01, ge=0, le=1)
    malformed: float = Field(default=0.02, ge=0, le=1)
    ungrounded: float = Field(default=0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> LLMFaultRates:
        if self.total > 1:
            raise ValueError(f"the LLM fault rates add up to {self.total:g}, more than 1")
        return self

    @property
    def total(self) -> float:
        return self.server_error + self.rate_limit + self.timeout + self.malformed + self.ungrounded

    def ordered(self) -> list[tuple[LLMFault, float]]:
        return [
            (LLMFault.SERVER_ERROR, self.server_error),
            (LLMFault.RATE_LIMIT, self.rate_limit),
            (LLMFault.TIMEOUT, self.timeout),
            (LLMFault.MALFORMED, self.malformed),
            (LLMFault.UNGROUNDED, self.ungrounded),
        ]


def uniform(seed: int, *parts: str) -> float:
    """A number in [0, 1) determined by the seed and the parts, the same in every process."""
    digest = hashlib.blake2b("\x1f".join((str(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def llm_fault(seed: int, rates: LLMFaultRates, report_id: str, step: str, attempt: int) -> LLMFault | None:
    """The fault for the `attempt`-th call (from 1) the LLM server receives for (report, step), if any."""
    draw = uniform(seed, "llm", report_id, step, str(attempt))
    cumulative = 0.0
    for fault, rate in rates.ordered():
        cumulative += rate
        if draw < cumulative:
            return fault
    return None


# A stack component: a kind (every one of it) or one process of a cluster, e.g. `restate-2`, `worker-1`.
Component = Annotated[str, StringConstraints(pattern=r"^(worker|restate|kafka)(-[1-9])?$")]


def component_kind(component: str) -> str:
    """`restate-2` -> `restate`."""
    return component.split("-", 1)[0]


class ProcessFault(BaseModel):
    """SIGKILL `component` at `at_s` seconds into the run, keep it down `down_s`, then restart it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_s: float
    component: Component
    down_s: float = 0.0


def process_schedule(
    seed: int,
    duration: float,
    worker_kill_every: float,
    *,
    restate_kill: bool = True,
    kafka_kill: bool = True,
    restate_down_s: float = 1.0,
    kafka_down_s: float = 5.0,
) -> list[ProcessFault]:
    """Worker kills about every `worker_kill_every` s (jittered by up to 20%), one restate-server
    kill in the first half and one Kafka kill in the second half of `duration`, sorted by time."""
    rng = random.Random(f"{seed}/processes")
    faults: list[ProcessFault] = []
    if worker_kill_every > 0:
        n = 1
        while n * worker_kill_every < duration:
            at = n * worker_kill_every + rng.uniform(-0.2, 0.2) * worker_kill_every
            faults.append(ProcessFault(at_s=round(min(at, duration), 1), component="worker"))
            n += 1
    if restate_kill:
        at = rng.uniform(0.3, 0.45) * duration
        faults.append(ProcessFault(at_s=round(at, 1), component="restate", down_s=restate_down_s))
    if kafka_kill:
        at = rng.uniform(0.6, 0.75) * duration
        faults.append(ProcessFault(at_s=round(at, 1), component="kafka", down_s=kafka_down_s))
    return sorted(faults, key=lambda f: f.at_s)
