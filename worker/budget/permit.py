"""The permit an LLM attempt carries to the provider: one grant, spent on one request, in time.

It is the last check before a request leaves (the provider calls `spend()` once it holds a
concurrency slot), and what keeps the budget's premises true (worker/budget/window.py):
a grant covers exactly one request, sent by its deadline, by the attempt that received it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from worker.budget.window import CLOCK_MARGIN_S, Outcome

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat format adds per message (role and separators), and once for the reply."""


class PermitRefused(Exception):
    """The attempt must not send: it returns its grant (with `outcome`) and asks for a new one."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class Permit:
    key: str
    """The LLMBudget object (shard) that granted it."""
    grant_id: int
    send_from: float
    """Wall-clock time (time.time()) before which the request must not leave: when the grant starts to occupy."""
    send_by: float
    """Wall-clock deadline for sending (time.time())."""
    fresh: bool
    """This very attempt claimed the grant (worker/budget/gate.py): no earlier attempt can have sent with it."""
    waited_s: float = 0.0
    """How long the call was told to wait for this grant."""
    spent: bool = False

    def spend(self) -> None:
        """Call right before sending the request; raises PermitRefused when it must not be sent."""
        if not self.fresh:
            # An earlier attempt held this grant and may have sent its request before it was interrupted.
            raise PermitRefused(Outcome.ABANDONED, "the budget grant belongs to an interrupted attempt")
        if self.spent:
            # One grant, one request: a second request (e.g. the JSON-mode fallback) needs a grant of its own.
            raise PermitRefused(Outcome.SENT, "the budget grant was spent on an earlier request of this attempt")
        now = time.time()
        if now > self.send_by:
            raise PermitRefused(Outcome.UNSENT, "the budget grant expired while the call waited for a slot")
        if now < self.send_from - CLOCK_MARGIN_S:
            # The durable sleep ended early by this host's clock (clocks that disagree by more than the
            # margin): sending now could arrive before the grant occupies. Return it and ask again.
            raise PermitRefused(Outcome.UNSENT, "the budget grant is not due yet by this host's clock")
        self.spent = True


def prompt_tokens_bound(parts: Iterable[str], bytes_per_token: float = 1.0, messages: int = 0) -> int:
    """An estimate of a prompt's tokens from its text; with 1 byte per token an upper bound for byte-level
    BPE tokenizers (every token covers at least one byte), plus the chat format's overhead."""
    size = sum(len(part.encode("utf-8", "surrogatepass")) for part in parts)
    return math.ceil(size / bytes_per_token) + MESSAGE_OVERHEAD_TOKENS * (messages + 1)
