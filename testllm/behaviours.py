"""What the test LLM server does for one call (a behaviour), and what it saw (a `Call`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.models import Step


@dataclass(frozen=True)
class Correct:
    """A correct answer, computed from the request; for extract, `quotes` ([{name, quote, unit}]) overrides it.

    `usage` replaces the response's usage block (as a proxy that mangles it would, e.g. a string count).
    """

    quotes: Sequence[Mapping[str, str]] | None = None
    usage: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Status:
    """An HTTP error: `body` (dict -> JSON, str -> verbatim) defaults to an OpenAI-style error object."""

    code: int
    body: Mapping[str, Any] | str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Hang:
    """Wait `seconds` (longer than the client's timeout), then answer correctly to whoever is still listening."""

    seconds: float


@dataclass(frozen=True)
class Malformed:
    """A 200 whose content is not JSON."""

    content: str = "Sure! Here are the metrics you asked for: revenue was about 12.5M."


@dataclass(frozen=True)
class Answer:
    """A 200 with arbitrary content: a dict or list is sent as JSON, a str verbatim (e.g. hallucinated, unsorted)."""

    content: Mapping[str, Any] | Sequence[Any] | str


@dataclass(frozen=True)
class RejectJsonSchema:
    """A 400 like a server without structured outputs, for a json_schema request; other requests answer correctly."""


Behaviour = Correct | Status | Hang | Malformed | Answer | RejectJsonSchema


@dataclass(frozen=True)
class Call:
    """One request as the server saw it."""

    seq: int
    path: str
    report_id: str
    step: str
    model: str
    response_format: str | None
    """The request's `response_format.type`: json_schema, json_object, or None."""
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    headers: dict[str, str]
    """Request headers, with Authorization redacted."""
    behaviour: Behaviour
    status: int
    response_id: str | None
    successful: bool
    """Answered 200 with a correct answer, in time (a Hang's late answer does not count)."""
    received_at: float
    client_port: int = 0
    """The client's TCP port: calls sharing one came over one kept-alive connection."""
    prompt_tokens: int = 0
    """Tokens the answer charged (its usage; 0 for an error)."""
    completion_tokens: int = 0
    rate_limited: bool = False
    """Answered 429 by the server's rate limit (`LLMServer.limit_rate`)."""

    @property
    def prompt(self) -> str:
        """All message contents joined, for assertions about what the model was told."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def step_key(step: Step | str) -> str:
    """The short step name calls are filed under: `Step.EXTRACT`, "Extract metrics" and "extract" agree."""
    if isinstance(step, Step):
        return step.short
    for known in Step:
        if step == known.value:
            return known.short
    return step
