"""The test LLM server's provider-style rate limit and its per-window measurement, over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from testllm import LLMServer, RateLimit, Status, peak

REPORT = "<report>\nRevenue was $12.5M, up 22%.\n</report>"


def _ask(server: LLMServer, report_id: str, max_tokens: int | None = None) -> httpx.Response:
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": REPORT}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"X-Report-Id": report_id, "X-Report-Step": "extract", "Authorization": "Bearer k"}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers, timeout=5)


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


def test_requests_beyond_the_limit_get_429_with_the_providers_headers(server: LLMServer) -> None:
    server.limit_rate(RateLimit(requests=3, window=2.0))
    answers = [_ask(server, f"r{i}") for i in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < float(refused.headers["x-ratelimit-reset-requests"].rstrip("s")) <= 2.0
    assert refused.headers["retry-after"] == "2"
    assert len(server.rate_limited_calls()) == 2
    # A refused call does not count: once the first calls leave the window, calls are admitted again.
    time.sleep(float(refused.headers["retry-after-ms"]) / 1000)
    assert _ask(server, "r5").status_code == 200


def test_tokens_count_max_tokens_until_answered_then_the_usage(server: LLMServer) -> None:
    server.limit_rate(RateLimit(tokens=200, window=5.0))
    first = _ask(server, "a", max_tokens=100)
    assert first.status_code == 200
    charged = first.json()["usage"]["total_tokens"]
    # The answer used far less than its max_tokens: what is left is limit - usage.
    assert first.headers["x-ratelimit-remaining-tokens"] == "200"  # counted before it was admitted
    second = _ask(server, "b", max_tokens=100)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(200 - charged)
    too_big = _ask(server, "c", max_tokens=200)
    assert too_big.status_code == 429


def test_the_limit_answers_before_scripts_and_leaves_them_for_admitted_calls(server: LLMServer) -> None:
    server.limit_rate(RateLimit(requests=1, window=5.0))
    server.script("r", "extract", [Status(500)])
    assert _ask(server, "x").status_code == 200
    assert _ask(server, "r").status_code == 429
    assert server.pending("r", "extract") == [Status(500)]


def test_peak_counts_every_arrival_in_any_rolling_window(server: LLMServer) -> None:
    for i in range(4):
        _ask(server, f"r{i}")
    calls = server.calls()
    assert server.peak(window=60).requests == 4
    assert server.peak(window=60).tokens == sum(c.prompt_tokens + c.completion_tokens for c in calls)
    assert peak([(0.0, 1), (0.5, 1), (1.0, 1), (1.6, 1)], window=1.0).requests == 2
    assert peak([(0.0, 5), (59.9, 7), (60.0, 11)], window=60.0).tokens == 18
    assert peak([], window=60.0).requests == 0
