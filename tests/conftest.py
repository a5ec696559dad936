"""Session fixtures: one real local stack (Kafka, restate-server, worker) for the
whole test session, on ports shifted by 10000 so a running `make up` stack is
left alone. If it cannot start, every test that needs it fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.config import StackConfig
from tests.harness import TestStack


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    test_stack = TestStack(StackConfig.for_tests())
    try:
        test_stack.start(fresh=True)
    except Exception:
        test_stack.stack.down()
        raise
    yield test_stack
    test_stack.stop()


@pytest.fixture
def offline_stack(stack: TestStack) -> TestStack:
    """The stack with the worker on the offline provider (the default)."""
    stack.use_worker_env()
    return stack
