"""The fallback chain of each LLM step: the provider's model, then an optional fallback model, then code.

    primary model (STEP_MAX_ATTEMPTS attempts, repairs included)
      -> fallback model (LLM_FALLBACK_MODEL, its own base URL and key if given; as many attempts)
      -> code (exact for sort and format: on by default; a heuristic for extract: EXTRACT_FALLBACK=code)

`EXTRACT_WITH` / `SORT_WITH` / `FORMAT_WITH` = `code` skip the models for a step; the offline provider
is code for every step. A wrong answer (not a failed call) at sort or format, whose chain ends in code,
moves on at once instead of being repaired: a right answer there is exactly what code produces.

Every attempt of every link is its own journaled `ctx.run`, failures included, so a crash resumes at
the same link and attempt and no successful call is repeated. The step's ledger entry names the link
that produced the result and, in `passed_over`, every link before it with its attempts and last error.

`ChainConfig` is the chain's whole configuration, read once from settings: a small pydantic model,
journaled once per invocation in the policy of `Input message` (worker/admission.py), so a replay
takes the same control flow whatever the worker's settings are by then.

Attempts and sleeps go through worker/journaled.py: none starts while the worker stops, a cancel
raises `Cancelled`, and an unexpected exception inside an attempt is a failed attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import restate
from restate.exceptions import TerminalError

from worker import journaled
from worker.budget.gate import LinkBudget, LinkSpend
from worker.budget.window import Cost
from worker.models import FALLBACK_MARKER, LinkKind, Model, PassedOver, Step, StepFact
from worker.settings import Settings, get_settings


class Link(Model):
    """One link of a step's chain: who is asked."""

    kind: LinkKind
    provider: str
    """openai, local, or offline (code)."""
    model: str | None = None
    budget: LinkBudget | None = None
    """The model's request and token budget (worker/budget), when it has one."""


CODE = Link(kind="code", provider="offline")
# Steps whose code link gives the one right answer: a sort by value, a table rendered from the rows.
EXACT_IN_CODE = frozenset({Step.SORT, Step.FORMAT})


class ChainConfig(Model):
    """Which links each step tries, in order, and how often each LLM link may try."""

    extract: list[Link]
    sort: list[Link]
    format: list[Link]
    max_attempts: int
    retry_initial_interval: float
    retry_max_interval: float

    def links(self, step: Step) -> list[Link]:
        return {Step.EXTRACT: self.extract, Step.SORT: self.sort, Step.FORMAT: self.format}[step]

    @classmethod
    def of(cls, s: Settings) -> ChainConfig:
        def links(step: Step, use: str, fallback: str) -> list[Link]:
            if s.provider == "offline" or use == "code":
                return [CODE]
            from worker.providers.openai_compat import Endpoint, safe_url  # the openai SDK: only with a model

            def model_link(kind: LinkKind, endpoint: Endpoint, model: str) -> Link:
                where = safe_url(endpoint.base_url)
                budget = LinkBudget.of(s, endpoint.provider, where, model, endpoint.timeout)
                return Link(kind=kind, provider=endpoint.provider, model=model, budget=budget)

            primary = Endpoint.of(s)
            chain = [model_link("primary", primary, primary.step_models[step])]
            if s.llm_fallback_model:
                # Its own endpoint when given, else the provider's (another model of the same server or API).
                second = Endpoint.fallback(s)
                chain.append(model_link("fallback", second, second.model))
            if fallback == "code":
                chain.append(CODE)
            return chain

        return cls(
            extract=links(Step.EXTRACT, s.extract_with, s.extract_fallback),
            sort=links(Step.SORT, s.sort_with, s.sort_fallback),
            format=links(Step.FORMAT, s.format_with, s.format_fallback),
            max_attempts=s.step_max_attempts,
            retry_initial_interval=s.step_retry_initial_interval,
            retry_max_interval=s.step_retry_max_interval,
        )


@lru_cache(maxsize=1)
def get_chain_config() -> ChainConfig:
    return ChainConfig.of(get_settings())


class StepResult(Protocol):
    @property
    def fact(self) -> StepFact: ...

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


R = TypeVar("R", bound=StepResult)


async def run_step(
    ctx: restate.Context,
    step: Step,
    config: ChainConfig,
    action: Callable[..., Coroutine[Any, Any, R]],
    options: restate.RunOptions[R],
    **kwargs: Any,
) -> R:
    """Run a step down its chain until a link produces a result.

    Raises TerminalError when every link failed, journaled.Cancelled when the invocation is cancelled.
    """
    # Imported here: worker.steps imports the providers, which this module's users may not need.
    from worker.steps import AttemptFailure, request_size

    attempt_once = journaled.counted(step, action, options)
    passed: list[PassedOver] = []
    for link in config.links(step):
        if passed:
            await journaled.sleep(ctx, timedelta(0), name=f"{step.value}{FALLBACK_MARKER}{link.kind}")
        attempts = 1 if link.kind == "code" else config.max_attempts
        spend = LinkSpend(link.budget)  # the model's budget: waiting for it is not an attempt
        repair_hint: str | None = None
        attempt = 1
        while True:
            permit = await spend.before(ctx, request_size(step, link, repair_hint, **kwargs) if link.budget else None)
            try:
                result = await journaled.run(
                    ctx,
                    step,
                    attempt_once,
                    options,
                    link=link,
                    attempt=attempt,
                    repair_hint=repair_hint,
                    permit=permit,
                    **kwargs,
                )
            except TerminalError as exc:
                failure = AttemptFailure.of(exc)
                if spend.after(ctx, refused=failure.budget, throttled=failure.throttled, ended_at=failure.ended_at):
                    continue  # not an attempt: the grant went unused, or a 429 the budget now waits out
                # Where code is exact (sort, format), a model's valid answer equals code's result: repairing
                # a wrong answer would only spend calls on what the next links produce anyway.
                wrong_answer = failure.repair_hint is not None and step in EXACT_IN_CODE and CODE in config.links(step)
                if not failure.retryable or attempt == attempts or wrong_answer:
                    error = f"{exc.message} (attempt {attempt} of {attempts})"
                    passed.append(
                        PassedOver(
                            link=link.kind, provider=link.provider, model=link.model, attempts=attempt, error=error
                        )
                    )
                    break
                repair_hint = failure.repair_hint
                backoff = min(config.retry_initial_interval * 2 ** (attempt - 1), config.retry_max_interval)
                delay = failure.retry_after_s if failure.retry_after_s is not None else backoff
                await journaled.sleep(ctx, timedelta(seconds=delay), name=f"{step.value}: retry")
                attempt += 1
            else:
                fact = result.fact
                used = Cost(prompt_tokens=fact.prompt_tokens, completion_tokens=fact.completion_tokens)
                spend.after(ctx, used=used, ended_at=fact.ended_at)
                noted = {"throttled": spend.throttled, "budget_wait_s": spend.waited_s} if spend.noted else {}
                if not passed and not noted:
                    return result
                fact = fact.model_copy(update={"passed_over": passed, **noted})
                updated: R = result.model_copy(update={"fact": fact})
                return updated
    if len(passed) == 1:
        raise TerminalError(passed[0].error)
    raise TerminalError(" | ".join(f"{p.link} ({p.provider}/{p.model}): {p.error}" for p in passed))
