"""The budget's bookkeeping: pure functions over the state of one model's budget.

The Restate virtual object `LLMBudget` (worker/budget/service.py) holds one
`BudgetState` per provider + endpoint + model, and calls these functions with its
journaled clock reading, so everything here is deterministic and tested without
Restate (tests/test_budget_window.py).

## What is promised

No more than the budget in any rolling window of W seconds (`Limits.window_s`, 60
by default), as the LLM server sees arrivals: at most `requests` calls, and at most
`tokens` (prompt + completion), `prompt_tokens` and `completion_tokens`, across
every worker process and node.

## How

A grant *occupies* the budget from the moment it is granted until W seconds after
its call ENDED (the caller reports the end with `settle`); its tokens count as the
estimate until the settle replaces them with the reported usage. A grant is made
only if everything occupying at that moment, plus the new call, fits the budget.

Why that is enough (requests; tokens are the same sum with weights): take any
window [a, a + W) at the server and the k calls that arrived in it. Let call k be
the one granted last, at time T. Every other call i was granted at or before T,
and ended at or after its arrival, so after a: its occupancy [granted_i,
ended_i + W] contains T, because T <= arrival_k < a + W <= ended_i + W. So at T all
k - 1 others occupied the budget, and the grant at T means k - 1 < N: k <= N.
For tokens the grant at T means the sum of the others' counted tokens plus call
k's estimate fit, and each counted amount is at least what the server counts (the
estimate is an upper bound until the settle replaces it with the usage).

What keeps the premises true:
- ended_i is when the settle reached the object, or, when the caller says when its call ended (it was
  journaled with the call's result), that reading plus CLOCK_MARGIN_S if it is earlier: settles that
  queue behind asks then do not keep the budget occupied longer. A caller's clock must not lag the
  object's by CLOCK_MARGIN_S or more (NTP keeps hosts within milliseconds).
- A call is sent no earlier than its grant occupies (`send_from`) and at most
  `send_within_s` later (the caller checks both just before sending; a grant
  outside them is returned unsent), and it ends within its timeout. So a grant
  that is never settled (its invocation was killed) can safely stop counting at
  send_by + timeout + W.
- One grant, one send: when an invocation is retried after a crash, the attempt
  that the crash interrupted may already have sent its call. The caller then
  returns the grant as *abandoned* (it occupies as if that call ended as late as
  it could have been sent) and asks for a new one (worker/budget/permit.py).
- The clock is the object's own, journaled, and never goes backwards here (a
  reading earlier than the last one is replaced by it). Settled occupancy ends are
  rounded *up* to BUCKET_S so the state stays small; that only makes it stricter.

## Waiting

A denied caller is told when to ask again, so that waiting callers neither wake
all at once nor let capacity go unused:
- If capacity is known to free up for it (a settled call's occupancy ends), the
  object grants it *for later*: the grant occupies from that moment S on (nobody
  else may take that capacity), and the caller sleeps until S + CLOCK_MARGIN_S and
  then sends, without asking again. The proof above holds with T the moment a
  grant starts to occupy: the call cannot arrive before it. (Asking again after
  the sleep cost a second trip through the object, whose queue is the budget's
  bottleneck under a backlog: every such delay keeps capacity idle for a cycle.)
- Otherwise (everything that occupies the budget is still in flight, or already
  granted for later) the caller is paced: told to come back one budget interval (W / N,
  or the share of a token budget the call needs) after the last caller so told.
  A newcomer queues behind paced callers instead of taking capacity before them.

## Adapting to 429s

A 429 the caller reports pauses every grant until the server's advised time
(Retry-After, or x-ratelimit-reset-* when the remaining count is 0; 1 s without
advice, 60 s at most), and cuts the effective budget to CUT x its current level
(at most once per CUT_COOLDOWN_S, so one burst of 429s counts once) or to the limit
the server advertises (x-ratelimit-limit-*), whichever is lower, never below
MIN_FACTOR. It then grows back linearly by RECOVERY_PER_MINUTE of the configured
budget per minute without a 429 (from half the budget to all of it in 5 minutes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

WINDOW_S = 60.0
"""The rolling window budgets are counted over, unless their limits say otherwise."""
MINUTE_S = 60.0
BUCKET_S = 0.25
"""Settled occupancies are kept per bucket of end times (rounded up): at most WINDOW_S / BUCKET_S of them."""
EXPIRY_MARGIN_S = 5.0
"""Added to the longest possible life of a never-settled grant before it stops counting."""
MIN_WAIT_S = 0.01
CLOCK_MARGIN_S = 0.25
"""Added to a caller's reading of when its call ended: hosts' clocks may disagree by this much."""

CUT = 0.8
CUT_COOLDOWN_S = 10.0
MIN_FACTOR = 0.1
RECOVERY_PER_MINUTE = 0.1
DEFAULT_PAUSE_S = 1.0
MAX_PAUSE_S = 60.0


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Model):
    """One model's budget per rolling window (None = unlimited), and what bounds a grant's life."""

    requests: int | None = Field(default=None, ge=1)
    tokens: int | None = Field(default=None, ge=1, description="Prompt + completion tokens.")
    prompt_tokens: int | None = Field(default=None, ge=1)
    completion_tokens: int | None = Field(default=None, ge=1)
    send_within_s: float = Field(default=30.0, gt=0, description="A granted call is sent within this, or not at all.")
    call_timeout_s: float = Field(default=60.0, gt=0, description="A sent call ends within this.")
    window_s: float = Field(default=WINDOW_S, gt=0, description="The rolling window the limits hold in.")

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.requests, self.tokens, self.prompt_tokens, self.completion_tokens))

    def scaled(self, factor: float) -> Limits:
        """These limits lowered by `factor` (each at least 1)."""
        if factor >= 1.0:
            return self

        def lower(limit: int | None) -> int | None:
            return None if limit is None else max(1, math.floor(limit * factor))

        return self.model_copy(
            update={
                "requests": lower(self.requests),
                "tokens": lower(self.tokens),
                "prompt_tokens": lower(self.prompt_tokens),
                "completion_tokens": lower(self.completion_tokens),
            }
        )


class Cost(_Model):
    """What one call counts against the budget: one request and its tokens."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Ask(_Model):
    """The argument of `LLMBudget/acquire`."""

    limits: Limits
    estimate: Cost
    """An upper bound of the call's tokens: the prompt's, and the completion limit (max_tokens)."""
    waited: bool = False
    """This caller was told to wait before (it is not a newcomer)."""


class Dimension(StrEnum):
    """What a denied ask is waiting for."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    PAUSED = "paused"
    """Paused after a 429."""
    QUEUE = "queue"
    """Others were told to wait earlier: this caller queues behind them."""


class Grant(_Model):
    id: int
    granted_at: float
    """From when it occupies the budget: now, or a moment capacity frees up (a grant for later)."""
    send_from: float
    """Do not send before then (the caller's clock): granted_at, or CLOCK_MARGIN_S after it for a grant for later."""
    send_by: float
    """Send the call by then (the caller's clock), or return the grant unsent."""


class Answer(_Model):
    """The result of `LLMBudget/acquire`: a grant (to use after `wait_s`), or how long to wait before asking again."""

    grant: Grant | None = None
    wait_s: float = 0.0
    """With a grant: sleep this long, then send. Without: ask again after it."""
    waiting_for: Dimension | None = None
    oversized: bool = False
    """The call alone exceeds the budget: it was granted only because nothing else occupied it."""


class Outcome(StrEnum):
    SENT = "sent"
    """The call was sent (whatever its result): it occupies until one window after now."""
    UNSENT = "unsent"
    """The call was not sent (its send deadline passed): the grant frees at once."""
    ABANDONED = "abandoned"
    """An attempt holding this grant was interrupted (a crash) and may have sent: it counts as if its call
    ended as late as it could have been sent, with its estimate."""


class RateLimitAdvice(_Model):
    """What a 429 said: Retry-After and the x-ratelimit-* headers (OpenAI's names), each optional."""

    retry_after_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    def pause_s(self) -> float:
        """How long the server asks us to stop sending."""
        delays = [self.retry_after_s]
        if self.remaining_requests == 0:
            delays.append(self.reset_requests_s)
        if self.remaining_tokens == 0:
            delays.append(self.reset_tokens_s)
        advised = [d for d in delays if d is not None]
        return min(MAX_PAUSE_S, max(advised)) if advised else DEFAULT_PAUSE_S


class Settlement(_Model):
    """The argument of `LLMBudget/settle`, sent once the call's outcome is journaled."""

    grant_id: int
    outcome: Outcome
    used: Cost | None = None
    """What the call counts after all (from the reported usage); None keeps the estimate."""
    limits: Limits
    throttled: RateLimitAdvice | None = None
    """Set when the server answered 429."""
    ended_at: float | None = None
    """When the call ended, by the caller's clock; without it, when the settle arrives (later still)."""


# --- State -----------------------------------------------------------------------------------------


class Outstanding(_Model):
    """A grant whose call has not been settled yet: it counts its estimate."""

    id: int
    granted_at: float
    send_by: float
    expires: float
    """When it stops counting if it is never settled."""
    prompt_tokens: int
    completion_tokens: int


class Occupancy(_Model):
    """Settled calls whose occupancy ends in the same bucket."""

    until: float
    requests: int
    prompt_tokens: int
    completion_tokens: int


class Adaptation(_Model):
    factor: float = 1.0
    """The share of the configured budget in effect at `since`; it recovers linearly from there."""
    since: float = 0.0
    paused_until: float = 0.0
    last_cut: float | None = None
    """When the budget was last cut for a 429."""

    def factor_at(self, now: float) -> float:
        return min(1.0, self.factor + max(0.0, now - self.since) / MINUTE_S * RECOVERY_PER_MINUTE)


class Counters(_Model):
    granted: int = 0
    denied: int = 0
    granted_for_later: int = 0
    """Grants that occupy from a later moment, when capacity frees up (their callers sleep until then)."""
    throttled: int = 0
    """429s reported by callers."""
    last_throttled_at: float | None = None
    abandoned: int = 0
    unsent: int = 0
    expired: int = 0
    """Grants never settled (their invocation ended without it): they counted until their expiry."""
    oversized: int = 0


class BudgetState(_Model):
    """Everything one model's budget remembers (the virtual object's only state)."""

    seq: int = 0
    """The last grant id."""
    now: float = 0.0
    """The latest clock reading seen: time never goes backwards here."""
    outstanding: tuple[Outstanding, ...] = ()
    settled: tuple[Occupancy, ...] = ()
    """Sorted by `until`."""
    next_wake: float = 0.0
    """The latest time a paced caller was told to come back: newcomers queue behind it."""
    adapt: Adaptation = Adaptation()
    counters: Counters = Counters()


class Usage(_Model):
    """What occupies the budget at one moment."""

    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- The operations --------------------------------------------------------------------------------


def acquire(state: BudgetState, ask: Ask, now: float) -> tuple[BudgetState, Answer]:
    """Grant the call if the budget has room now, or for the moment room frees up; else pace the caller."""
    state = _advance(state, now)
    now = state.now
    limits = ask.limits.scaled(state.adapt.factor_at(now))
    if not ask.waited and state.next_wake > now:
        return _pace(state, ask, limits, now, Dimension.QUEUE)

    profile = _Profile.of(state, now)
    paused_until = state.adapt.paused_until
    start = max(now, paused_until)
    fits_at = profile.earliest_fit(start, ask.estimate, limits)
    if fits_at == now:
        return _grant(state, ask, now, now, oversized=_exceeds(ask.estimate, limits))
    waiting_for = Dimension.PAUSED if paused_until > now else profile.shortfall(ask.estimate, limits)
    if fits_at is None:
        return _pace(state, ask, limits, now, waiting_for)
    return _grant(state, ask, fits_at, now, oversized=_exceeds(ask.estimate, limits), waiting_for=waiting_for)


def settle(state: BudgetState, settlement: Settlement, now: float | None = None) -> BudgetState:
    """Replace a grant's estimate by what its call counts after all, until one window after it ended.

    `now`, the object's clock, is needed only when the caller did not say when its call ended (`needs_clock`):
    the caller's journaled reading saves the object a journaled clock reading of its own on most settles.
    """
    if now is not None:
        state = _advance(state, now)
    if settlement.throttled is not None:
        # A caller's clock that runs ahead only makes the pause and the cut last longer.
        reference = state.now if settlement.ended_at is None else max(state.now, settlement.ended_at)
        state = _throttled(state, settlement.limits, settlement.throttled, reference)
    grant = next((o for o in state.outstanding if o.id == settlement.grant_id), None)
    if grant is None:
        return state  # already settled (a retried send) or already expired: nothing counts twice
    outstanding = tuple(o for o in state.outstanding if o.id != grant.id)
    counters = state.counters
    if settlement.outcome is Outcome.UNSENT:
        counters = counters.model_copy(update={"unsent": counters.unsent + 1})
        return state.model_copy(update={"outstanding": outstanding, "counters": counters})
    if settlement.outcome is Outcome.ABANDONED:
        # The interrupted attempt may have sent as late as its deadline (by its own clock), and we cannot know
        # its usage.
        ended = grant.send_by + CLOCK_MARGIN_S
        counters = counters.model_copy(update={"abandoned": counters.abandoned + 1})
    elif settlement.ended_at is not None:
        # The caller's reading, a little later for safety against clocks that disagree: a settle that queued
        # behind asks does not keep the budget occupied longer than its call did.
        ended = max(grant.granted_at, settlement.ended_at + CLOCK_MARGIN_S)
    else:
        ended = state.now  # when the settle arrived: after the call ended
    used = settlement.used if settlement.outcome is Outcome.SENT and settlement.used is not None else None
    prompt = grant.prompt_tokens if used is None else used.prompt_tokens
    completion = grant.completion_tokens if used is None else used.completion_tokens
    settled = _add_occupancy(state.settled, _bucket(ended + settlement.limits.window_s), prompt, completion)
    return state.model_copy(update={"outstanding": outstanding, "settled": settled, "counters": counters})


def needs_clock(settlement: Settlement) -> bool:
    """Whether `settle` needs the object's clock for this settlement."""
    return settlement.outcome is Outcome.SENT and settlement.ended_at is None


def usage_of(state: BudgetState) -> Usage:
    """What occupies the budget at `state.now` (grants for later that are due included)."""
    r, p, c = _Profile.of(state, state.now).loads[0][1:]
    return Usage(requests=r, prompt_tokens=p, completion_tokens=c)


def at(state: BudgetState, now: float) -> BudgetState:
    """The state as of `now` (what no longer counts dropped), for reading it (status)."""
    return _advance(state, now)


# --- Internals -------------------------------------------------------------------------------------


class _Profile:
    """What will occupy the budget from now on, as far as is known: a step function of time.

    Settled occupancies end at known times; grants for later start at known times; outstanding calls
    (not settled yet) count until further notice. `loads[i] = (time, requests, prompt, completion)`
    holds from its time until the next entry's.
    """

    def __init__(self, loads: list[tuple[float, int, int, int]]) -> None:
        self.loads = loads
        # The most that occupies from each entry on: a call fits from then on if it fits these.
        n = len(loads)
        self._most: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * n
        most = (0, 0, 0, 0)
        for i in range(n - 1, -1, -1):
            _, r, p, c = loads[i]
            most = (max(most[0], r), max(most[1], p), max(most[2], c), max(most[3], p + c))
            self._most[i] = most

    @classmethod
    def of(cls, state: BudgetState, now: float) -> _Profile:
        r = sum(o.requests for o in state.settled)
        p = sum(o.prompt_tokens for o in state.settled)
        c = sum(o.completion_tokens for o in state.settled)
        changes: dict[float, list[int]] = {}
        for o in state.settled:
            delta = changes.setdefault(o.until, [0, 0, 0])
            delta[0] -= o.requests
            delta[1] -= o.prompt_tokens
            delta[2] -= o.completion_tokens
        for g in state.outstanding:
            if g.granted_at <= now:
                r, p, c = r + 1, p + g.prompt_tokens, c + g.completion_tokens
                continue
            delta = changes.setdefault(g.granted_at, [0, 0, 0])  # a grant for later: occupies from then on
            delta[0] += 1
            delta[1] += g.prompt_tokens
            delta[2] += g.completion_tokens
        loads = [(now, r, p, c)]
        for t in sorted(changes):
            dr, dp, dc = changes[t]
            r, p, c = r + dr, p + dp, c + dc
            loads.append((t, r, p, c))
        return cls(loads)

    def earliest_fit(self, start: float, cost: Cost, limits: Limits) -> float | None:
        """The earliest time >= start from which the call fits for good; None if only calls in flight could
        make room. A call larger than the whole budget fits once nothing else occupies it."""
        alone = _exceeds(cost, limits)
        for i, (t, *_) in enumerate(self.loads):
            if i + 1 < len(self.loads) and self.loads[i + 1][0] <= start:
                continue
            r, p, c, total = self._most[i]
            fits = r == 0 if alone else _shortfall(r, p, c, total, cost, limits) is None
            if fits:
                return max(t, start)
        return None

    def shortfall(self, cost: Cost, limits: Limits) -> Dimension | None:
        """What the call does not fit in, from now on."""
        return _shortfall(*self._most[0], cost, limits)


def _shortfall(r: int, p: int, c: int, total: int, cost: Cost, limits: Limits) -> Dimension | None:
    """The first dimension in which the call does not fit on top of this load, or None when it fits."""
    checks = (
        (Dimension.REQUESTS, r + 1, limits.requests),
        (Dimension.TOKENS, total + cost.tokens, limits.tokens),
        (Dimension.PROMPT_TOKENS, p + cost.prompt_tokens, limits.prompt_tokens),
        (Dimension.COMPLETION_TOKENS, c + cost.completion_tokens, limits.completion_tokens),
    )
    for dimension, needed, limit in checks:
        if limit is not None and needed > limit:
            return dimension
    return None


def _exceeds(cost: Cost, limits: Limits) -> bool:
    """Whether the call alone is larger than the budget."""
    return _shortfall(0, 0, 0, 0, cost, limits) is not None


def _advance(state: BudgetState, now: float) -> BudgetState:
    """Move the clock forward (never back) and drop what no longer occupies the budget."""
    now = max(now, state.now)
    settled = tuple(o for o in state.settled if o.until > now)
    outstanding = tuple(o for o in state.outstanding if o.expires > now)
    expired = len(state.outstanding) - len(outstanding)
    counters = state.counters
    if expired:
        counters = counters.model_copy(update={"expired": counters.expired + expired})
    return state.model_copy(update={"now": now, "settled": settled, "outstanding": outstanding, "counters": counters})


def _grant(
    state: BudgetState,
    ask: Ask,
    at_time: float,
    now: float,
    oversized: bool,
    waiting_for: Dimension | None = None,
) -> tuple[BudgetState, Answer]:
    """A grant that occupies from `at_time` on: now, or later (then the caller sleeps until just after it)."""
    limits = ask.limits
    later = at_time > now
    # A caller's clock may run ahead of this one by up to CLOCK_MARGIN_S: it must not send before `at_time`.
    send_from = at_time + CLOCK_MARGIN_S if later else at_time
    grant = Grant(id=state.seq + 1, granted_at=at_time, send_from=send_from, send_by=send_from + limits.send_within_s)
    outstanding = Outstanding(
        id=grant.id,
        granted_at=at_time,
        send_by=grant.send_by,
        expires=grant.send_by + limits.call_timeout_s + limits.window_s + EXPIRY_MARGIN_S,
        prompt_tokens=ask.estimate.prompt_tokens,
        completion_tokens=ask.estimate.completion_tokens,
    )
    c = state.counters
    counters = c.model_copy(
        update={
            "granted": c.granted + 1,
            "oversized": c.oversized + int(oversized),
            "denied": c.denied + int(later),
            "granted_for_later": c.granted_for_later + int(later),
        }
    )
    state = state.model_copy(
        update={"seq": grant.id, "outstanding": (*state.outstanding, outstanding), "counters": counters}
    )
    wait_s = _wait(send_from, now) if later else 0.0
    return state, Answer(grant=grant, wait_s=wait_s, waiting_for=waiting_for if later else None, oversized=oversized)


def _pace(
    state: BudgetState, ask: Ask, limits: Limits, now: float, waiting_for: Dimension | None
) -> tuple[BudgetState, Answer]:
    """Come back one budget interval after the last caller told to come back (or after now)."""
    wake = max(state.next_wake, now, state.adapt.paused_until) + _spacing(ask.estimate, limits)
    c = state.counters
    state = state.model_copy(update={"next_wake": wake, "counters": c.model_copy(update={"denied": c.denied + 1})})
    return state, Answer(wait_s=_wait(wake, now), waiting_for=waiting_for)


def _wait(until: float, now: float) -> float:
    # Rounded up to the millisecond: coming back a hair early would only mean asking again.
    return max(MIN_WAIT_S, math.ceil((until - now) * 1000) / 1000)


def _spacing(cost: Cost, limits: Limits) -> float:
    """The time the budget needs to afford one more call like this one."""
    shares = [
        1 / limits.requests if limits.requests else 0.0,
        cost.tokens / limits.tokens if limits.tokens else 0.0,
        cost.prompt_tokens / limits.prompt_tokens if limits.prompt_tokens else 0.0,
        cost.completion_tokens / limits.completion_tokens if limits.completion_tokens else 0.0,
    ]
    return max(MIN_WAIT_S, limits.window_s * min(1.0, max(shares)))


def _bucket(t: float) -> float:
    return math.ceil(t / BUCKET_S) * BUCKET_S


def _add_occupancy(settled: Iterable[Occupancy], until: float, prompt: int, completion: int) -> tuple[Occupancy, ...]:
    merged: list[Occupancy] = []
    added = False
    for o in settled:
        if not added and o.until == until:
            o = o.model_copy(
                update={
                    "requests": o.requests + 1,
                    "prompt_tokens": o.prompt_tokens + prompt,
                    "completion_tokens": o.completion_tokens + completion,
                }
            )
            added = True
        merged.append(o)
    if not added:
        merged.append(Occupancy(until=until, requests=1, prompt_tokens=prompt, completion_tokens=completion))
        merged.sort(key=lambda o: o.until)
    return tuple(merged)


def _throttled(state: BudgetState, limits: Limits, advice: RateLimitAdvice, now: float) -> BudgetState:
    adapt = state.adapt
    current = adapt.factor_at(now)
    factor, last_cut = current, adapt.last_cut
    if adapt.last_cut is None or now - adapt.last_cut >= CUT_COOLDOWN_S:
        factor, last_cut = current * CUT, now
    for told, configured in ((advice.limit_requests, limits.requests), (advice.limit_tokens, limits.tokens)):
        if told is not None and configured is not None and told < configured:
            factor = min(factor, told / configured)
    adapt = Adaptation(
        factor=max(MIN_FACTOR, factor),
        since=now,  # recovery restarts from here
        paused_until=max(adapt.paused_until, now + advice.pause_s()),
        last_cut=last_cut,
    )
    c = state.counters
    counters = c.model_copy(update={"throttled": c.throttled + 1, "last_throttled_at": now})
    return state.model_copy(update={"adapt": adapt, "counters": counters})
