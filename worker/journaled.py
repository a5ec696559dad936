"""How the handler runs one journaled step: held back while the worker stops, aware of a cancel,
and counting every exception of an LLM attempt as a failed attempt.

- `run` is `ctx.run_typed` for every step: no step starts once a graceful stop began (worker/drain.py),
  and it returns only once Restate journaled the result, so the stop can wait for it. A cancel (UI,
  `restate invocations cancel`, admin API) raises `Cancelled` instead of a TerminalError that would
  read like a failed step.
- `counted` wraps an LLM step's action: an unexpected exception, or a result the journal cannot hold,
  becomes a failed attempt (counted against the step's attempts, then `step_failed` naming the
  exception type) instead of a retry of the whole invocation outside any bound, ending in a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import restate
from restate.exceptions import TerminalError

from worker.drain import DRAIN
from worker.models import Step

T = TypeVar("T")
errors = logging.getLogger("worker.chain.errors")  # tracebacks of unexpected step failures


class Cancelled(Exception):
    """Restate cancelled the invocation during a step (or a durable sleep between attempts).

    `result` is what the step's action returned when it was already running at the cancel and
    `run` was asked to let it settle (a publish the broker may have taken), else None.
    """

    def __init__(self, result: object = None) -> None:
        super().__init__("cancelled")
        self.result = result


def is_cancellation(exc: TerminalError) -> bool:
    # The SDK raises TerminalError("cancelled", 409) at the await that sees Restate's cancel signal
    # (server_context.py). Our own attempt failures always carry metadata (steps.AttemptFailure).
    return exc.status_code == 409 and not exc.metadata


async def run(
    ctx: restate.Context,
    step: Step,
    action: Callable[..., Coroutine[Any, Any, T]],
    options: restate.RunOptions[T],
    *,
    settle_on_cancel: bool = False,
    **kwargs: Any,
) -> T:
    """`ctx.run_typed(step, action, options, **kwargs)`, held back while the worker stops; Cancelled on a cancel.

    With `settle_on_cancel` (publishing), a cancel that arrives while the action runs waits for it
    to end, and Cancelled carries its result: the broker may have the record already.
    """
    started = False
    abandoned = False
    settled: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    settled.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" warnings

    async def attempt(**kw: Any) -> T:
        nonlocal started
        await DRAIN.admit()
        if abandoned:  # the handler moved on (cancelled) before this attempt could start
            raise asyncio.CancelledError
        started = True
        DRAIN.started()
        try:
            result = await action(**kw)
        except BaseException as exc:
            if not settled.done():
                settled.set_exception(exc)
            raise
        if not settled.done():
            settled.set_result(result)
        return result

    try:
        return await ctx.run_typed(step.value, attempt, options, **kwargs)
    except TerminalError as exc:
        if not is_cancellation(exc):
            raise
        if not started or not settle_on_cancel:
            abandoned = True
            raise Cancelled() from None
        # The step was already running and may have had its effect: wait for it to end.
        try:
            result = await asyncio.shield(settled)
        except Exception:  # noqa: BLE001 - it failed: it had no effect to report
            raise Cancelled() from None
        raise Cancelled(result) from None
    finally:
        if started:
            DRAIN.finished()


async def sleep(ctx: restate.Context, delay: timedelta, name: str) -> None:
    """A durable sleep; Cancelled on a cancel."""
    try:
        await ctx.sleep(delay, name=name)
    except TerminalError as exc:
        if is_cancellation(exc):
            raise Cancelled() from None
        raise


def counted(
    step: Step, action: Callable[..., Coroutine[Any, Any, T]], options: restate.RunOptions[T]
) -> Callable[..., Coroutine[Any, Any, T]]:
    """`action`, with any unexpected exception turned into a failed attempt (counted, then dead-lettered)."""
    from worker.steps import AttemptFailure  # worker.steps imports the providers and the chain

    serde = options.serde

    async def attempt(**kwargs: Any) -> T:
        try:
            result = await action(**kwargs)
            serde.serialize(result)  # a result the journal cannot hold fails here, inside the attempt
            return result
        except TerminalError:
            raise
        except Exception as exc:  # noqa: BLE001 - every exception type counts as a failed attempt
            errors.exception("%s failed unexpectedly (attempt %s)", step.value, kwargs.get("attempt"))
            what = f"{step.value}: unexpected {type(exc).__name__} (the worker log has the traceback)"
            raise AttemptFailure(retryable=True).error(what) from None

    return attempt
