"""The answers a correct model would give, in the step contracts of worker/prompts.py, worked out
without the code under test (the offline extractor, worker/numbers.py, worker/naming.py):

- Extract, for a report of the labelled corpus (evaluation/corpus.jsonl): its labelled metrics,
  each quoting the number in the report whose significant digits are the label's value ("$48.3M"
  for 48,300,000), among the quotes the request offers in its schema, else among the numbers
  written in the report. Both ends of a labelled range share one quote, as the contract asks.
- Extract, for any other report: every quote offered (else every number written), named
  "Metric 1", "Metric 2", ...: a test that cares about names scripts its answer (`Correct(quotes=...)`).
- Sort: the letters by value, largest first (ties keep their order).
- Format: one row per metric, as given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from evaluation import load_corpus
from testllm.behaviours import Correct
from worker.models import Metric, Step
from worker.prompts import METRICS_TAG, REPORT_TAG, undelimit

# A number as written in a report: digits with thousands or decimal separators ("1,212", "3,1", "48.3").
_NUMBER = re.compile(r"\d(?:[\d,.']*\d)?")
# Inside one quote, spaces may separate thousands too ("1 250 000 €").
_NUMBER_IN_QUOTE = re.compile(r"\d(?:[\d,.' \u00a0\u202f]*\d)?")
_RANGE_END = re.compile(r"\s+\((?:low|high)\)$")


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


def offered_quotes(body: Mapping[str, Any]) -> list[str] | None:
    """The quotes an extract request's JSON schema allows (its `enum`), or None (JSON mode, free quotes)."""
    try:
        schema = body["response_format"]["json_schema"]["schema"]
        quote = schema["properties"]["metrics"]["items"]["properties"]["quote"]
    except (KeyError, TypeError):
        return None
    enum = quote.get("enum") if isinstance(quote, dict) else None
    return [str(q) for q in enum] if isinstance(enum, list) else None


def correct_answer(
    correct: Correct, step: str, messages: list[dict[str, Any]], offered: Sequence[str] | None = None
) -> dict[str, Any]:
    """The scripted answer, else the computed one. Raises ValueError when the request cannot be answered."""
    if step == Step.EXTRACT.short:
        if correct.quotes is not None:
            return {"metrics": [dict(item) for item in correct.quotes]}
        return {"metrics": extract_answer(_last_user_block(REPORT_TAG, messages), offered)}
    if step in (Step.SORT.short, Step.FORMAT.short):
        metrics = json.loads(_last_user_block(METRICS_TAG, messages))["metrics"]
        if step == Step.SORT.short:
            ordered = sorted(metrics, key=lambda m: -float(m["value"]))  # stable: ties keep their order
            return {"order": [m["id"] for m in ordered]}
        return {"rows": [{"metric": m["name"], "value": m["value"], "unit": m["unit"]} for m in metrics]}
    raise ValueError(f"cannot tell which step this request is for (step={step!r})")


def extract_answer(report: str, offered: Sequence[str] | None) -> list[dict[str, str]]:
    """The quoted metrics for `report`: from its labels when it is in the corpus."""
    quotes = list(offered) if offered else list(dict.fromkeys(_NUMBER.findall(report)))
    labelled = corpus_labels().get(_normalised(report))
    if labelled is None:
        return [{"name": f"Metric {i}", "quote": quote, "unit": ""} for i, quote in enumerate(quotes, start=1)]
    return quotes_for(labelled, quotes)


def quotes_for(labels: Sequence[Metric], quotes: Sequence[str]) -> list[dict[str, str]]:
    """Each label with the first unused quote that writes its value (a percentage's among the quotes with
    a percent sign); a range end whose quote the other end already took adds nothing."""
    items: list[dict[str, str]] = []
    taken: set[int] = set()
    for label in labels:
        digits = significant_digits(format(Decimal(repr(label.value)), "f"))
        fits = [i for i, q in enumerate(quotes) if digits in map(significant_digits, _NUMBER_IN_QUOTE.findall(q))]
        percent = [i for i in fits if ("%" in quotes[i] or "percent" in quotes[i].lower()) == (label.unit == "%")]
        free = [i for i in (percent or fits) if i not in taken]
        if not free:
            continue  # the other end of a range, or a number no quote writes: nothing a model could quote
        taken.add(free[0])
        items.append({"name": _RANGE_END.sub("", label.name), "quote": quotes[free[0]], "unit": label.unit})
    return items


def significant_digits(number: str) -> str:
    """The digits of a number as written, without leading and trailing zeros: "$48.3M" and 48300000 give 483."""
    return re.sub(r"\D", "", number).strip("0")


@lru_cache(maxsize=1)
def corpus_labels() -> dict[str, tuple[Metric, ...]]:
    """Report text (whitespace normalised) -> its labelled metrics."""
    return {_normalised(report.message): tuple(report.expected) for report in load_corpus()}


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _last_user_block(tag: str, messages: list[dict[str, Any]]) -> str:
    # The last one: earlier user messages hold the prompt's worked example.
    for message in reversed(messages):
        if message.get("role") == "user" and (found := undelimit(tag, str(message.get("content", "")))) is not None:
            return found
    raise ValueError(f"no <{tag}> block in the user messages")
