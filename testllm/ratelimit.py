"""A provider-style rate limit for the test server, and the measure of what arrived per rolling window.

The limit works like the providers' own: a request is admitted if it fits, together with
everything admitted in the last `window` seconds, in each configured limit; its tokens are
its prompt plus its `max_tokens` until it is answered, then its actual completion
(as Anthropic's output-token limits and gateways that count usage do). A request that
does not fit gets 429 with Retry-After and OpenAI's x-ratelimit-* headers, and does not
count. `peak()` is the measurement the budget is held to: the most calls and tokens that
*arrived* in any rolling window, whatever their answer.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RateLimit:
    """Per rolling `window` seconds; None = unlimited."""

    requests: int | None = None
    tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    window: float = 60.0


@dataclass
class Admitted:
    at: float
    prompt: int
    completion: int
    """max_tokens until answered, then the actual completion."""


@dataclass
class Limiter:
    """The server's rolling-window limiter (not thread-safe: the server calls it under its lock)."""

    limit: RateLimit
    _admitted: deque[Admitted] = field(default_factory=deque)
    rejected: int = 0

    def admit(self, now: float, prompt: int, max_completion: int) -> tuple[Admitted | None, dict[str, str]]:
        """Admit a request arriving at `now`, or refuse it; either way the x-ratelimit-* headers to send."""
        self._expire(now)
        used_prompt = sum(a.prompt for a in self._admitted)
        used_completion = sum(a.completion for a in self._admitted)
        checks: list[tuple[str, int | None, int, int, Callable[[Admitted], int]]] = [
            ("requests", self.limit.requests, len(self._admitted), 1, lambda a: 1),
            ("tokens", self.limit.tokens, used_prompt + used_completion, prompt + max_completion,
             lambda a: a.prompt + a.completion),
            ("prompt_tokens", self.limit.prompt_tokens, used_prompt, prompt, lambda a: a.prompt),
            ("completion_tokens", self.limit.completion_tokens, used_completion, max_completion,
             lambda a: a.completion),
        ]  # fmt: skip
        headers: dict[str, str] = {}
        waits: list[float] = []
        for name, limit, used, wanted, size in checks:
            if limit is None:
                continue
            reset = self._reset(now, used + wanted - limit, size)
            if name in ("requests", "tokens"):  # the headers OpenAI sends
                headers[f"x-ratelimit-limit-{name}"] = str(limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - used))
                headers[f"x-ratelimit-reset-{name}"] = f"{reset:.3f}s"
            if used + wanted > limit:
                waits.append(reset)
        if waits:
            self.rejected += 1
            headers["retry-after"] = str(max(1, math.ceil(max(waits))))
            headers["retry-after-ms"] = str(math.ceil(max(waits) * 1000))
            return None, headers
        admitted = Admitted(now, prompt, max_completion)
        self._admitted.append(admitted)
        return admitted, headers

    def _expire(self, now: float) -> None:
        while self._admitted and self._admitted[0].at <= now - self.limit.window:
            self._admitted.popleft()

    def _reset(self, now: float, excess: int, size: Callable[[Admitted], int]) -> float:
        """Seconds until `excess` units have left the window (0 when nothing needs to)."""
        if excess <= 0:
            return 0.0
        freed = 0
        for a in self._admitted:
            freed += size(a)
            if freed >= excess:
                return max(0.0, a.at + self.limit.window - now)
        return self.limit.window


@dataclass(frozen=True)
class Peak:
    """The most that arrived within any rolling window."""

    requests: int
    tokens: int


def peak(arrivals: Iterable[tuple[float, int]], window: float = 60.0) -> Peak:
    """`arrivals` are (time, tokens) pairs; a window is [t, t + window) for every arrival time t."""
    ordered = sorted(arrivals)
    most_requests = most_tokens = tokens = 0
    end = 0
    for start, (t, _) in enumerate(ordered):
        while end < len(ordered) and ordered[end][0] < t + window:
            tokens += ordered[end][1]
            end += 1
        most_requests, most_tokens = max(most_requests, end - start), max(most_tokens, tokens)
        tokens -= ordered[start][1]
    return Peak(most_requests, most_tokens)
