"""Where a local stack lives and which ports it uses.

The default stack (`make up`) uses the documented ports. The test suite runs its
own stack with every port shifted by 10000 and its own run directory, so
`make test` never fights with a stack a person left running.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
KAFKA_LIBS = CACHE_DIR / "kafka-libs"
NODE_MODULES = REPO_ROOT / "node_modules"
RESTATE_TOML = REPO_ROOT / "restate.toml"
KAFKA_CLUSTER_ID = "cmVwb3J0LWNoYWluLWRldg"  # any 22-char base64 UUID; fixed so re-formatting is reproducible


@dataclass(frozen=True)
class StackConfig:
    run_dir: Path = REPO_ROOT / ".run" / "stack"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    restate_ingress_port: int = 8080
    restate_admin_port: int = 9070
    restate_node_port: int = 5122
    worker_port: int = 9080
    llm_port: int = 8090
    """llama.cpp's server, run only for LLM_PROVIDER=local."""
    # Extra environment for the worker process (on top of the caller's environment).
    worker_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_tests(cls, offset: int | None = None) -> StackConfig:
        """Every port shifted by `offset` (default $TEST_STACK_OFFSET or 10000), with its own run directory.

        Offsets that differ by a multiple of 100 (up to 900) never collide, so
        several test sessions can run side by side.
        """
        offset = int(os.environ.get("TEST_STACK_OFFSET", "10000")) if offset is None else offset
        return cls(
            run_dir=REPO_ROOT / ".run" / f"test-{offset}",
            kafka_port=9092 + offset,
            kafka_controller_port=9093 + offset,
            restate_ingress_port=8080 + offset,
            restate_admin_port=9070 + offset,
            restate_node_port=5122 + offset,
            worker_port=9080 + offset,
            llm_port=8090 + offset,
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

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
