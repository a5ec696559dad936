"""The steps in code (the offline provider): deterministic extraction, sorting and tables, and
answers that pass validation."""

from __future__ import annotations

import pytest

from evaluation import CORPUS_PATH, load_corpus
from worker.models import Metric
from worker.providers.offline import extract_metrics, markdown_table, sort_metrics
from worker.validation import check_grounded, check_sorted_permutation, check_table


def triples(metrics: list[Metric]) -> list[tuple[str, float, str]]:
    return [(m.name, m.value, m.unit) for m in metrics]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Quarterly results: revenue was $12.5M.", [("Revenue", 12_500_000, "USD")]),
        ("Platform: uptime 99.97% in October.", [("Uptime", 99.97, "%")]),
        ("We had 3 incidents.", [("Incidents", 3, "")]),
        ("Alerts: p95 API latency of 240 ms.", [("p95 API latency", 240, "ms")]),
        ("Sales pipeline: 1,450 qualified leads.", [("Qualified leads", 1450, "")]),
        ("the average gift was $280", [("Average gift", 280, "USD")]),
        ("mean time to recovery 18 minutes", [("Mean time to recovery", 18, "min")]),
        ("Die Retourenquote sank auf 6,5 % im Mai.", [("Retourenquote", 6.5, "%")]),
    ],
)
def test_extract_names_metrics_from_the_words_around_them(text: str, expected: list[tuple[str, float, str]]) -> None:
    assert triples(extract_metrics(text)) == expected


def test_extract_a_whole_report() -> None:
    text = (
        "Quarterly results: revenue was $12.5M, up 22% from last year. "
        "Operating margin reached 18% and headcount grew to 340 employees."
    )
    assert triples(extract_metrics(text)) == [
        ("Revenue", 12_500_000, "USD"),
        ("Revenue growth", 22, "%"),
        ("Operating margin", 18, "%"),
        ("Headcount (employees)", 340, ""),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The noun phrase the number measures, not the nearest capitalised word.
        (
            "Platform costs: the team spent $1.35M on cloud infrastructure.",
            [("Cloud infrastructure spend", 1_350_000, "USD")],
        ),
        ("Operating costs came to $8.2M.", [("Operating costs", 8_200_000, "USD")]),
        ("The Lyon outlet sold goods worth EUR 48,310.75.", [("Value of goods sold", 48_310.75, "EUR")]),
        ("Demand on the hottest day reached 61,500 cubic metres.", [("Peak demand", 61_500, "m3")]),
        ("Project Falcon: Costs 9M, budget 10M.", [("Costs", 9_000_000, ""), ("Budget", 10_000_000, "")]),
        ("Wholesale (1.2M) USD.", [("Wholesale", -1_200_000, "USD")]),
        # With its subject, and the verb that says what was counted.
        ("Sales were flat, while Osaka booked ¥310 million in orders.", [("Osaka orders", 310_000_000, "JPY")]),
        ("The city repaired 1,284 potholes.", [("Potholes repaired", 1284, "")]),
        (
            "The help desk closed 1,204 tickets and escalated 37.",
            [("Tickets closed", 1204, ""), ("Tickets escalated", 37, "")],
        ),
        (
            "Found 7 critical and 23 high-severity vulnerabilities.",
            [("Critical vulnerabilities", 7, ""), ("High-severity vulnerabilities", 23, "")],
        ),
        ("27 trucks were turned back.", [("Trucks turned back", 27, "")]),
        # What the verb says about the value.
        ("The outage lasted 47 minutes.", [("Outage duration", 47, "min")]),
        ("Error rate peaked at 12.4%.", [("Peak error rate", 12.4, "%")]),
        (
            "Onboarding now takes 3 days instead of 5.",
            [("Onboarding time", 3, "days"), ("Onboarding time (previous)", 5, "days")],
        ),
        (
            "Your electricity use was 312 kWh, 9% less than last month.",
            [("Electricity use", 312, "kWh"), ("Electricity use decrease", 9, "%")],
        ),
        (
            "Labour cost came to $0.31 per line and burn is down to $410K a month.",
            [("Labour cost per line", 0.31, "USD"), ("Monthly burn", 410_000, "USD")],
        ),
        ("Occupancy at the Harbour Tower is 91%.", [("Occupancy (Harbour Tower)", 91, "%")]),
    ],
)
def test_extract_names_what_the_number_measures(text: str, expected: list[tuple[str, float, str]]) -> None:
    assert triples(extract_metrics(text)) == expected


def test_every_quantity_gets_a_name_whatever_the_words() -> None:
    for text in [
        "1 2 3",
        "(5)",
        ": 7 :",
        "per 3, a 4 of 5 in 6 on",
        "3 x",
        "— 12 —",
        "the 4 the",
        "were 9 were turned",
    ]:
        assert all(m.name.strip() for m in extract_metrics(text)), text


@pytest.mark.parametrize(
    "text",
    [
        "Quiet week: the office was closed for the holidays.",
        "In Q3 2024 the 3rd floor team moved; see v2.1 notes from 2024-05-02.",
        "Top 10 accounts over the last 30 days, per 1,000 users, every 5 minutes.",
        "Ward 4 and Plant 3 reopened after a 7-day pause.",
        "Support is 24/7 and the meeting starts at 14:00.",
    ],
)
def test_extract_skips_numbers_that_are_not_metrics(text: str) -> None:
    assert extract_metrics(text) == []


def test_extract_names_range_ends_and_previous_values() -> None:
    assert triples(extract_metrics("Delivery time was 10-12 days.")) == [
        ("Delivery time (low)", 10, "days"),
        ("Delivery time (high)", 12, "days"),
    ]
    assert triples(extract_metrics("Build time fell from 14 to 9 minutes.")) == [
        ("Build time (previous)", 14, "min"),
        ("Build time", 9, "min"),
    ]


def test_extract_keeps_negative_values() -> None:
    metrics = extract_metrics("Operating loss was -$3.2M versus -$4.0M last quarter.")
    assert triples(metrics) == [
        ("Operating loss", -3_200_000, "USD"),
        ("Operating loss (last quarter)", -4_000_000, "USD"),
    ]


def test_sort_is_descending_and_stable() -> None:
    metrics = [
        Metric(name="a", value=1),
        Metric(name="b", value=5),
        Metric(name="c", value=-2),
        Metric(name="d", value=5),
        Metric(name="e", value=0.5),
    ]
    assert [m.name for m in sort_metrics(metrics)] == ["b", "d", "a", "e", "c"]


def test_table_renders_readable_values_and_escapes_pipes() -> None:
    metrics = [
        Metric(name="Revenue", value=12_500_000, unit="USD"),
        Metric(name="Accuracy", value=0.873),
        Metric(name="Gross | net", value=42.0, unit="%"),
        Metric(name="Loss", value=-3.5e6, unit="EUR"),
    ]
    assert markdown_table(metrics) == (
        "| Metric | Value | Unit |\n"
        "|---|---:|---|\n"
        "| Revenue | 12,500,000 | USD |\n"
        "| Accuracy | 0.873 |  |\n"
        "| Gross \\| net | 42 | % |\n"
        "| Loss | -3,500,000 | EUR |"
    )


def test_table_of_no_metrics_is_a_header() -> None:
    assert markdown_table([]) == "| Metric | Value | Unit |\n|---|---:|---|"


def test_extraction_is_deterministic() -> None:
    text = CORPUS_PATH.read_text(encoding="utf-8")
    assert extract_metrics(text) == extract_metrics(text)


def test_offline_answers_pass_validation_on_every_labelled_report() -> None:
    """The offline chain must never produce an answer the steps would reject."""
    for report in load_corpus():
        message = report.message
        extracted = extract_metrics(message)
        check_grounded(extracted, message)
        ordered = sort_metrics(extracted)
        check_sorted_permutation(extracted, ordered)
        check_table(ordered, markdown_table(ordered))
