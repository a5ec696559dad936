"""What a handler does around each LLM attempt when the link's model has a budget.

    spend = LinkSpend(link.budget)                   # per link of a step's chain
    permit = await spend.before(ctx, request_bytes)  # waits durably until granted; None without a budget
    ... ctx.run(the attempt, permit=permit) ...      # the provider spends the permit right before sending
    if spend.after(ctx, ...): ...                    # one-way settle; True: that failure is not an attempt

Waiting is a durable sleep named WAIT_NAME (what `status` counts as waiting for budget):
it survives a crash, and it is not an attempt. A model without a budget asks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import restate
from pydantic import BaseModel, ConfigDict
from restate.exceptions import TerminalError
from restate.serde import JsonSerde

from worker import journaled
from worker.budget import CLAIM_NAME, WAIT_NAME
from worker.budget.permit import MESSAGE_OVERHEAD_TOKENS, Permit
from worker.budget.service import acquire as acquire_handler
from worker.budget.service import budget_key
from worker.budget.service import settle as settle_handler
from worker.budget.window import Ask, Cost, Limits, Outcome, RateLimitAdvice, Settlement
from worker.settings import Settings

T = TypeVar("T")
FREE_THROTTLED = 20
"""429s a budgeted link waits out without using up an attempt; beyond them they count as failed attempts
(a provider that refuses every call, e.g. a request larger than its whole token limit, must not loop forever)."""


_CLAIM: restate.RunOptions[int] = restate.RunOptions(serde=JsonSerde[int]())


class LinkBudget(BaseModel):
    """One model's budget as a chain link uses it. Part of the chain's configuration, which the handler
    journals once per invocation, so a worker restarted with other budgets never changes the control flow
    of an invocation already running."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    """The LLMBudget object that keeps it (provider, endpoint and model); with shards, `key#0`, `key#1`, ..."""
    shards: int = 1
    limits: Limits
    """Per shard: the budget divided by the shards."""
    count_max_tokens: bool
    """Completions count as max_tokens after the call (the provider charges the limit, not the usage)."""
    bytes_per_token: float
    max_tokens: int | None

    @classmethod
    def of(cls, settings: Settings, provider: str, endpoint: str, model: str, timeout: float) -> LinkBudget | None:
        """The model's budget, or None when it is unlimited (then nothing is asked). `endpoint` must be safe
        to show (no user info, no query string)."""
        configured = settings.budget_for(model)
        if not configured.limited:
            return None
        window = settings.llm_budget_window_seconds
        shards = settings.budget_shards(configured)

        def share(per_minute: int | None) -> int | None:
            # Whole windows tile a minute (the window divides 60), and the shards' shares add up to at most
            # the budget: per-window, per-shard limits never add up to more than the per-minute budget.
            return None if per_minute is None else per_minute * window // 60 // shards

        limits = Limits(
            requests=share(configured.requests_per_minute),
            tokens=share(configured.tokens_per_minute),
            prompt_tokens=share(configured.prompt_tokens_per_minute),
            completion_tokens=share(configured.completion_tokens_per_minute),
            send_within_s=settings.llm_budget_send_within_seconds,
            call_timeout_s=timeout,
            window_s=window,
        )
        return cls(
            key=budget_key(provider, endpoint, model),
            shards=shards,
            limits=limits,
            count_max_tokens=settings.llm_budget_completion_count == "max_tokens",
            bytes_per_token=settings.llm_budget_bytes_per_token,
            max_tokens=settings.llm_max_tokens,
        )

    def shard_key(self, shard: int) -> str:
        return self.key if self.shards == 1 else f"{self.key}#{shard}"

    def estimate(self, request_bytes: int, messages: int) -> Cost:
        """An upper bound of a call's tokens: its prompt from the request's size (with 1 byte per token a bound
        for byte-level tokenizers: every token covers a byte at least) and max_tokens for its completion."""
        prompt = math.ceil(request_bytes / self.bytes_per_token) + MESSAGE_OVERHEAD_TOKENS * (messages + 1)
        return Cost(prompt_tokens=prompt, completion_tokens=self.max_tokens or 0)


SUSPEND_AFTER = timedelta(seconds=1)


def service_timeouts(settings: Settings) -> tuple[timedelta | None, timedelta | None]:
    """Restate's inactivity and abort timeouts for the service whose invocations wait for budgets (None: the
    server's defaults, without a budget).

    Restate runs at most `concurrent-invocations-limit` invocations per partition, and one that awaits
    something keeps its slot until its inactivity timeout (restatedev/restate#2761). Invocations waiting for
    budget would so fill the slots of the partition that hosts the LLMBudget object, and the object, which
    alone could release them, would get no slot: one stall of a minute per waiting cohort. Suspending after
    SUSPEND_AFTER of waiting frees the slot. The abort timeout still lets the longest call finish: the SDK
    suspends only once a running call's result is journaled.
    """
    if settings.provider == "offline" or not settings.any_budget:
        return None, None  # Restate's defaults
    longest_call = settings.llm_budget_send_within_seconds + settings.llm_timeout_seconds
    return SUSPEND_AFTER, timedelta(seconds=longest_call + 60)


async def acquire(ctx: restate.Context, budget: LinkBudget, estimate: Cost) -> Permit:
    """Ask the model's budget for one call, waiting durably (a named sleep) until it is granted and due."""
    # A shard drawn from the invocation's journaled random sequence: spread evenly, the same on replay.
    key = budget.shard_key(ctx.random().randrange(budget.shards) if budget.shards > 1 else 0)
    waited = 0.0
    while True:
        ask = Ask(limits=budget.limits, estimate=estimate, waited=waited > 0)
        answer = await _cancellable(ctx.object_call(acquire_handler, key=key, arg=ask))
        if answer.wait_s > 0:
            # Paced (ask again then), or granted for a moment capacity frees up (send then).
            waited += answer.wait_s
            try:
                await journaled.sleep(ctx, timedelta(seconds=answer.wait_s), name=WAIT_NAME)
            except journaled.Cancelled:
                if answer.grant is not None:  # cancelled before it could send: the capacity goes back at once
                    _return_unsent(ctx, key, answer.grant.id, budget.limits)
                raise
        if answer.grant is not None:
            break
    grant = answer.grant
    # One grant, one request: the attempt that runs this claim live is the only one that may send with the
    # grant. An attempt that finds the claim already in the journal was preceded by one that may have sent
    # before it was interrupted (a crash): its permit is stale (Permit.spend returns the grant as abandoned).
    claimed_here = False

    def claim() -> int:
        nonlocal claimed_here
        claimed_here = True
        return grant.id

    await _cancellable(ctx.run_typed(CLAIM_NAME, claim, _CLAIM))
    return Permit(key, grant.id, grant.send_from, grant.send_by, fresh=claimed_here, waited_s=round(waited, 3))


def _return_unsent(ctx: restate.Context, key: str, grant_id: int, limits: Limits) -> None:
    settlement = Settlement(grant_id=grant_id, outcome=Outcome.UNSENT, limits=limits)
    ctx.object_send(settle_handler, key=key, arg=settlement)


async def _cancellable(future: Awaitable[T]) -> T:
    """Await a journaled call or run; a cancel of the invocation raises journaled.Cancelled (a dead letter)."""
    try:
        return await future
    except TerminalError as exc:
        if journaled.is_cancellation(exc):
            raise journaled.Cancelled() from None
        raise


def settle(
    ctx: restate.Context,
    budget: LinkBudget,
    permit: Permit,
    outcome: Outcome,
    estimate: Cost,
    used: Cost | None = None,
    throttled: RateLimitAdvice | None = None,
    ended_at: float | None = None,
) -> None:
    """Tell the budget how the call ended (one-way): what it counts until one window on."""
    if used is not None and budget.count_max_tokens:
        used = used.model_copy(update={"completion_tokens": max(used.completion_tokens, estimate.completion_tokens)})
    settlement = Settlement(
        grant_id=permit.grant_id,
        outcome=outcome,
        used=used,
        limits=budget.limits,
        throttled=throttled,
        ended_at=ended_at,
    )
    ctx.object_send(settle_handler, key=permit.key, arg=settlement)


class LinkSpend:
    """One chain link's use of its model's budget across its attempts (journaled calls only), and the 429s
    and waits to note in the step's ledger entry."""

    def __init__(self, budget: LinkBudget | None) -> None:
        self._budget = budget
        self._current: tuple[LinkBudget, Permit, Cost] | None = None
        self.waited_s = 0.0
        self.throttled = 0
        """429s answered to this link's calls, with or without a budget."""

    @property
    def noted(self) -> bool:
        """Whether the step's ledger entry has something to say about rate limits (429s, waits)."""
        return bool(self.throttled or self.waited_s)

    async def before(self, ctx: restate.Context, request: tuple[int, int] | None) -> Permit | None:
        """Wait for the budget to grant the next attempt's call. `request` is its size in bytes and its
        number of messages; None when the attempt will call no model (or there is no budget)."""
        self._current = None
        if self._budget is None or request is None:
            return None
        estimate = self._budget.estimate(*request)
        permit = await acquire(ctx, self._budget, estimate)
        self._current = (self._budget, permit, estimate)
        self.waited_s += permit.waited_s
        return permit

    def after(
        self,
        ctx: restate.Context,
        *,
        used: Cost | None = None,
        refused: Outcome | None = None,
        throttled: RateLimitAdvice | None = None,
        ended_at: float | None = None,
    ) -> bool:
        """Settle the attempt's grant: `used` when the call succeeded, `refused` when the attempt did not use
        its grant (Permit.spend refused it), `throttled` when the server answered 429. True when the attempt
        does not count: its grant went unused, or it was a 429 the budget (now paused and lowered) waits out."""
        self.throttled += throttled is not None
        if self._current is None:
            return False
        budget, permit, estimate = self._current
        self._current = None
        settle(ctx, budget, permit, refused or Outcome.SENT, estimate, used, throttled, ended_at)
        return refused is not None or (throttled is not None and self.throttled <= FREE_THROTTLED)
