"""The steps in plain code, where an LLM would use judgement: deterministic, free, no network.

`LLM_PROVIDER=offline` (the default without a key) runs every step with these functions, and they are
the `code` link that ends a step's fallback chain (worker/chain.py): exact for sort and format, a
heuristic for extract (so a fallback there only with EXTRACT_FALLBACK=code).

`extract` reads the quantities worker/numbers.py finds, drops the ones that qualify rather than
measure ("top 10", "per 1,000", "last 30 days", "Ward 4", "7-day average", "declaration 2291:"), and
names each metric from the words around it (worker/naming.py).
"""

from __future__ import annotations

import re

from worker.models import Metric
from worker.naming import name_quantities
from worker.numbers import Quantity, find_quantities, format_number

_WORD_RE = re.compile(r"[^\W_][\w'’&/-]*")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# "over the last 30 days", "top 10 accounts", "per 1,000 users", "every 5 minutes": qualifiers, not metrics.
_QUALIFIER_BEFORE = _words(
    "top bottom first last past next previous per every each within pro je alle letzten ersten nächsten"
)
# "Ward 4", "Plant 3", "run 7", "week 32": labels that name a thing rather than measure it.
_LABELS = _words("""
    step phase tier level stage sprint week day gate room building floor route flight store region zone ward batch
    lot wave round chapter section page item no nr number ticket order id case team group plant site warehouse hub
    line lane bay dock terminal track grade class version release build model article clause rule figure table
    appendix note pier aisle run trial cohort iso soc kw woche platz halle werk
    """)


def extract_metrics(text: str) -> list[Metric]:
    """The metrics a report states, in order of appearance."""
    return [Metric(name=name, value=q.value, unit=q.unit) for name, q in _named_quantities(text)]


def _named_quantities(text: str) -> list[tuple[str, Quantity]]:
    quantities = [q for q in find_quantities(text) if _is_metric(text, q)]
    return list(zip(name_quantities(text, quantities), quantities, strict=True))


_OUT_OF_RE = re.compile(r"\bout of\s*$", re.IGNORECASE)
_GLUED_NOUN_RE = re.compile(r"-[^\W\d_]")


def _is_metric(text: str, quantity: Quantity) -> bool:
    start, end = quantity.span
    before = text[max(0, start - 30) : start]
    words = _WORD_RE.findall(before)
    previous = words[-1].lower() if words and before.rstrip().endswith(words[-1]) else None
    if previous in _QUALIFIER_BEFORE or _OUT_OF_RE.search(before):
        return False
    is_label = previous in _LABELS or (previous is not None and text[end : end + 1] == ":")
    if quantity.unit == "" and quantity.raw.isdigit() and is_label:
        return False  # "Ward 4", "Customs declaration 2291: ..."
    # "a 7-day average", "24-hour window", "5-star rating": the number qualifies the noun it is glued to.
    return not _GLUED_NOUN_RE.match(text, end)


def sort_metrics(metrics: list[Metric]) -> list[Metric]:
    """By value, largest first; equal values keep their order."""
    return sorted(metrics, key=lambda m: -m.value)


def markdown_table(metrics: list[Metric]) -> str:
    """A GitHub-flavoured markdown table | Metric | Value | Unit |, one row per metric."""
    rows = ["| Metric | Value | Unit |", "|---|---:|---|"]
    rows += [f"| {_cell(m.name)} | {format_number(m.value)} | {_cell(m.unit)} |" for m in metrics]
    return "\n".join(rows)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
