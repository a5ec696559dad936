"""Where a local stack lives, which processes it runs and which ports they use.

Two profiles: `single` (one Kafka broker, one restate-server, the worker) and
`cluster` (three Kafka brokers, three restate-server nodes, several worker
processes behind one HTTP/2 balancer). The default stack (`make up`) uses the
documented ports. A test session runs its own stack with every port shifted by
an offset and its own run directory, so `make test` never fights with a stack a
person left running.

Port layout (offset 0). The n-th broker or node takes the first port + n - 1:

| what | single | cluster |
|---|---|---|
| Kafka brokers | 9092 | 9092, 9093, 9094 |
| Kafka controllers | 9093 | 9095, 9096, 9097 |
| Restate ingress / admin / node | 8080 / 9070 / 5122 | 8080-8082 / 9070-9072 / 5122-5124 |
| what Restate calls | 9080 (the worker, or the balancer) | 9080 (the balancer) |
| worker processes behind the balancer | 9081, 9082, ... | 9081, 9082, ... |
| the local LLM (LLM_PROVIDER=local) | 8090 | 8090 |

No two of these ports differ by a multiple of 100 below 1000 (tests/test_devstack.py
checks it), so stacks whose offsets differ by 100, 200, ... 900 never collide.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
KAFKA_LIBS = CACHE_DIR / "kafka-libs"
NODE_MODULES = REPO_ROOT / "node_modules"
RESTATE_TOML = REPO_ROOT / "restate.toml"
RUN_ROOT = REPO_ROOT / ".run"
KAFKA_CLUSTER_ID = "cmVwb3J0LWNoYWluLWRldg"  # any 22-char base64 UUID; fixed so re-formatting is reproducible

# Worker processes sit on the ports after the balancer's (9081-9089); the benchmark's
# extra processes take the next two, below the first Kafka port.
MAX_WORKER_PROCESSES = 9


@dataclass(frozen=True)
class Profile:
    """How many of each process a stack runs."""

    name: str
    kafka_nodes: int
    restate_nodes: int
    worker_processes: int
    """The default; WORKER_PROCESSES (or `make up WORKERS=N`) overrides it."""
    kafka_controller_port: int
    """The first controller's port: in a cluster 9093 and 9094 are brokers."""


SINGLE = Profile("single", kafka_nodes=1, restate_nodes=1, worker_processes=1, kafka_controller_port=9093)
CLUSTER = Profile("cluster", kafka_nodes=3, restate_nodes=3, worker_processes=2, kafka_controller_port=9095)
PROFILES = {p.name: p for p in (SINGLE, CLUSTER)}


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (choose from {', '.join(PROFILES)})") from None


def worker_processes_from_env(profile: Profile) -> int:
    """WORKER_PROCESSES from the settings, else the profile's default."""
    from worker.settings import get_settings

    return get_settings().worker_processes or profile.worker_processes


@dataclass(frozen=True)
class StackConfig:
    run_dir: Path = RUN_ROOT / "stack"
    profile: Profile = SINGLE
    worker_processes: int = 1
    kafka_port: int = 9092
    """The first broker; the others follow."""
    kafka_controller_port: int = SINGLE.kafka_controller_port
    restate_ingress_port: int = 8080
    restate_admin_port: int = 9070
    restate_node_port: int = 5122
    worker_port: int = 9080
    """What Restate calls: the worker itself, or the balancer in front of several."""
    llm_port: int = 8090
    """llama.cpp's server, run only for LLM_PROVIDER=local."""
    # Extra environment for the worker processes (on top of the caller's environment).
    worker_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.worker_processes <= MAX_WORKER_PROCESSES:
            raise ValueError(f"worker_processes must be 1 to {MAX_WORKER_PROCESSES}, not {self.worker_processes}")

    @classmethod
    def create(
        cls,
        profile: Profile = SINGLE,
        worker_processes: int | None = None,
        offset: int = 0,
        run_dir: Path | None = None,
    ) -> StackConfig:
        """A stack of `profile` with every port shifted by `offset`."""
        return cls(
            run_dir=run_dir or RUN_ROOT / ("stack" if profile == SINGLE else profile.name),
            profile=profile,
            worker_processes=worker_processes or profile.worker_processes,
            kafka_port=9092 + offset,
            kafka_controller_port=profile.kafka_controller_port + offset,
            restate_ingress_port=8080 + offset,
            restate_admin_port=9070 + offset,
            restate_node_port=5122 + offset,
            worker_port=9080 + offset,
            llm_port=8090 + offset,
        )

    @classmethod
    def for_tests(
        cls, offset: int | None = None, profile: Profile = SINGLE, worker_processes: int | None = None
    ) -> StackConfig:
        """Every port shifted by `offset` (default $TEST_STACK_OFFSET or 10000), with its own run directory.

        Offsets that differ by a multiple of 100 (up to 900) never collide, so
        several test sessions can run side by side.
        """
        offset = int(os.environ.get("TEST_STACK_OFFSET", "10000")) if offset is None else offset
        suffix = "" if profile == SINGLE else f"-{profile.name}"
        return cls.create(profile, worker_processes, offset, run_dir=RUN_ROOT / f"test-{offset}{suffix}")

    # -- how many of each ---------------------------------------------------------
    @property
    def shape_file(self) -> Path:
        """Written by `up`: how many worker processes the running stack has."""
        return self.run_dir / "shape.json"

    def recorded(self) -> StackConfig:
        """This stack as `up` last started it (its worker processes may differ from today's environment)."""
        try:
            count = int(json.loads(self.shape_file.read_text())["worker_processes"])
        except (OSError, ValueError, KeyError, TypeError):
            return self
        return replace(self, worker_processes=count) if 1 <= count <= MAX_WORKER_PROCESSES else self

    def record(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        shape = {"profile": self.profile.name, "worker_processes": self.worker_processes}
        self.shape_file.write_text(json.dumps(shape))

    @property
    def kafka_nodes(self) -> int:
        return self.profile.kafka_nodes

    @property
    def restate_nodes(self) -> int:
        return self.profile.restate_nodes

    @property
    def balanced(self) -> bool:
        """Whether a balancer stands between Restate and the worker processes."""
        return self.worker_processes > 1 or self.profile != SINGLE

    def worker_process_port(self, index: int) -> int:
        """The port of worker process `index` (1-based); without a balancer, the one worker's."""
        return self.worker_port + index if self.balanced else self.worker_port

    def ports(self) -> list[int]:
        """Every port this stack listens on."""
        ports: list[int] = []
        for n in range(self.kafka_nodes):
            ports += [self.kafka_port + n, self.kafka_controller_port + n]
        for n in range(self.restate_nodes):
            ports += [self.restate_ingress_port + n, self.restate_admin_port + n, self.restate_node_port + n]
        ports += [self.worker_process_port(i) for i in range(1, self.worker_processes + 1)]
        if self.balanced:
            ports.append(self.worker_port)
        return [*ports, self.llm_port]

    # -- addresses clients use ----------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + n}" for n in range(self.kafka_nodes))

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.restate_admin_port}"

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.restate_ingress_port}"

    @property
    def llm_url(self) -> str:
        """The local LLM server's OpenAI base URL (what the worker gets as LOCAL_LLM_URL)."""
        return f"http://127.0.0.1:{self.llm_port}/v1"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}"
