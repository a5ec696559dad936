"""Synthetic reports for load tests: varied domains, wording and number formats,
each with the metrics a correct extraction finds.

Deterministic: the same seed gives the same reports. Values are built from
integers so the text and the expected value agree exactly ("$12.5M" -> 12500000).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from producer.reports import ExpectedMetric, Sample

# A formatter draws a value and writes it: (text as it appears in the report, value fully scaled).
Formatter = Callable[[random.Random], tuple[str, float]]


def _usd_millions(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(11, 999)
    return f"${tenths / 10:.1f}M", tenths * 100_000


def _usd_thousands(rng: random.Random) -> tuple[str, float]:
    k = rng.randint(12, 999)
    return f"${k}{rng.choice('kK')}", k * 1_000


def _usd_commas(rng: random.Random) -> tuple[str, float]:
    n = rng.randint(1_000, 9_999_999)
    return f"${n:,}", n


def _usd_million_word(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(11, 999)
    return f"${tenths / 10:.1f} million", tenths * 100_000


def _usd_signed_millions(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(-99, 99) or 7
    return f"{'-' if tenths < 0 else ''}${abs(tenths) / 10:.1f}M", tenths * 100_000


def _eur_decimal(rng: random.Random) -> tuple[str, float]:
    cents = rng.randint(150, 25_000)
    amount = f"{cents / 100:.2f}"
    return rng.choice([f"EUR {amount}", f"€{amount}", f"{amount} EUR"]), cents / 100


def _eur_german_millions(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(11, 99)
    return f"{tenths // 10},{tenths % 10} Mio. EUR", tenths * 100_000


def _percent(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(1, 999)
    number = f"{tenths // 10}" if tenths % 10 == 0 else f"{tenths / 10:.1f}"
    return rng.choice([f"{number}%", f"{number} percent", f"{number} per cent"]), tenths / 10


def _availability(rng: random.Random) -> tuple[str, float]:
    hundredths = rng.randint(9_900, 9_999)
    return f"{hundredths / 100:.2f}%", hundredths / 100


def _milliseconds(rng: random.Random) -> tuple[str, float]:
    ms = rng.randint(3, 2_500)
    return rng.choice([f"{ms} ms", f"{ms}ms", f"{ms} milliseconds"]), ms


def _minutes(rng: random.Random) -> tuple[str, float]:
    minutes = rng.randint(2, 240)
    return rng.choice([f"{minutes} minutes", f"{minutes} min"]), minutes


def _days(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(5, 150)
    return f"{tenths / 10:.1f} days", tenths / 10


def _count(rng: random.Random) -> tuple[str, float]:
    n = rng.randint(2, 99_999)
    return f"{n:,}", n


def _count_ungrouped(rng: random.Random) -> tuple[str, float]:
    n = rng.randint(2, 99_999)
    if 1_800 <= n <= 2_199:
        n += 500  # "store visits reached 2099" reads as a year
    return f"{n}", n


def _count_thousands(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(11, 999)
    return f"{tenths / 10:.1f}k", tenths * 100


def _cubic_metres(rng: random.Random) -> tuple[str, float]:
    tenths = rng.randint(11, 99)
    return rng.choice([f"{tenths / 10:.1f} million cubic metres", f"{tenths / 10:.1f} million m3"]), tenths * 100_000


def _megawatts(rng: random.Random) -> tuple[str, float]:
    mw = rng.randint(40, 4_000)
    return f"{mw:,} MW", mw


@dataclass(frozen=True)
class MetricKind:
    unit: str
    formats: tuple[Formatter, ...]


USD = MetricKind("USD", (_usd_millions, _usd_thousands, _usd_commas, _usd_million_word))
USD_SIGNED = MetricKind("USD", (_usd_signed_millions,))
EUR = MetricKind("EUR", (_eur_decimal,))
EUR_LARGE = MetricKind("EUR", (_eur_german_millions,))
PERCENT = MetricKind("%", (_percent,))
AVAILABILITY = MetricKind("%", (_availability,))
MS = MetricKind("ms", (_milliseconds,))
MINUTES = MetricKind("min", (_minutes,))
DAYS = MetricKind("days", (_days,))
COUNT = MetricKind("", (_count, _count_thousands))
# Next to German notation ("2,4 Mio. EUR") a grouped "66,753" would be ambiguous: write counts without commas.
COUNT_UNGROUPED = MetricKind("", (_count_ungrouped, _count_thousands))
M3 = MetricKind("m3", (_cubic_metres,))
MW = MetricKind("MW", (_megawatts,))


@dataclass(frozen=True)
class Domain:
    subjects: tuple[str, ...]
    metrics: tuple[tuple[str, MetricKind], ...]


DOMAINS = (
    Domain(
        ("Northwind Capital", "the EMEA sales team", "Acme Robotics", "the subscriptions business"),
        (
            ("Revenue", USD),
            ("Operating costs", USD),
            ("Net income", USD_SIGNED),
            ("Gross margin", PERCENT),
            ("New customers", COUNT),
            ("Churn", PERCENT),
            ("Pipeline", USD),
        ),
    ),
    Domain(
        ("the checkout service", "the search API", "the payments platform", "the mobile backend"),
        (
            ("Availability", AVAILABILITY),
            ("Tail latency", MS),
            ("Median latency", MS),
            ("Error rate", PERCENT),
            ("MTTR", MINUTES),
            ("Requests served", COUNT),
            ("Longest outage", MINUTES),
        ),
    ),
    Domain(
        ("the Munich flagship store", "our online shop", "the Lyon outlet", "the Benelux region"),
        (
            ("Sales", EUR_LARGE),
            ("Average basket", EUR),
            ("Return rate", PERCENT),
            ("Store visits", COUNT_UNGROUPED),
            ("Conversion rate", PERCENT),
            ("Average item price", EUR),
        ),
    ),
    Domain(
        ("the municipal water utility", "the northern grid operator", "the district heating network"),
        (
            ("Water delivered", M3),
            ("Leakage", PERCENT),
            ("Peak demand", MW),
            ("Customers served", COUNT),
            ("Average outage", MINUTES),
        ),
    ),
    Domain(
        ("the Rotterdam depot", "our last-mile fleet", "the cross-dock hub"),
        (
            ("Shipments", COUNT),
            ("On-time rate", PERCENT),
            ("Average delivery time", DAYS),
            ("Fuel cost", USD),
            ("Damaged parcels", COUNT),
        ),
    ),
)

# Periods and filler carry no digits, so every number in a report is an expected metric.
PERIODS = ("last quarter", "this week", "in March", "over the past month", "year to date", "since the relaunch")
OPENERS = ("{Subject}, {period}.", "Update from {subject} ({period}).", "Summary for {subject}, {period}:")
CLAUSES = ("{name} was {value}", "{name} came in at {value}", "{name} reached {value}", "{name} stood at {value}")
FILLER = (
    "The team expects a calmer period ahead.",
    "Figures are preliminary and may be revised.",
    "No unusual events were recorded.",
    "Details follow in the full review.",
)


def _mid_sentence(name: str) -> str:
    # "Revenue" -> "revenue", but keep acronyms such as "MTTR" as they are.
    return name[0].lower() + name[1:] if name[1:2].islower() else name


def _report(rng: random.Random) -> tuple[str, list[ExpectedMetric]]:
    domain = rng.choice(DOMAINS)
    subject = rng.choice(domain.subjects)
    chosen = rng.sample(domain.metrics, k=rng.randint(2, min(5, len(domain.metrics))))
    clauses, expected = [], []
    for i, (name, kind) in enumerate(chosen):
        text, value = rng.choice(kind.formats)(rng)
        clauses.append(rng.choice(CLAUSES).format(name=name if i == 0 else _mid_sentence(name), value=text))
        expected.append(ExpectedMetric(name=name, value=value, unit=kind.unit))
    body = ", ".join(clauses[:-1]) + f" and {clauses[-1]}." if len(clauses) > 1 else f"{clauses[0]}."
    opener = rng.choice(OPENERS).format(
        subject=subject, Subject=subject[0].upper() + subject[1:], period=rng.choice(PERIODS)
    )
    parts = [opener, body]
    if rng.random() < 0.4:
        parts.append(rng.choice(FILLER))
    return " ".join(parts), expected


def generate_reports(count: int, seed: int = 0, id_prefix: str | None = None) -> Iterator[Sample]:
    """`count` synthetic reports; ids `<id_prefix>-<n>` when a prefix is given."""
    rng = random.Random(seed)
    for n in range(1, count + 1):
        message, expected = _report(rng)
        yield Sample(id=f"{id_prefix}-{n:06d}" if id_prefix else None, message=message, expected=expected)
