"""The budget's bookkeeping (worker/budget/window.py), without Restate: grants, occupancy, waiting, 429s.

The last tests simulate many callers against one budget (random latencies, send delays,
crashes, lost settles, 429s) and check the promise where it matters, at the server:
no rolling 60 s window holds more calls or tokens than the budget.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from dataclasses import dataclass, field

import pytest

from worker.budget.permit import Permit, PermitRefused
from worker.budget.window import (
    CLOCK_MARGIN_S,
    CUT,
    CUT_COOLDOWN_S,
    DEFAULT_PAUSE_S,
    EXPIRY_MARGIN_S,
    MAX_PAUSE_S,
    MIN_FACTOR,
    WINDOW_S,
    Answer,
    Ask,
    BudgetState,
    Cost,
    Dimension,
    Limits,
    Outcome,
    RateLimitAdvice,
    Settlement,
    acquire,
    at,
    settle,
    usage_of,
)

REQUESTS = Limits(requests=3, send_within_s=10, call_timeout_s=5)
ONE = Cost(prompt_tokens=100, completion_tokens=50)


def ask(limits: Limits = REQUESTS, cost: Cost = ONE, waited: bool = False) -> Ask:
    return Ask(limits=limits, estimate=cost, waited=waited)


def sent(grant_id: int, used: Cost | None = None, limits: Limits = REQUESTS, **kw: object) -> Settlement:
    return Settlement(grant_id=grant_id, outcome=Outcome.SENT, used=used, limits=limits, **kw)  # type: ignore[arg-type]


def granted(state: BudgetState, a: Ask, now: float) -> tuple[BudgetState, int]:
    """Granted now: send at once."""
    state, answer = acquire(state, a, now)
    assert answer.grant is not None and answer.wait_s == 0, answer
    return state, answer.grant.id


def granted_later(state: BudgetState, a: Ask, now: float, at_time: float) -> tuple[BudgetState, Answer]:
    """Granted for `at_time`, when room frees up: the caller sleeps until just after it, then sends."""
    state, answer = acquire(state, a, now)
    assert answer.grant is not None, answer
    assert answer.grant.granted_at == pytest.approx(at_time)
    assert answer.grant.send_from == pytest.approx(at_time + CLOCK_MARGIN_S)
    assert answer.wait_s == pytest.approx(at_time + CLOCK_MARGIN_S - now, abs=0.001)
    return state, answer


def denied(state: BudgetState, a: Ask, now: float) -> tuple[BudgetState, Answer]:
    state, answer = acquire(state, a, now)
    assert answer.grant is None, answer
    return state, answer


# --- Requests ---------------------------------------------------------------------------------------


def test_grants_up_to_the_budget_then_grants_room_that_frees_for_later() -> None:
    state = BudgetState()
    ids = []
    for t in (0.0, 0.1, 0.2):
        state, gid = granted(state, ask(), t)
        ids.append(gid)
    assert ids == [1, 2, 3]
    state, answer = denied(state, ask(), 0.3)
    # All three calls are in flight: nobody knows yet when room frees. Come back in one budget interval.
    assert answer.waiting_for is Dimension.REQUESTS
    assert answer.wait_s == pytest.approx(WINDOW_S / 3)

    state = settle(state, sent(1), 2.0)
    # Back at 20.3: the first call ended at 2.0, so its occupancy ends at 62.0; that room is granted for then.
    state, answer = granted_later(state, ask(waited=True), 20.3, at_time=62.0)
    assert answer.grant is not None and answer.grant.id == 4
    assert answer.waiting_for is Dimension.REQUESTS
    # It occupies from 62.0 on, not before.
    assert usage_of(at(state, 61.9)).requests == 3
    state, answer = denied(state, ask(waited=True), 62.0)  # 2, 3 and 4 occupy
    assert state.counters.granted_for_later == 1


def test_a_grant_occupies_from_grant_until_60s_after_its_call_ended() -> None:
    limits = Limits(requests=1)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    state = settle(state, sent(gid), 30.0)  # a 30 s call
    state, _ = granted_later(state, ask(limits), 89.0, at_time=90.0)


def test_a_settle_that_arrives_late_counts_from_when_the_call_ended() -> None:
    limits = Limits(requests=1)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    # The call ended at 1.0, but its settle reached the object only at 9.0 (a busy object).
    state = settle(state, Settlement(grant_id=gid, outcome=Outcome.SENT, limits=limits, ended_at=1.0), 9.0)
    state, answer = granted_later(state, ask(limits), 9.0, at_time=1.0 + CLOCK_MARGIN_S + WINDOW_S)
    assert answer.grant is not None
    # A caller's clock that runs ahead only keeps the budget occupied longer, and moves nothing else.
    late = Settlement(grant_id=answer.grant.id, outcome=Outcome.SENT, limits=limits, ended_at=500.0)
    state = settle(state, late)
    assert state.settled[-1].until == pytest.approx(500.0 + CLOCK_MARGIN_S + WINDOW_S)
    assert state.now == 9.0


def test_an_unsettled_grant_counts_until_it_expires() -> None:
    limits = Limits(requests=1, send_within_s=10, call_timeout_s=5)
    state = BudgetState()
    state, _ = granted(state, ask(limits=limits), 0.0)
    expires = 10 + 5 + WINDOW_S + EXPIRY_MARGIN_S
    state, _ = denied(state, ask(limits=limits), expires - 0.01)
    state, _ = granted(state, ask(limits=limits, waited=True), expires)
    assert state.counters.expired == 1


def test_an_unsent_grant_frees_at_once() -> None:
    state = BudgetState()
    state, gid = granted(state, ask(limits=Limits(requests=1)), 0.0)
    state = settle(state, Settlement(grant_id=gid, outcome=Outcome.UNSENT, limits=Limits(requests=1)), 5.0)
    state, _ = granted(state, ask(limits=Limits(requests=1)), 5.0)
    assert state.counters.unsent == 1


def test_an_abandoned_grant_counts_as_if_its_call_ended_at_the_send_deadline() -> None:
    limits = Limits(requests=1, send_within_s=10)
    state = BudgetState()
    state, gid = granted(state, ask(limits=limits), 0.0)
    state = settle(state, Settlement(grant_id=gid, outcome=Outcome.ABANDONED, limits=limits), 3.0)
    state, _ = granted_later(state, ask(limits=limits), 3.0, at_time=10 + CLOCK_MARGIN_S + WINDOW_S)
    assert state.counters.abandoned == 1


def test_a_second_settle_of_the_same_grant_changes_nothing() -> None:
    state = BudgetState()
    state, gid = granted(state, ask(), 0.0)
    once = settle(state, sent(gid), 1.0)
    twice = settle(once, sent(gid), 2.0)
    assert usage_of(twice) == usage_of(once)


def test_a_clock_reading_from_the_past_does_not_free_anything() -> None:
    state = BudgetState()
    state, gid = granted(state, ask(limits=Limits(requests=1)), 100.0)
    state = settle(state, sent(gid), 101.0)
    # A host whose clock is behind: nothing frees before the object's latest reading says so.
    state, answer = acquire(state, ask(limits=Limits(requests=1)), 50.0)
    assert answer.grant is not None and answer.grant.granted_at == 161.0
    assert state.now == 101.0


# --- Tokens -----------------------------------------------------------------------------------------


def test_tokens_count_the_estimate_then_the_reported_usage() -> None:
    limits = Limits(tokens=1000)
    estimate = Cost(prompt_tokens=300, completion_tokens=200)
    used = Cost(prompt_tokens=200, completion_tokens=20)
    state = BudgetState()
    state, first = granted(state, ask(limits, estimate), 0.0)
    state, second = granted(state, ask(limits, estimate), 0.0)
    assert usage_of(state).tokens == 1000
    state, answer = denied(state, ask(limits, estimate), 0.5)
    assert answer.waiting_for is Dimension.TOKENS
    # The first call used far less than its upper bound: the difference is free again at once.
    state = settle(state, sent(first, used, limits), 1.0)
    assert usage_of(state).tokens == 720
    # 720 + 500 > 1000 until the first call's 220 stop counting at 61.0.
    state, _ = granted_later(state, ask(limits, estimate, waited=True), 1.0, at_time=61.0)
    state = settle(state, sent(second, used, limits), 1.5)
    assert usage_of(at(state, 61.0)).tokens == 220 + 500


def test_a_call_without_reported_usage_keeps_its_estimate() -> None:
    limits = Limits(tokens=1000)
    state = BudgetState()
    state, gid = granted(state, ask(limits, Cost(prompt_tokens=300, completion_tokens=200)), 0.0)
    state = settle(state, sent(gid, None, limits), 1.0)  # a timeout: the server may still have charged it
    assert usage_of(state).tokens == 500


@pytest.mark.parametrize(
    ("limits", "dimension"),
    [
        (Limits(prompt_tokens=250), Dimension.PROMPT_TOKENS),  # 100 a call
        (Limits(completion_tokens=120), Dimension.COMPLETION_TOKENS),  # 50 a call
    ],
)
def test_prompt_and_completion_budgets_are_separate(limits: Limits, dimension: Dimension) -> None:
    state = BudgetState()
    state, _ = granted(state, ask(limits, ONE), 0.0)
    state, _ = granted(state, ask(limits, ONE), 0.0)
    state, answer = denied(state, ask(limits, ONE), 0.0)
    assert answer.waiting_for is dimension


def test_a_call_larger_than_the_whole_budget_runs_alone() -> None:
    limits = Limits(tokens=100)
    big = Cost(prompt_tokens=500, completion_tokens=100)
    small = Cost(prompt_tokens=10)
    state = BudgetState()
    state, answer = acquire(state, ask(limits, big), 0.0)
    assert answer.grant is not None and answer.oversized
    state, _ = denied(state, ask(limits, small), 0.0)  # nothing else while it occupies the budget
    state = settle(state, sent(answer.grant.id, None, limits), 1.0)
    state, _ = granted_later(state, ask(limits, small, waited=True), 30.0, at_time=61.0)
    # ... and it does not run while anything else occupies the budget.
    state, answer = denied(state, ask(limits, big), 61.0)
    assert answer.waiting_for is Dimension.TOKENS
    assert state.counters.oversized == 1


# --- Waiting ----------------------------------------------------------------------------------------


def test_callers_with_nothing_known_to_free_are_paced_at_the_budgets_rate() -> None:
    limits = Limits(requests=6)  # one call per 10 s
    state = BudgetState()
    for _ in range(6):
        state, _ = granted(state, ask(limits), 0.0)
    wakes = []
    for _ in range(4):
        state, answer = denied(state, ask(limits), 0.0)
        wakes.append(answer.wait_s)
    assert wakes == pytest.approx([10.0, 20.0, 30.0, 40.0])


def test_room_that_frees_is_granted_for_later_to_one_caller_each() -> None:
    limits = Limits(requests=2)
    state = BudgetState()
    state, first = granted(state, ask(limits), 0.0)
    state, second = granted(state, ask(limits), 0.0)
    state = settle(settle(state, sent(first), 0.5), sent(second), 0.5)
    state, a = granted_later(state, ask(limits), 1.0, at_time=60.5)
    state, b = granted_later(state, ask(limits), 1.0, at_time=60.5)
    state, c = denied(state, ask(limits), 1.0)  # both rooms are promised: c is paced
    assert c.wait_s == pytest.approx(WINDOW_S / 2)
    assert a.grant is not None and b.grant is not None and a.grant.id != b.grant.id
    # Newcomers queue behind the paced callers; at 60.5 the room is taken by a and b.
    state, d = denied(state, ask(limits), 20.0)
    assert d.waiting_for is Dimension.QUEUE
    state, e = denied(state, ask(limits), 60.5)
    assert e.waiting_for is Dimension.QUEUE  # behind d, paced to 61.0
    assert usage_of(at(state, 60.5)).requests == 2
    assert state.counters.granted_for_later == 2


def test_a_grant_for_later_occupies_only_from_its_moment() -> None:
    limits = Limits(requests=1)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    state = settle(state, sent(gid, limits=limits), 0.0)
    state, _ = granted_later(state, ask(limits), 10.0, at_time=60.0)
    assert usage_of(at(state, 30.0)).requests == 1  # the first call's minute
    assert usage_of(at(state, 60.0)).requests == 1  # the grant for later


def test_a_grant_for_later_never_used_counts_until_it_expires() -> None:
    limits = Limits(requests=1, send_within_s=10, call_timeout_s=5)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    state = settle(state, sent(gid, limits=limits), 0.0)
    state, _ = granted_later(state, ask(limits), 0.0, at_time=60.0)
    # Its invocation was cancelled while it slept: nothing settles it, it stops counting once it expires.
    expires = 60.0 + CLOCK_MARGIN_S + 10 + 5 + WINDOW_S + EXPIRY_MARGIN_S
    state, _ = denied(state, ask(limits, waited=True), expires - 0.01)
    state, _ = granted(state, ask(limits, waited=True), expires)
    assert state.counters.expired == 1


# --- 429s -------------------------------------------------------------------------------------------


def test_a_429_pauses_every_grant_for_the_advised_time() -> None:
    limits = Limits(requests=100)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    state = settle(state, sent(gid, limits=limits, throttled=RateLimitAdvice(retry_after_s=7)), 1.0)
    state, answer = granted_later(state, ask(limits), 1.0, at_time=8.0)
    assert answer.waiting_for is Dimension.PAUSED
    assert state.counters.throttled == 1 and state.counters.last_throttled_at == 1.0


def test_a_429_lowers_the_budget_which_then_recovers_slowly() -> None:
    limits = Limits(requests=100)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    state = settle(state, sent(gid, limits=limits, throttled=RateLimitAdvice()), 1.0)
    assert state.adapt.factor_at(1.0) == pytest.approx(CUT)
    # Another 429 of the same burst does not cut again.
    state = settle(state, sent(99, limits=limits, throttled=RateLimitAdvice()), 2.0)
    assert state.adapt.factor_at(2.0) == pytest.approx(CUT + 1 / 60 * 0.1)
    assert state.adapt.factor_at(2.0 + 60) == pytest.approx(CUT + 61 / 60 * 0.1)
    assert state.adapt.factor_at(1000.0) == 1.0
    # One after the cooldown does.
    state = settle(state, sent(98, limits=limits, throttled=RateLimitAdvice()), 1.0 + CUT_COOLDOWN_S)
    assert state.adapt.factor_at(1.0 + CUT_COOLDOWN_S) < CUT


def test_the_lowered_budget_is_what_grants_count_against() -> None:
    limits = Limits(requests=10)
    state = BudgetState()
    state, gid = granted(state, ask(limits), 0.0)
    advice = RateLimitAdvice(limit_requests=5)  # the server says its limit is 5, we were told 10
    state = settle(state, sent(gid, limits=limits, throttled=advice), 0.0)
    now = DEFAULT_PAUSE_S
    for _ in range(4):
        state, _ = granted(state, ask(limits), now)
    # Five occupy: the sixth waits for the first call's minute to end, as a budget of 5 would.
    state, answer = granted_later(state, ask(limits), now, at_time=60.0)
    assert answer.waiting_for is Dimension.REQUESTS


def test_the_budget_never_drops_below_its_floor() -> None:
    limits = Limits(requests=100)
    state = BudgetState()
    for i in range(40):
        t = i * CUT_COOLDOWN_S
        state = settle(state, sent(1, limits=limits, throttled=RateLimitAdvice(limit_requests=1)), t)
    assert state.adapt.factor_at(state.now) == pytest.approx(MIN_FACTOR)


@pytest.mark.parametrize(
    ("advice", "pause"),
    [
        (RateLimitAdvice(), DEFAULT_PAUSE_S),
        (RateLimitAdvice(retry_after_s=3), 3.0),
        (RateLimitAdvice(remaining_requests=0, reset_requests_s=12), 12.0),
        (RateLimitAdvice(remaining_requests=4, reset_requests_s=12), DEFAULT_PAUSE_S),
        (RateLimitAdvice(retry_after_s=2, remaining_tokens=0, reset_tokens_s=6), 6.0),
        (RateLimitAdvice(retry_after_s=3600), MAX_PAUSE_S),
    ],
)
def test_the_pause_follows_the_servers_advice(advice: RateLimitAdvice, pause: float) -> None:
    assert advice.pause_s() == pause


def test_the_state_survives_its_journal_encoding() -> None:
    state = BudgetState()
    for _ in range(3):
        state, gid = granted(state, ask(), 0.0)
    state = settle(state, sent(gid), 1.0)
    state, _ = granted_later(state, ask(), 1.0, at_time=61.0)
    state = settle(state, sent(1, throttled=RateLimitAdvice(retry_after_s=1)), 2.0)
    assert [o for o in state.outstanding if o.granted_at > state.now]  # a grant for later
    assert state.settled and state.adapt.last_cut is not None
    assert BudgetState.model_validate_json(state.model_dump_json()) == state


def test_reading_the_state_drops_what_no_longer_counts() -> None:
    state = BudgetState()
    state, gid = granted(state, ask(), 0.0)
    state = settle(state, sent(gid), 1.0)
    assert usage_of(at(state, 60.0)).requests == 1
    assert usage_of(at(state, 61.0)).requests == 0


# --- The promise, simulated ------------------------------------------------------------------------


@dataclass
class Sim:
    """Callers against one budget, as the object and an LLM server would see them (seconds)."""

    limits: Limits
    rng: random.Random
    crash_rate: float = 0.0
    lost_settle_rate: float = 0.0
    late_send_rate: float = 0.0
    throttle_rate: float = 0.0
    state: BudgetState = field(default_factory=BudgetState)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(time, tokens) of every call the server received."""
    events: list[tuple[float, int, str, dict[str, object]]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    asks: dict[int, int] = field(default_factory=dict)
    """Asks per caller."""
    served: set[int] = field(default_factory=set)

    def at(self, t: float, kind: str, **data: object) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, data))

    def estimate(self) -> Cost:
        return Cost(prompt_tokens=self.rng.randint(50, 400), completion_tokens=200)

    def run(self, callers: int, arrive_within: float, until: float) -> None:
        for caller in range(callers):
            self.at(self.rng.uniform(0, arrive_within), "ask", caller=caller, estimate=self.estimate())
        while self.events and self.events[0][0] < until:
            t, _, kind, data = heapq.heappop(self.events)
            getattr(self, kind)(t, **data)

    def ask(self, t: float, caller: int, estimate: Cost, waited: bool = False) -> None:
        request = Ask(limits=self.limits, estimate=estimate, waited=waited)
        self.state, answer = acquire(self.state, request, t)
        self.asks[caller] = self.asks.get(caller, 0) + 1
        if answer.grant is None:
            # Restate's timer and the next call arrive a little after the wake-up time.
            wake = t + answer.wait_s + self.rng.uniform(0, 0.05)
            self.at(wake, "ask", caller=caller, estimate=estimate, waited=True)
            return
        self.served.add(caller)
        grant = answer.grant
        start = t
        if answer.wait_s > 0:  # granted for later: Restate's timer fires a little after the wake-up time
            start = t + answer.wait_s + self.rng.uniform(0, 0.05)
        delay = self.rng.uniform(0, self.limits.send_within_s * 0.5)
        if self.rng.random() < self.late_send_rate:  # waited too long for a concurrency slot
            self.at(grant.send_by + 0.5, "settle", grant=grant.id, outcome=Outcome.UNSENT, used=None)
            self.at(grant.send_by + 0.5, "ask", caller=caller, estimate=estimate)
            return
        send = start + delay
        used = Cost(
            prompt_tokens=self.rng.randint(estimate.prompt_tokens // 2, estimate.prompt_tokens),
            completion_tokens=self.rng.randint(1, estimate.completion_tokens),
        )
        self.arrivals.append((send, used.tokens))
        ended = send + self.rng.uniform(0.05, self.limits.call_timeout_s)
        if self.rng.random() < self.crash_rate:
            # The worker dies mid-call; the retried attempt finds the grant in its journal, returns it
            # as abandoned and asks again.
            restart = send + self.rng.uniform(0.0, 5.0)
            self.at(restart, "settle", grant=grant.id, outcome=Outcome.ABANDONED, used=None)
            self.at(restart, "ask", caller=caller, estimate=estimate)
            return
        if self.rng.random() < self.lost_settle_rate:  # the invocation was killed: no settle ever
            return
        throttled = RateLimitAdvice(retry_after_s=2) if self.rng.random() < self.throttle_rate else None
        # The settle arrives a little (or, behind a busy object, a lot) later; it says when the call ended,
        # by a clock that may be off by a little less than CLOCK_MARGIN_S.
        settled_at = ended + self.rng.choice([0.0, 0.2, 5.0]) * self.rng.random()
        reported = ended + self.rng.uniform(-0.9, 0.9) * CLOCK_MARGIN_S
        self.at(settled_at, "settle", grant=grant.id, outcome=Outcome.SENT, used=used, throttled=throttled,
                ended_at=reported)  # fmt: skip

    def settle(
        self,
        t: float,
        grant: int,
        outcome: Outcome,
        used: Cost | None,
        throttled: RateLimitAdvice | None = None,
        ended_at: float | None = None,
    ) -> None:
        settlement = Settlement(
            grant_id=grant, outcome=outcome, used=used, limits=self.limits, throttled=throttled, ended_at=ended_at
        )
        self.state = settle(self.state, settlement, t)

    def max_in_window(self) -> tuple[int, int]:
        """The most calls and tokens any rolling 60 s window at the server held."""
        arrivals = sorted(self.arrivals)
        most_calls = most_tokens = 0
        j = 0
        tokens = 0
        for i, (start, _) in enumerate(arrivals):
            while j < len(arrivals) and arrivals[j][0] < start + WINDOW_S:
                tokens += arrivals[j][1]
                j += 1
            most_calls, most_tokens = max(most_calls, j - i), max(most_tokens, tokens)
            tokens -= arrivals[i][1]
        return most_calls, most_tokens


@pytest.mark.parametrize("seed", range(12))
def test_no_rolling_window_at_the_server_exceeds_the_budget(seed: int) -> None:
    rng = random.Random(seed)
    limits = Limits(
        requests=rng.choice([5, 20, 60]),
        tokens=rng.choice([None, 4000, 12000]),
        completion_tokens=rng.choice([None, 3000]),
        send_within_s=rng.choice([2.0, 10.0]),
        call_timeout_s=rng.choice([1.0, 8.0]),
    )
    sim = Sim(limits, rng, crash_rate=0.05, lost_settle_rate=0.02, late_send_rate=0.05, throttle_rate=0.03)
    sim.run(callers=400, arrive_within=300, until=1200)
    calls, tokens = sim.max_in_window()
    assert calls <= limits.requests  # type: ignore[operator]
    if limits.tokens is not None:
        assert tokens <= limits.tokens
    assert sim.state.counters.denied > 0  # the budget was what held the callers back


def test_under_a_backlog_throughput_stays_close_to_the_budget() -> None:
    rng = random.Random(7)
    limits = Limits(requests=30, send_within_s=5, call_timeout_s=1.0)
    sim = Sim(limits, rng)
    minutes = 20
    sim.run(callers=2000, arrive_within=1, until=minutes * WINDOW_S)
    calls, _ = sim.max_in_window()
    assert calls <= 30
    # Each call occupies the budget for its latency (up to 1 s), its settle delay and 60 s:
    # the best possible is 30 calls per ~61 s.
    assert len(sim.arrivals) >= 0.95 * 30 * minutes * 60 / 61.5
    # Asks per call stay few even with 2,000 waiting: a caller granted for later does not ask again.
    asks = [sim.asks[caller] for caller in sim.served]
    assert sum(asks) / len(asks) <= 2.0, sum(asks) / len(asks)
    assert sim.state.counters.granted_for_later > 0.5 * sim.state.counters.granted


# --- The permit: the last check before a request leaves --------------------------------------------


def test_a_permit_sends_once_within_its_times() -> None:
    now = time.time()
    permit = Permit("k", 1, send_from=now - 1, send_by=now + 10, fresh=True)
    permit.spend()
    with pytest.raises(PermitRefused) as second:
        permit.spend()  # one grant, one request
    assert second.value.outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("send_from", "send_by", "fresh", "outcome"),
    [
        (-20.0, -10.0, True, Outcome.UNSENT),  # waited too long for a slot
        (5.0, 30.0, True, Outcome.UNSENT),  # a grant for later whose sleep ended early by this clock
        (-1.0, 10.0, False, Outcome.ABANDONED),  # an interrupted attempt held it: it may have sent
    ],
)
def test_a_permit_refuses_what_would_break_the_budget(
    send_from: float, send_by: float, fresh: bool, outcome: Outcome
) -> None:
    now = time.time()
    permit = Permit("k", 1, send_from=now + send_from, send_by=now + send_by, fresh=fresh)
    with pytest.raises(PermitRefused) as refused:
        permit.spend()
    assert refused.value.outcome is outcome


def test_a_permit_tolerates_clocks_within_the_margin() -> None:
    now = time.time()
    Permit("k", 1, send_from=now + CLOCK_MARGIN_S / 2, send_by=now + 10, fresh=True).spend()
