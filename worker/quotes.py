"""Quoted metrics: a model names each metric and quotes its number as written; code finds the quote
in the report and reads the value and unit there.

A small model copies text far more reliably than it does arithmetic: asked for values it turned
"1.3 million" into 13,000,000 and "0.07%" into 7,000; asked for the number as written it is right,
and worker/numbers.py reads scale words, currencies, percentages and decimal commas exactly. So the
value can never be mis-scaled, and it is grounded by construction.

Rules for one quoted item (`resolve`):
- The quote must occur in the report (Unicode minus signs, no-break spaces and letter case aside)
  at a number boundary: "2" does not match inside "12,300", nor "12" inside "12.5".
- It must cover exactly one quantity the report states (a date, a year, "Q3" or "p99" is none),
  or both ends of one range ("$40M to $45M" gives "<name> (low)" and "<name> (high)").
- The value and the unit are the quantity's, read from the report around the quote: a quote that
  dropped its "$" or "million" still gets them (the parser reads the words beside it).
  The model's own unit is not used: on our corpus the parser's unit was right for 114 of 115
  correct values, the 0.5B model's for 84 (it wrote "ms" for page views, "M" for dollars).
- Two items quoting the same quantity are one metric (the first name wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from worker.models import DroppedItem, Metric
from worker.numbers import Quantity, find_quantities

_SPACES = "\u00a0\u202f\u2009"
# Same-length replacements, so positions in the normalised text are positions in the report.
_NORMALISE = str.maketrans({"−": "-", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "’": "'"})


class QuotedMetric(BaseModel):
    """One item of the extract answer: what the model read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    quote: str = Field(description="The number exactly as written in the report, e.g. '$48.3M' or '3,1 %'.")
    unit: str = ""


@dataclass(frozen=True)
class Resolved:
    metrics: list[Metric]
    rejected: list[DroppedItem]
    spans: list[tuple[int, int]]
    """Where each metric's quantity sits in the report (parallel to `metrics`)."""


def candidates(text: str) -> list[str]:
    """The quantities of a report as quotes a model may choose from (a range as one quote), in order."""
    quantities = find_quantities(text)
    quotes: list[str] = []
    i = 0
    while i < len(quantities):
        q = quantities[i]
        nxt = quantities[i + 1] if i + 1 < len(quantities) else None
        if q.range_role == "low" and nxt is not None and nxt.range_role == "high":
            quotes.append(text[q.span[0] : nxt.span[1]])
            i += 2
            continue
        quotes.append(q.raw)
        i += 1
    return list(dict.fromkeys(" ".join(quote.split()) for quote in quotes))


def _pattern(quote: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in quote.translate(_NORMALISE).split()]
    return re.compile(r"\s+".join(parts), re.IGNORECASE)


def _at_number_boundary(text: str, start: int, end: int) -> bool:
    before, after = text[start - 1 : start], text[end : end + 1]
    if before.isdigit() or (before in ".,'" and text[start - 2 : start - 1].isdigit()):
        return False
    return not (after.isdigit() or (after in ".,'" and text[end + 1 : end + 2].isdigit()))


def _covered(quantities: tuple[Quantity, ...] | list[Quantity], start: int, end: int) -> list[Quantity]:
    return [q for q in quantities if q.span[0] < end and start < q.span[1]]


def _clean_quote(quote: str) -> str:
    return quote.strip().strip("\"'`“”").strip()


def resolve(text: str, items: list[QuotedMetric]) -> Resolved:
    """Metrics from quoted items, in the order given; the items that fail a rule are returned as rejected."""
    normalised = text.translate(_NORMALISE)
    quantities = find_quantities(text)
    used: set[tuple[int, int]] = set()
    metrics: list[Metric] = []
    spans: list[tuple[int, int]] = []
    rejected: list[DroppedItem] = []

    def reject(item: QuotedMetric, reason: str) -> None:
        rejected.append(DroppedItem(name=item.name, quote=item.quote, reason=reason))

    for item in items:
        name, quote = " ".join(item.name.split()), _clean_quote(item.quote)
        if not name:
            reject(item, "the name is empty")
            continue
        if not any(c.isdigit() for c in quote):
            reject(item, "the quote holds no number")
            continue
        occurrences = [m.span() for m in _pattern(quote).finditer(normalised)]
        if not occurrences:
            reject(item, "the quote does not occur in the report")
            continue
        bounded = [(s, e) for s, e in occurrences if _at_number_boundary(text, s, e)]
        if not bounded:
            reject(item, "the quote occurs only inside a longer number")
            continue
        reason = "the quote is not a quantity the report states (a date, a year or part of a name)"
        found: list[Quantity] | None = None
        for start, end in bounded:
            covered = _covered(quantities, start, end)
            if len(covered) == 2 and (covered[0].range_role, covered[1].range_role) == ("low", "high"):
                pass
            elif len(covered) > 1:
                reason = f"the quote holds {len(covered)} numbers; quote one"
                continue
            elif not covered:
                continue
            if all(q.span in used for q in covered):
                reason = "duplicate"
                continue
            found = covered
            break
        if found is None:
            if reason != "duplicate":  # the same metric named twice is not an error worth reporting
                reject(item, reason)
            continue
        for q in found:
            used.add(q.span)
            suffix = {"low": " (low)", "high": " (high)"}.get(q.range_role or "", "") if len(found) == 2 else ""
            metrics.append(Metric(name=name + suffix, value=q.value, unit=q.unit))
            spans.append(q.span)
    return Resolved(metrics=metrics, rejected=rejected, spans=spans)
