"""Session fixtures: one real local stack (Kafka, restate-server, worker) for the
whole test session, on ports shifted by 10000 so a running `make up` stack is
left alone. If it cannot start, every test that needs it fails with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.config import StackConfig
from testllm import LLMServer
from tests.harness import TestStack
from worker.settings import get_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the stack, directly or through another fixture: `make unit` leaves them out."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


@pytest.fixture
def reread_settings() -> Iterator[None]:
    """Settings are read once per process: a test that changes the environment reads them again, then restores them."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


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


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServer]:
    """A real OpenAI-compatible HTTP server on a free port, scripted per test."""
    server = LLMServer().start()
    yield server
    server.stop()


# A recognisable fake key: tests assert it never shows up in records or logs.
TEST_API_KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def openai_stack(stack: TestStack, llm_server: LLMServer) -> TestStack:
    """The stack with the worker on the OpenAI provider, pointed at the test LLM server."""
    llm_server.reset()
    llm_server.latency = 0.0
    stack.use_worker_env(
        {
            "LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_BASE_URL": llm_server.base_url,
            "LLM_MODEL": "test-model",
            "LLM_TIMEOUT_SECONDS": "2",
            "STEP_MAX_ATTEMPTS": "3",
            "LLM_PRICE_PROMPT_PER_1K": "0.15",
            "LLM_PRICE_COMPLETION_PER_1K": "0.6",
        }
    )
    return stack
