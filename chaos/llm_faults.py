"""The test LLM server (testllm/) with a chaos policy deciding each call's fate.

The base server takes per-(report, step) scripts queued in advance; a soak run needs a
decision per call instead, so this subclass overrides the one place that picks a
call's behaviour. The attempt number is the server's own count of calls for
(report, step), so calls cut off by a worker kill count as attempts too.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import Counter

from chaos.schedule import LLMFault, LLMFaultRates, llm_fault
from testllm import Answer, Behaviour, Correct, Hang, LLMServer, Malformed, Status

# Well-formed answers whose content fails the step's validation (worker/quotes.py, worker/validation.py):
# a quote the report never states, an order that is not a permutation, a row of a metric that was
# never given. 987654321 appears in no generated report.
_UNGROUNDED: dict[str, Answer] = {
    "extract": Answer({"metrics": [{"name": "Revenue", "quote": "$987,654,321", "unit": "USD"}]}),
    "sort": Answer({"order": ["Z"]}),
    "format": Answer({"rows": [{"metric": "Invented metric", "value": 987654321, "unit": ""}]}),
}


def behaviour_for(fault: LLMFault | None, step: str, hang_seconds: float) -> Behaviour:
    if fault is None:
        return Correct()
    if fault is LLMFault.SERVER_ERROR:
        return Status(503)
    if fault is LLMFault.RATE_LIMIT:
        return Status(429, headers={"Retry-After": "1"})
    if fault is LLMFault.TIMEOUT:
        return Hang(hang_seconds)
    if fault is LLMFault.MALFORMED:
        return Malformed()
    return _UNGROUNDED.get(step, Malformed())


def fault_of(behaviour: Behaviour) -> LLMFault | None:
    """The fault a recorded call's behaviour stands for (None: answered correctly)."""
    if isinstance(behaviour, Status):
        return LLMFault.RATE_LIMIT if behaviour.code == 429 else LLMFault.SERVER_ERROR
    if isinstance(behaviour, Hang):
        return LLMFault.TIMEOUT
    if isinstance(behaviour, Malformed):
        return LLMFault.MALFORMED
    if isinstance(behaviour, Answer):
        return LLMFault.UNGROUNDED
    return None


class ChaosLLMServer(LLMServer):
    """An LLMServer whose every call is answered or failed by the seeded schedule."""

    def __init__(self, seed: int, rates: LLMFaultRates, *, hang_seconds: float, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.seed = seed
        self.rates = rates
        self.hang_seconds = hang_seconds
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._attempts_lock = threading.Lock()

    def start(self) -> ChaosLLMServer:
        super().start()
        assert self._httpd is not None
        # Every worker kill resets its open connections; socketserver would print a traceback for each.
        self._httpd.handle_error = _handle_error  # type: ignore[method-assign]
        return self

    def _next_behaviour(self, report_id: str, step: str) -> Behaviour:
        with self._attempts_lock:
            self._attempts[(report_id, step)] += 1
            attempt = self._attempts[(report_id, step)]
        fault = llm_fault(self.seed, self.rates, report_id, step, attempt)
        return behaviour_for(fault, step, self.hang_seconds)


def _handle_error(request: object, client_address: object) -> None:
    if isinstance(sys.exc_info()[1], ConnectionError):
        return
    traceback.print_exc()
