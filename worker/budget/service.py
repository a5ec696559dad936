"""The Restate virtual object `LLMBudget`: one model's budget, shared by every worker process.

Its key names the provider, endpoint and model (`budget_key`). Restate runs the
exclusive handlers of one key one at a time, wherever the worker processes are,
so the bookkeeping in worker/budget/window.py sees every grant and settle in
order. The clock is read with `ctx.time()`, which journals it: a retried or
replayed handler decides exactly as the first time.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import restate
from restate.serde import PydanticJsonSerde, Serde

from worker.budget import OBJECT, STATE, window
from worker.budget.window import Answer, Ask, BudgetState, Settlement

llm_budget = restate.VirtualObject(
    OBJECT,
    description="Request and token budgets per LLM model: grants calls, reserves capacity, adapts to 429s.",
    # Only the worker's handlers ask for budget; nobody outside may forge grants.
    ingress_private=True,
    # Hundreds of tiny invocations a minute: keep their journals briefly (status reads the state, not them).
    journal_retention=timedelta(minutes=10),
)

_STATE: Serde[BudgetState] = PydanticJsonSerde(BudgetState)  # type: ignore[no-untyped-call]
_ASK: Serde[Ask] = PydanticJsonSerde(Ask)  # type: ignore[no-untyped-call]
_ANSWER: Serde[Answer] = PydanticJsonSerde(Answer)  # type: ignore[no-untyped-call]
_SETTLEMENT: Serde[Settlement] = PydanticJsonSerde(Settlement)  # type: ignore[no-untyped-call]


def budget_key(provider: str, base_url: str, model: str) -> str:
    """The object key of one model's budget: `provider|endpoint|model`, printable, without credentials.

    `base_url` must already be safe to show (no user info, no query string).
    """
    return "|".join(quote(part, safe="/:.-_~@") for part in (provider, base_url, model))


@llm_budget.handler("acquire", input_serde=_ASK, output_serde=_ANSWER)
async def acquire(ctx: restate.ObjectContext, ask: Ask) -> Answer:
    state = await ctx.get(STATE, serde=_STATE) or BudgetState()
    now = await ctx.time()
    state, answer = window.acquire(state, ask, now)
    ctx.set(STATE, state, serde=_STATE)
    return answer


@llm_budget.handler("settle", input_serde=_SETTLEMENT)
async def settle(ctx: restate.ObjectContext, settlement: Settlement) -> None:
    state = await ctx.get(STATE, serde=_STATE) or BudgetState()
    now = await ctx.time() if window.needs_clock(settlement) else None
    ctx.set(STATE, window.settle(state, settlement, now), serde=_STATE)
