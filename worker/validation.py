"""Checks applied to every provider answer before a step returns (and so before it is journaled).

Each check raises `ValidationFailed` with a message written to be quoted back to a model in a
repair prompt: it names the offending metric or row and says what was expected.

Decisions:
- An empty extraction is valid unless the report states a money amount or a percentage. Whether a plain
  count is a metric is judgement (s10-style "quiet week" reports have none), and rejecting [] there would
  dead-letter reports the model judged correctly; money and percentages are metrics beyond doubt.
- Extracted values are grounded with worker/numbers.py: "$12.5M" grounds 12500000 and 12.5, "22%" grounds
  22 and 0.22, "10-12 days" grounds 10, 12 and 11.
- A table must be only the table (no prose, no code fence), rows in the order of the metrics given, each
  showing its metric's value at face value ("12.5M", "$12,500,000"; a sign where the value is negative).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from worker.models import Metric
from worker.numbers import (
    find_quantities,
    format_number,
    is_currency,
    is_grounded,
    literal_values,
    stated_values,
)

MAX_LISTED = 12  # how many report numbers a message lists, to keep repair prompts short
_VALUE_REL_TOL = 0.005


class RowLike(Protocol):
    """A table row as a model wrote it (worker.prompts.RowItem)."""

    @property
    def metric(self) -> str: ...

    @property
    def value(self) -> float: ...

    @property
    def unit(self) -> str: ...


class ValidationFailed(Exception):
    """An answer that must not be journaled; the message is meant for a repair prompt."""


def _describe(metric: Metric) -> str:
    unit = f" {metric.unit}" if metric.unit else ""
    return f"{metric.name!r} = {format_number(metric.value)}{unit}"


def check_grounded(metrics: list[Metric], text: str) -> None:
    """Every metric has a name and a value stated in the text (allowing formatting and scale words)."""
    for i, metric in enumerate(metrics, start=1):
        if not metric.name.strip():
            raise ValidationFailed(f"metric #{i} ({format_number(metric.value)}) has an empty name")
        if not math.isfinite(metric.value):
            raise ValidationFailed(f"metric {metric.name!r} has a non-finite value ({metric.value})")
        if not is_grounded(metric.value, text, rel_tol=_VALUE_REL_TOL):
            raise ValidationFailed(
                f"metric {_describe(metric)} is not stated in the report; "
                f"use only values that appear in it. Numbers in the report: {_report_numbers(text)}"
            )
    if not metrics:
        strong = [q.raw for q in find_quantities(text) if q.unit == "%" or is_currency(q.unit)]
        if strong:
            raise ValidationFailed(
                f"no metrics were extracted, but the report states {', '.join(strong[:MAX_LISTED])}; "
                "extract every metric the report states"
            )


def _report_numbers(text: str) -> str:
    raws = [q.raw for q in find_quantities(text)]
    if not raws:
        return "(none)"
    more = f" and {len(raws) - MAX_LISTED} more" if len(raws) > MAX_LISTED else ""
    return ", ".join(raws[:MAX_LISTED]) + more


def _same(a: Metric, b: Metric) -> bool:
    return a.name == b.name and a.unit == b.unit and math.isclose(a.value, b.value, rel_tol=1e-9, abs_tol=1e-9)


def check_sorted_permutation(original: list[Metric], answer: list[Metric]) -> None:
    """The answer holds exactly the original metrics (same name, value and unit), largest value first."""
    unmatched = list(original)
    extra: list[Metric] = []
    for metric in answer:
        match = next((i for i, o in enumerate(unmatched) if _same(o, metric)), None)
        if match is None:
            extra.append(metric)
        else:
            unmatched.pop(match)
    if extra or unmatched:
        problems = []
        if unmatched:
            problems.append("missing " + "; ".join(_describe(m) for m in unmatched))
        if extra:
            problems.append("not in the input " + "; ".join(_describe(m) for m in extra))
        raise ValidationFailed(
            f"the sorted list must contain exactly the {len(original)} input metrics, unchanged: "
            + " | ".join(problems)
        )
    for i, (first, second) in enumerate(itertools.pairwise(answer), start=1):
        if first.value < second.value:
            raise ValidationFailed(
                f"not sorted by value, largest first: #{i} {_describe(first)} comes before #{i + 1} {_describe(second)}"
            )


def apply_order(metrics: list[Metric], letters: list[str]) -> list[Metric]:
    """The metrics in the order of their letters (A = the first metric given); each letter exactly once."""
    from worker.prompts import LETTERS  # the letters the prompt labelled the metrics with

    known = {LETTERS[i]: i for i in range(len(metrics))}
    picked = [letter.strip() for letter in letters]
    unknown = [letter for letter in picked if letter not in known]
    if unknown:
        raise ValidationFailed(f"unknown letters {unknown}: use only {', '.join(known)}")
    repeated = sorted({letter for letter in picked if picked.count(letter) > 1})
    missing = [letter for letter in known if letter not in picked]
    if repeated or missing:
        problems = ([f"repeated {', '.join(repeated)}"] if repeated else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise ValidationFailed(f"the order must hold each of the {len(metrics)} letters once: {'; '.join(problems)}")
    return [metrics[known[letter]] for letter in picked]


def check_rows(metrics: list[Metric], rows: Sequence[RowLike]) -> None:
    """One row per metric, in order, each with the metric's name, value and unit (names and units as a reader
    compares them: case, spacing and emphasis aside)."""
    if len(rows) != len(metrics):
        raise ValidationFailed(f"the table must have one row per metric: {len(metrics)} metrics, {len(rows)} rows")
    for i, (metric, row) in enumerate(zip(metrics, rows, strict=True), start=1):
        if _plain(row.metric) != _plain(metric.name):
            raise ValidationFailed(f"row {i} must name metric {metric.name!r} exactly; got {row.metric!r}")
        if not math.isclose(row.value, metric.value, rel_tol=1e-9, abs_tol=1e-9):
            raise ValidationFailed(
                f"row {i} must show the value of {_describe(metric)}; got {format_number(row.value)}"
            )
        if _plain(row.unit) != _plain(metric.unit):
            raise ValidationFailed(
                f"row {i} must show the unit of {_describe(metric)} ({metric.unit!r}); got {row.unit!r}"
            )


_SEPARATOR_CELL_RE = re.compile(r":?-+:?")
_UNESCAPED_PIPE_RE = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip() for cell in _UNESCAPED_PIPE_RE.split(row)]


def _plain(cell: str) -> str:
    # Compare names as a reader would: unescaped, without emphasis or code marks, spaces collapsed.
    text = cell.replace("\\|", "|").strip("*_` ")
    return " ".join(text.split()).casefold()


def _shows(value: float, shown: Iterable[float]) -> bool:
    return any(math.isclose(value, v, rel_tol=_VALUE_REL_TOL, abs_tol=1e-9) for v in shown)


def check_table(metrics: list[Metric], markdown: str) -> None:
    """A markdown table: header, separator, then one row per metric, in order, showing its name and value."""
    lines = [line for line in markdown.strip().splitlines() if line.strip()]
    not_rows = [line for line in lines if "|" not in line]
    if not_rows:
        raise ValidationFailed(
            f"the answer must be only a markdown table; this line is not a table row: {not_rows[0]!r}"
        )
    if len(lines) < 2:
        raise ValidationFailed("the table needs a header row and a separator row such as |---|---|---|")
    header, separator, rows = _cells(lines[0]), _cells(lines[1]), lines[2:]
    if len(header) < 2:
        raise ValidationFailed(f"the header row needs at least a metric and a value column: {lines[0]!r}")
    if len(separator) != len(header) or not all(_SEPARATOR_CELL_RE.fullmatch(c) for c in separator):
        raise ValidationFailed(
            f"the second line must be a separator row with {len(header)} cells like |---|, got {lines[1]!r}"
        )
    if len(rows) != len(metrics):
        raise ValidationFailed(f"the table must have one row per metric: {len(metrics)} metrics, {len(rows)} rows")
    for i, (metric, line) in enumerate(zip(metrics, rows, strict=True), start=1):
        cells = _cells(line)
        name = _plain(metric.name)
        names = [j for j, cell in enumerate(cells) if _plain(cell) == name]
        if not names:
            raise ValidationFailed(f"row {i} must show metric {_describe(metric)} by its exact name; got {line!r}")
        others = " ".join(cell.replace("\\|", "|") for j, cell in enumerate(cells) if j != names[0])
        # Face value only: "12.5M" or "12,500,000" shows 12500000, "12,500" does not; rounding within 0.5% is fine.
        # The plain literals are a cheap subset of the stated values and usually enough ("12,500,000").
        if not _shows(metric.value, literal_values(others)) and not _shows(metric.value, stated_values(others)):
            raise ValidationFailed(
                f"row {i} must show the value of {_describe(metric)} (e.g. {format_number(metric.value)}); got {line!r}"
            )
