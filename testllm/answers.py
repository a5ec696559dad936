"""The answers a correct model would give, computed from the request the server received.

They follow the step contracts of worker/prompts.py: extract answers quoted metrics (the offline
extractor's, with each quantity as written), sort answers the letters by value, largest first,
format answers one row per metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from testllm.behaviours import Correct
from worker.models import Step
from worker.prompts import METRICS_TAG, REPORT_TAG, parse_metrics_block, undelimit
from worker.providers.offline import extract_quotes


def guess_step(messages: list[dict[str, Any]], body: Mapping[str, Any]) -> str:
    """The step of a request without X-Report-Step headers, from its schema's name or the prompt's shape."""
    schema_name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
    by_schema = {"quoted_metrics": Step.EXTRACT, "metric_order": Step.SORT, "table_rows": Step.FORMAT}
    if schema_name in by_schema:
        return by_schema[schema_name].short
    text = "\n".join(str(m.get("content", "")) for m in messages)
    if f"<{REPORT_TAG}>" in text:
        return Step.EXTRACT.short
    if f"<{METRICS_TAG}>" in text:
        return Step.FORMAT.short if "rows" in text else Step.SORT.short
    return "unknown"


def _last_user_block(tag: str, messages: list[dict[str, Any]]) -> str:
    # The last one: earlier user messages hold the prompt's worked example.
    for message in reversed(messages):
        if message.get("role") == "user" and (found := undelimit(tag, str(message.get("content", "")))) is not None:
            return found
    raise ValueError(f"no <{tag}> block in the user messages")


def correct_answer(correct: Correct, step: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The scripted answer, else the computed one. Raises ValueError."""
    if step == Step.EXTRACT.short:
        if correct.quotes is not None:
            return {"metrics": [dict(item) for item in correct.quotes]}
        quoted = extract_quotes(_last_user_block(REPORT_TAG, messages))
        return {"metrics": [item.model_dump() for item in quoted]}
    if step in (Step.SORT.short, Step.FORMAT.short):
        metrics = parse_metrics_block(f"<{METRICS_TAG}>\n{_last_user_block(METRICS_TAG, messages)}\n</{METRICS_TAG}>")
        if step == Step.SORT.short:
            ordered = sorted(metrics, key=lambda m: -float(m["value"]))  # stable: ties keep their order
            return {"order": [m["id"] for m in ordered]}
        return {"rows": [{"metric": m["name"], "value": m["value"], "unit": m["unit"]} for m in metrics]}
    raise ValueError(f"cannot tell which step this request is for (step={step!r})")
