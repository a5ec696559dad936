"""Reading numbers from free text: values, units, scales, locales, ranges, and what is not a quantity."""

from __future__ import annotations

import pytest

from worker.numbers import (
    Quantity,
    find_quantities,
    format_number,
    grounding_candidates,
    is_currency,
    is_grounded,
    parse_number,
    reads_decimal_comma,
    stated_values,
)


def values(text: str) -> list[tuple[float, str]]:
    return [(q.value, q.unit) for q in find_quantities(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("revenue was $12.5M", [(12_500_000, "USD")]),
        ("average basket EUR 42.10", [(42.1, "EUR")]),
        ("a basket of 42,10 €", [(42.1, "EUR")]),
        ("sales of £67.40 and ¥38.5 million", [(67.4, "GBP"), (38_500_000, "JPY")]),
        ("Zurich reported CHF 1'240'000", [(1_240_000, "CHF")]),
        ("booked C$7.2M and A$3.9M", [(7_200_000, "CAD"), (3_900_000, "AUD")]),
        ("US$2.5bn raised", [(2_500_000_000, "USD")]),
        ("1.75 million dollars", [(1_750_000, "USD")]),
        ("spent 2.75 million euros", [(2_750_000, "EUR")]),
        ("profit EUR 312m", [(312_000_000, "EUR")]),
        ("12.6m pounds sterling", [(12_600_000, "GBP")]),
    ],
)
def test_currencies_symbols_codes_and_words(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uptime 99.97%", [(99.97, "%")]),
        ("conversion of 14.2 percent", [(14.2, "%")]),
        ("participation 74 per cent", [(74, "%")]),
        ("Marge 12,5 % und 38 Prozent", [(12.5, "%"), (38, "%")]),
        ("margin widened 150 basis points", [(150, "bp")]),
    ],
)
def test_percent_spellings(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,450 qualified leads", [(1450, "")]),
        ("12,300 passengers", [(12300, "")]),
        ("1,000,000 rows", [(1_000_000, "")]),
        ("le CA atteint 1 000 clients", [(1000, "")]),
        ("1.000.000 kWh Verbrauch", [(1_000_000, "kWh")]),
        ("Umsatz stieg auf 840.000 EUR und die Quote sank", [(840_000, "EUR")]),
        ("0.873 accuracy", [(0.873, "")]),
        ("1.234,56 € Umsatz", [(1234.56, "EUR")]),
    ],
)
def test_thousands_separators_and_decimals(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.8k visitors", [(9800, "")]),
        ("$40K budget", [(40_000, "USD")]),
        ("2.3M impressions", [(2_300_000, "")]),
        ("a 7B parameter model", [(7_000_000_000, "")]),
        ("assets of $4.7bn", [(4_700_000_000, "USD")]),
        ("2,5 Mio. EUR Umsatz", [(2_500_000, "EUR")]),
        ("3 Mrd. Euro", [(3_000_000_000, "EUR")]),
        ("12 thousand users", [(12_000, "")]),
        ("1.2 billion rows", [(1_200_000_000, "")]),
        ("3m users signed up", [(3_000_000, "")]),
    ],
)
def test_scale_suffixes(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


def test_lowercase_m_is_metres_unless_money_or_a_plural_count_follows() -> None:
    assert values("the crane reached 18 m") == [(18, "m")]
    assert values("a 100m sprint") == [(100, "m")]
    assert values("raised $3m") == [(3_000_000, "USD")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency 240 ms", [(240, "ms")]),
        ("timeout after 30s", [(30, "s")]),
        ("recovery took 18 minutes", [(18, "min")]),
        ("downtime 14.5 hours", [(14.5, "h")]),
        ("sales cycle 46 days", [(46, "days")]),
        ("412 GB of 640 GB", [(412, "GB"), (640, "GB")]),
        ("3.6 TB per day", [(3.6, "TB")]),
        ("7.8 t per hectare over 1,150 hectares", [(7.8, "t/ha"), (1150, "ha")]),
        ("peaked at 41 °C", [(41, "°C")]),
        ("peaked at 41°C", [(41, "°C")]),
        ("2.1 million cubic meters", [(2_100_000, "m3")]),
        ("500 m3 of water", [(500, "m3")]),
        ("126 mm of rain over 12 km", [(126, "mm"), (12, "km")]),
        ("loads 3.4x faster", [(3.4, "x")]),
        ("14.6 GWh and 410 MWh", [(14.6, "GWh"), (410, "MWh")]),
        ("1,850 req/s", [(1850, "req/s")]),
        ("a reduction of 9.4 mmHg", [(9.4, "mmHg")]),
    ],
)
def test_units(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Operating loss was -$3.2M", [(-3_200_000, "USD")]),
        ("margin of $-1.5M", [(-1_500_000, "USD")]),
        ("trucks held −18 °C", [(-18, "°C")]),
        ("EBITDA margin slipped to -3.5%", [(-3.5, "%")]),
        ("EMEA ($1.2M), APAC $0.9M", [(-1_200_000, "USD"), (900_000, "USD")]),
        ("an operating loss of (£0.8m)", [(-800_000, "GBP")]),
        ("Wholesale (1.2M) USD, Online 0.6M USD", [(-1_200_000, "USD"), (600_000, "USD")]),
        (
            "Store P&L (EUR thousands): sales 1,840, cost of sales (1,120), 12 stores.",
            [(1_840_000, "EUR"), (-1_120_000, "EUR"), (12, "")],
        ),
        ("costs fell (12 USD) and then (7)", [(12, "USD"), (7, "")]),
        ("growth of 12 (3.2) units", [(12, ""), (3.2, "")]),
        ("NPS of +42", [(42, "")]),
        ("revenue fell 5%", [(5, "%")]),
    ],
)
def test_negative_values(text: str, expected: list[tuple[float, str]]) -> None:
    assert values(text) == expected


def test_a_hyphen_between_numbers_is_a_range_not_a_minus() -> None:
    quantities = find_quantities("delivery takes 10-12 days")
    assert [(q.value, q.unit, q.range_role) for q in quantities] == [(10, "days", "low"), (12, "days", "high")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("between 5 and 7 days", [(5, "days", "low"), (7, "days", "high")]),
        ("300–350 swaps", [(300, "", "low"), (350, "", "high")]),
        ("takes 4 to 6 minutes", [(4, "min", "low"), (6, "min", "high")]),
        ("revenue of $180-195M", [(180_000_000, "USD", "low"), (195_000_000, "USD", "high")]),
        ("rates of $1,850–2,100 per container", [(1850, "USD", "low"), (2100, "USD", "high")]),
        ("zwischen 3 und 4 Tagen", [(3, "days", "low"), (4, "days", "high")]),
        # Not ranges: a change from one value to another, or two unrelated values.
        ("rose from 9.8 to 12.5 million", [(9_800_000, "", None), (12_500_000, "", None)]),
        ("dropped from 41 to 29", [(41, "", None), (29, "", None)]),
        ("grew 5% to 340 stores", [(5, "%", None), (340, "", None)]),
        ("from 900 to 1.2 million", [(900, "", None), (1_200_000, "", None)]),
    ],
)
def test_ranges(text: str, expected: list[tuple[float, str, str | None]]) -> None:
    assert [(q.value, q.unit, q.range_role) for q in find_quantities(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "In 2024 we moved offices",
        "results for Q3 and H1",
        "the p95 and p99 are tracked",
        "ranked 3rd and 21st",
        "COVID-19 and GPT-4 and A100 and 5G",
        "upgrade to v2.1 then 3.11.4",
        "Python version 3.12 is required",
        "the 4.2 release is out",
        "shipped on 2024-05-02T10:00:00Z",
        "due 05/10/2024 or 05.10.2024",
        "meeting at 14:00 or 3 pm",
        "on March 14th, by 12 May and 3. Oktober",
        "since October 2024",
        "trends of the 1990s",
        "support 24/7",
        "a ratio of 3:1",
        "ticket #4521",
        "it split 50/50",
    ],
)
def test_not_quantities(text: str) -> None:
    assert find_quantities(text) == []


def test_digit_strings_too_long_for_a_float_are_not_quantities() -> None:
    assert find_quantities("value " + "9" * 400 + " units") == []


def test_years_only_when_the_words_around_say_so() -> None:
    assert values("Revenue 2023: $5M") == [(5_000_000, "USD")]
    assert values("we shipped 2024 orders") == [(2024, "")]
    assert values("the team grew to 1,999 people") == [(1999, "")]


def test_a_bare_number_compared_with_a_quantity_takes_its_unit() -> None:
    assert values("takes 3 days instead of 5") == [(3, "days"), (5, "days")]
    assert values("median 46 minutes (target 60)") == [(46, "min"), (60, "min")]
    assert values("revenue $5M versus 4 last year") == [(5_000_000, "USD"), (4, "")]


def test_a_build_duration_is_not_a_version() -> None:
    assert values("median build 8.5 minutes, build 2.1 failed") == [(8.5, "min")]


def test_rating_keeps_the_score_not_the_scale() -> None:
    assert values("rated 4.6/5 by users") == [(4.6, "")]


def test_quantity_carries_span_and_raw_literal() -> None:
    text = "Operating loss was -$3.2M last quarter"
    [quantity] = find_quantities(text)
    assert quantity == Quantity(value=-3_200_000, unit="USD", span=(19, 25), raw="-$3.2M")
    assert text[quantity.span[0] : quantity.span[1]] == quantity.raw


@pytest.mark.parametrize(
    ("literal", "decimal_comma", "expected"),
    [
        ("1,450", False, 1450.0),
        ("1,450", True, 1.45),
        ("1.450", False, 1.45),
        ("1.450", True, 1450.0),
        ("42,10", False, 42.1),
        ("1.000.000", False, 1_000_000.0),
        ("1,000,000.5", False, 1_000_000.5),
        ("1.234,56", False, 1234.56),
        ("1 000", False, 1000.0),
        ("0.873", True, 0.873),
        ("1,2,3", False, None),
        ("1.2.3", False, None),
    ],
)
def test_parse_number(literal: str, decimal_comma: bool, expected: float | None) -> None:
    assert parse_number(literal, decimal_comma) == expected


def test_locale_detection() -> None:
    assert reads_decimal_comma("die Retourenquote sank auf 6,5 %")
    assert reads_decimal_comma("Umsatz stieg auf 840.000 EUR und die Kosten sanken")
    assert reads_decimal_comma("2,5 Mio. Besucher")
    assert not reads_decimal_comma("1,450 qualified leads and a win rate of 27%")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12_500_000, "12,500,000"),
        (1.25e7, "12,500,000"),
        (42.0, "42"),
        (42.1, "42.1"),
        (0.873, "0.873"),
        (-3_200_000, "-3,200,000"),
        (0.1 + 0.2, "0.3"),
        (1e-7, "0.0000001"),
        (99.97, "99.97"),
        (-0.0, "0"),
    ],
)
def test_format_number_is_readable(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_is_currency() -> None:
    assert is_currency("USD") and is_currency("EUR")
    assert not is_currency("%") and not is_currency("") and not is_currency("ms")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12_500_000, "revenue was $12.5M"),
        (12.5, "revenue was $12.5M"),  # a model may keep the scale in the unit ("USD M")
        (12_500_000, "revenue was 12,500,000 dollars"),
        (22, "up 22% year over year"),
        (0.22, "up 22% year over year"),  # percent as a fraction
        (87.3, "accuracy 0.873"),  # fraction as a percent
        (-3_200_000, "loss of $3.2M"),  # sign flips are a matter of naming
        (840_000, "Umsatz 840.000 EUR"),
        (6.5, "Quote 6,5 %"),
        (1450, "1,450 leads"),
        (11, "takes 10-12 days"),  # a range's midpoint
        (0.24, "p95 latency of 240 ms"),  # ms -> s
        (0.3, "recovered in 18 minutes"),  # minutes -> hours
        (3, "three incidents"),
        (25, "twenty-five stores"),
        (0, "no incidents"),
        (12_450, "12 450 tickets"),
        (12.06, "12.0 units"),  # within 0.5%
    ],
)
def test_grounded(value: float, text: str) -> None:
    assert is_grounded(value, text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (13_000_000, "revenue was $12.5M"),
        (42, "uptime 99.97%, 3 incidents"),
        (12.2, "12.0 units"),  # beyond 0.5%
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (7, "no numbers here"),
    ],
)
def test_not_grounded(value: float, text: str) -> None:
    assert not is_grounded(value, text)


def test_grounding_candidates_are_sorted_and_include_the_scalings() -> None:
    candidates = grounding_candidates("revenue was $12.5M")
    assert candidates == sorted(candidates)
    assert {12.5, 12_500_000.0, 12_500.0, 0.125, -12.5} <= set(candidates)


def test_stated_values_take_numbers_at_face_value() -> None:
    assert stated_values("| Revenue | 12.5M | USD |") == [12.5, 12_500_000.0]
    assert 12_500_000.0 not in stated_values("| Revenue | 12,500 | USD |")
    assert -3_200_000.0 in stated_values("| Loss | -$3.2M |")
