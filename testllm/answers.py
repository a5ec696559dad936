"""The answers a correct model would give, computed from the request the server received."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from testllm.behaviours import Correct
from worker.models import Metric, Step
from worker.providers.offline import extract_metrics, markdown_table
from worker.providers.openai_compat import METRICS_TAG, REPORT_TAG, undelimit


def guess_step(messages: list[dict[str, Any]], body: Mapping[str, Any]) -> str:
    """The step of a request without X-Report-Step headers, from the prompt's shape."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    if f"<{REPORT_TAG}>" in text:
        return Step.EXTRACT.short
    schema = json.dumps(body.get("response_format") or {})
    if '"table"' in schema or "markdown table" in text:
        return Step.FORMAT.short
    if f"<{METRICS_TAG}>" in text:
        return Step.SORT.short
    return "unknown"


def _delimited(tag: str, messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user" and (found := undelimit(tag, str(message.get("content", "")))) is not None:
            return found
    raise ValueError(f"no <{tag}> block in the user messages")


def _prompt_metrics(messages: list[dict[str, Any]]) -> list[Metric]:
    payload = json.loads(_delimited(METRICS_TAG, messages))
    return [Metric.model_validate(m) for m in payload["metrics"]]


def correct_answer(correct: Correct, step: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The scripted answer, else the offline provider's (its pure functions). Raises ValueError."""
    if step in (Step.EXTRACT.short, Step.SORT.short) and correct.metrics is not None:
        metrics = [m if isinstance(m, Metric) else Metric.model_validate(m) for m in correct.metrics]
        return {"metrics": [m.model_dump() for m in metrics]}
    if step == Step.FORMAT.short and correct.table is not None:
        return {"table": correct.table}
    if step == Step.EXTRACT.short:
        return {"metrics": [m.model_dump() for m in extract_metrics(_delimited(REPORT_TAG, messages))]}
    if step == Step.SORT.short:
        ordered = sorted(_prompt_metrics(messages), key=lambda m: m.value, reverse=True)
        return {"metrics": [m.model_dump() for m in ordered]}
    if step == Step.FORMAT.short:
        return {"table": markdown_table(_prompt_metrics(messages))}
    raise ValueError(f"cannot tell which step this request is for (step={step!r})")
