"""Numbers in free text: the quantities a report states, and whether a value is grounded in it.

Shared by the offline extractor (worker/providers/offline.py) and answer validation
(worker/validation.py), so both agree on what "a number in the text" means.

Reading rules:
- Locale: a text is read with decimal commas ("14,2 %", "1.000.000", "2,5 Mio.") when it shows
  decimal-comma evidence or German function words; otherwise "1,450" is one thousand four hundred fifty.
  Groups separated by spaces or apostrophes ("1 000", "1'240'000") are thousands in every locale.
- Scales multiply the value: "k", "M", "B" (attached), "bn", "mn", "million", "billion", "thousand",
  "Mio.", "Mrd.", "Tsd.". A lowercase "m" means million only next to a currency ("$3m") or before a
  plural noun ("3m users"); otherwise it is metres ("18 m").
- Ranges ("10-12 days", "$180-195M", "between 5 and 7", "4 to 6 minutes") yield both ends, marked
  low/high. The end without a unit or scale takes the other end's ("$10-12M" is 10M..12M).
  Grounding also accepts the midpoint, since a model may summarise a range by it.
- Not quantities: dates, times, years ("in 2024"), ordinals ("3rd"), numbers glued to letters
  ("Q3", "p95", "COVID-19", "5G"), version numbers ("v2.1", "3.11.4"), rating denominators ("/5").
- A minus sign must touch the number or its currency ("-$3.2M", "−4.0", "$-3.2M"); "(3.2)" is negative
  only for a currency amount ("($1.2M)", "(1.2M) USD", or a bare amount after a currency heading such as
  "(EUR thousands):", which also lends the amount its currency and scale). "down 5%" is 5: direction
  words are left to the reader.
- A bare number compared with a quantity takes its unit ("3 days instead of 5", "46 minutes (target 60)").
- Spelled-out numbers ("three") are not extracted, but they count for grounding.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Literal

RangeRole = Literal["low", "high"]


@dataclass(frozen=True)
class Quantity:
    """One quantity stated in a text."""

    value: float
    """The value with scale and sign applied: "$12.5M" -> 12500000.0."""
    unit: str
    """A currency code ("USD"), "%", a unit ("ms", "GB", "°C"), or "" for a plain count."""
    span: tuple[int, int]
    """Where the quantity (sign, currency, number, scale, unit) sits in the text."""
    raw: str
    """The literal as written, e.g. "-$3.2M"."""
    range_role: RangeRole | None = None
    """Set when the quantity is one end of a range."""


# --- vocabulary -------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_SPACE = "[ \u00a0\u202f\u2009]"
_GROUP_SEP = "[ \u00a0\u202f\u2009'’]"
_NOT_LETTER_AFTER = r"(?![^\W\d_])"

_PREFIX_SYMBOLS = {
    "US$": "USD",
    "$": "USD",
    "C$": "CAD",
    "CA$": "CAD",
    "A$": "AUD",
    "AU$": "AUD",
    "NZ$": "NZD",
    "HK$": "HKD",
    "S$": "SGD",
    "R$": "BRL",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "₩": "KRW",
    "₽": "RUB",
}
_CODES = _words("USD EUR GBP CHF JPY CNY CAD AUD NZD HKD SGD SEK NOK DKK PLN CZK HUF INR BRL MXN ZAR KRW TRY")
_CURRENCY_WORDS = {
    "dollars": "USD",
    "dollar": "USD",
    "euros": "EUR",
    "euro": "EUR",
    "pounds sterling": "GBP",
    "yen": "JPY",
    "yuan": "CNY",
    "francs": "CHF",
    "franken": "CHF",
    "rupees": "INR",
}
_SCALE_WORDS = {
    "thousand": 1e3,
    "Tsd.": 1e3,
    "Tsd": 1e3,
    "million": 1e6,
    "millions": 1e6,
    "Million": 1e6,
    "Millionen": 1e6,
    "Mio.": 1e6,
    "Mio": 1e6,
    "mn": 1e6,
    "billion": 1e9,
    "billions": 1e9,
    "Milliarde": 1e9,
    "Milliarden": 1e9,
    "Mrd.": 1e9,
    "Mrd": 1e9,
    "bn": 1e9,
    "trillion": 1e12,
    "tn": 1e12,
}
# Single letters scale only when attached ("9.8k"); "m", "MM", "T" only for money ("$3m", "$2MM", "$1.2T").
_SCALE_LETTERS = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9}
_MONEY_SCALE_LETTERS = {"m": 1e6, "MM": 1e6, "T": 1e12}

# Units matched case-sensitively (symbols) and case-insensitively (words); canonical form on the right.
_UNIT_SYMBOLS = {
    "%": "%",
    "pp": "pp",
    "p.p.": "pp",
    "bp": "bp",
    "bps": "bp",
    "ms": "ms",
    "µs": "µs",
    "μs": "µs",
    "ns": "ns",
    "s": "s",
    "min": "min",
    "h": "h",
    "KB": "KB",
    "kB": "KB",
    "MB": "MB",
    "GB": "GB",
    "TB": "TB",
    "PB": "PB",
    "KiB": "KiB",
    "MiB": "MiB",
    "GiB": "GiB",
    "TiB": "TiB",
    "kbps": "kbps",
    "Kbps": "kbps",
    "Mbps": "Mbps",
    "Gbps": "Gbps",
    "Tbps": "Tbps",
    "MB/s": "MB/s",
    "GB/s": "GB/s",
    "mg": "mg",
    "g": "g",
    "kg": "kg",
    "t": "t",
    "lb": "lb",
    "lbs": "lb",
    "oz": "oz",
    "mm": "mm",
    "cm": "cm",
    "m": "m",
    "km": "km",
    "mi": "mi",
    "ft": "ft",
    "m²": "m²",
    "m2": "m²",
    "km²": "km²",
    "km2": "km²",
    "ha": "ha",
    "m³": "m3",
    "m3": "m3",
    "L": "L",
    "l": "L",
    "ml": "mL",
    "mL": "mL",
    "hl": "hL",
    "bbl": "bbl",
    "Wh": "Wh",
    "kWh": "kWh",
    "MWh": "MWh",
    "GWh": "GWh",
    "TWh": "TWh",
    "W": "W",
    "kW": "kW",
    "MW": "MW",
    "GW": "GW",
    "V": "V",
    "kV": "kV",
    "mAh": "mAh",
    "Ah": "Ah",
    "Hz": "Hz",
    "kHz": "kHz",
    "MHz": "MHz",
    "GHz": "GHz",
    "rpm": "rpm",
    "bpm": "bpm",
    "mmHg": "mmHg",
    "mg/dL": "mg/dL",
    "mmol/L": "mmol/L",
    "°C": "°C",
    "° C": "°C",
    "℃": "°C",
    "°F": "°F",
    "°": "°",
    "km/h": "km/h",
    "mph": "mph",
    "m/s": "m/s",
    "req/s": "req/s",
    "rps": "req/s",
    "RPS": "req/s",
    "qps": "req/s",
    "QPS": "req/s",
    "TPS": "TPS",
    "ops/s": "ops/s",
    "pts": "pts",
    "x": "x",
    "×": "x",
}
_UNIT_WORDS = {
    "percent": "%",
    "per cent": "%",
    "pct": "%",
    "prozent": "%",
    "percentage points": "pp",
    "prozentpunkte": "pp",
    "basis points": "bp",
    "basispunkte": "bp",
    "milliseconds": "ms",
    "millisecond": "ms",
    "msec": "ms",
    "microseconds": "µs",
    "seconds": "s",
    "second": "s",
    "secs": "s",
    "sec": "s",
    "sekunden": "s",
    "minutes": "min",
    "minute": "min",
    "mins": "min",
    "minuten": "min",
    "hours": "h",
    "hour": "h",
    "hrs": "h",
    "hr": "h",
    "stunden": "h",
    "days": "days",
    "day": "days",
    "tage": "days",
    "tagen": "days",
    "weeks": "weeks",
    "week": "weeks",
    "wochen": "weeks",
    "months": "months",
    "month": "months",
    "monate": "months",
    "monaten": "months",
    "years": "years",
    "year": "years",
    "yrs": "years",
    "jahre": "years",
    "jahren": "years",
    "tonnes": "t",
    "tonne": "t",
    "tons": "t",
    "ton": "t",
    "tonnen": "t",
    "kilograms": "kg",
    "kilos": "kg",
    "grams": "g",
    "pounds": "lb",
    "meters": "m",
    "metres": "m",
    "meter": "m",
    "metre": "m",
    "kilometers": "km",
    "kilometres": "km",
    "kilometer": "km",
    "miles": "mi",
    "mile": "mi",
    "feet": "ft",
    "square meters": "m²",
    "square metres": "m²",
    "hectares": "ha",
    "acres": "acres",
    "cubic meters": "m3",
    "cubic metres": "m3",
    "kubikmeter": "m3",
    "liters": "L",
    "litres": "L",
    "liter": "L",
    "litre": "L",
    "gallons": "gal",
    "barrels": "bbl",
    "degrees celsius": "°C",
    "degrees": "°",
    "points": "pts",
}
_TIME_SECONDS = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "days": 86400.0, "weeks": 604800.0}
_ATTACHED_ONLY_UNITS = frozenset({"x"})  # "3x faster" yes, "3 x 4" no


def _alternation(words: list[str] | set[str] | frozenset[str]) -> str:
    # Longest first, so "Mio." wins over "Mio" and "kWh" over "kW".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PREFIX_RE = re.compile(
    rf"(?P<sign1>[-−+])?(?:(?P<sym>{_alternation(set(_PREFIX_SYMBOLS))})|\b(?P<code>{_alternation(_CODES)}){_SPACE}?)"
    rf"{_SPACE}?(?P<sign2>[-−+])?$|(?P<sign>[-−+])$"
)
_SCALE_LETTER_RE = re.compile(rf"({_SPACE}?)(MM|[A-Za-z])(?!\w)")
_SCALE_WORD_RE = re.compile(rf"{_SPACE}?(?P<w>{_alternation(set(_SCALE_WORDS))})(?!\w)")
_CURRENCY_SUFFIX_RE = re.compile(
    rf"{_SPACE}?(?:(?P<sym>[$€£¥₹])|(?P<code>{_alternation(_CODES)})\b|(?i:(?P<word>{_alternation(set(_CURRENCY_WORDS))}))\b)"
)
_UNIT_RE = re.compile(
    rf"(?P<sp>{_SPACE}?)(?:(?P<sym>{_alternation(set(_UNIT_SYMBOLS))})|(?i:(?P<word>{_alternation(set(_UNIT_WORDS))})))"
    r"(?![\w/²³])"
)

_SPACE_GROUPED = rf"\d{{1,3}}(?:{_GROUP_SEP}\d{{3}})+(?:[.,]\d+)?"
_NUMBER_RE = re.compile(
    r"(?<![\d.,])(?:"
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # 1,450  12,500,000.5
    r"|\d{1,3}(?:\.\d{3})+(?:,\d+)?"  # 1.000.000  840.000  1.234,56  (and 0.873, resolved by parse_number)
    rf"|(?<![^\W\d_]){_SPACE_GROUPED}"  # 1 000  1'240'000, but not "Q3 100"
    r"|\d+(?:[.,]\d+)?"  # 42  42.10  14,2
    r")(?!\d)"
)

_MONTHS = _words(
    "January February March April May June July August September October November December "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "Januar Februar März Mai Juni Juli Oktober Dezember"
)
_MONTH = rf"(?:{_alternation(_MONTHS)})\.?"
# Spans that hold numbers but no quantity: dates, times, versions, ratios.
_NOT_QUANTITY_RES = [
    re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"),
    re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.](?:\d{4}|\d{2})(?!\d)"),
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?(?:[ap]\.?m\.?|Uhr|UTC|GMT|CET|CEST)\b)?"),
    re.compile(r"\b\d{1,2}\s?(?:[ap]\.m\.|(?:am|pm|AM|PM|Uhr)\b)"),
    re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?![\d.,%])(?!\s+[a-z]+s\b)(?:,?\s+\d{{4}}\b)?"),
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th|\.)?\s+(?:of\s+)?{_MONTH}{_NOT_LETTER_AFTER}(?:,?\s+\d{{4}}\b)?"),
    re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"),
    re.compile(r"\b(?:19|20)\d0['’]?s\b|['’]\d0s\b|['’]\d{2}\b"),
    re.compile(r"\b\d+:\d+\b|\b24/7\b"),
    # "version 3.12", but not "build 8.5 minutes": a version is never a duration or a share.
    re.compile(
        r"(?i:\b(?:version|release|build|patch|v)\.?\s?)\d+(?:\.\d+)*"
        r"(?![\d.]|\s?(?:%|ms|s|secs?|seconds|mins?|minutes|h|hrs?|hours|days)\b)"
    ),
    re.compile(r"\b\d+(?:\.\d+)+\s+(?i:release|version|update|build|patch)\b"),
]
_DOTTED_RE = re.compile(r"\b\d+(?:\.\d+){2,}\b")
_GERMAN_THOUSANDS_RE = re.compile(r"\d{1,3}(?:\.\d{3})+")

_DECIMAL_COMMA_HINT_RE = re.compile(
    r"\d,\d{1,2}(?!\d)|\d{1,3}(?:\.\d{3}){2,}(?!\d)|\d\.\d{3},\d|\b(?:Mio|Mrd|Tsd)\b|\d\s?€"
)
_GERMAN_WORD_RE = re.compile(
    r"\b(?:und|der|die|das|mit|auf|wurden|wurde|ist|sind|im|für|bei|gegenüber|stieg|sank|lag|betrug|nach)\b"
)

# Before a bare 19xx/20xx: words that make it a year ("since 2019") ...
_YEAR_BEFORE = _words(
    "in since during until till by fy cy fiscal year years early late mid end q1 q2 q3 q4 h1 h2 seit im bis jahr"
    " ende anfang"
) | frozenset(m.lower() for m in _MONTHS)
# ... and words that make it a year when they follow or precede it ("2024 levels", "from 2023").
_YEAR_WEAK_BEFORE = _words("from to of for than vs versus and or the between von zu")
_YEAR_AFTER = _words(
    "and or to vs versus levels level figures results budget baseline average season report guidance plan"
    " forecast target targets values numbers period"
)


# --- reading one number ---------------------------------------------------------------------


_GROUP_SEP_RE = re.compile(_GROUP_SEP)
_DIGITS_RE = re.compile(r"\d+(?:[.,]\d+)*")


def reads_decimal_comma(text: str) -> bool:
    """Whether the text writes decimals with a comma ("14,2 %") and thousands with dots ("840.000")."""
    if _DECIMAL_COMMA_HINT_RE.search(text):
        return True
    return len(set(_GERMAN_WORD_RE.findall(text))) >= 2


def parse_number(literal: str, decimal_comma: bool = False) -> float | None:
    """The value of a number literal such as "1,450", "1.000.000", "14,2" or "1 000"; None when malformed."""
    digits = _GROUP_SEP_RE.sub("", literal)
    if not _DIGITS_RE.fullmatch(digits):
        return None
    if "," in digits and "." in digits:
        decimal = "," if digits.rfind(",") > digits.rfind(".") else "."
        group = "." if decimal == "," else ","
        head, _, tail = digits.rpartition(decimal)
        if decimal in head or not _is_grouped(head, group):
            return None
        return float(head.replace(group, "") + "." + tail)
    for sep in (",", "."):
        if sep not in digits:
            continue
        head, *groups = digits.split(sep)
        thousands = head != "0" and all(len(g) == 3 for g in groups)
        if len(groups) > 1:
            return float("".join([head, *groups])) if thousands else None
        # One separator: the locale's decimal mark is a decimal; the other mark groups thousands
        # when followed by exactly three digits ("1,450" in English), and is a decimal otherwise ("42,10").
        is_decimal_mark = (sep == ",") == decimal_comma
        return float(head + groups[0]) if thousands and not is_decimal_mark else float(head + "." + groups[0])
    return float(digits)


def _is_grouped(head: str, group: str) -> bool:
    first, *rest = head.split(group)
    return 1 <= len(first) <= 3 and all(len(g) == 3 for g in rest) if rest else True


def format_number(value: float) -> str:
    """Render a value for people: 12500000 -> "12,500,000", 0.873 -> "0.873", 42.0 -> "42"; never "1.25e7"."""
    if not math.isfinite(value):
        return str(value)
    # 15 significant digits hide float noise (0.1 + 0.2) but keep every digit a report can state.
    text = format(Decimal(f"{value:.15g}").normalize(), ",f")
    return "0" if text == "-0" else text


def is_currency(unit: str) -> bool:
    """Whether a canonical unit is a currency code ("USD", "EUR", ...)."""
    return unit in _CODES


# --- finding quantities ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    mantissa: float  # signed number as written, before scale
    scale: float
    unit: str
    start: int
    end: int
    range_role: RangeRole | None = None

    @property
    def value(self) -> float:
        return _clean(self.mantissa * self.scale)


def _clean(value: float) -> float:
    # 12.5 * 1e6 is 12500000.000000002 in binary floating point; state what the text states.
    return float(f"{value:.12g}")


def find_quantities(text: str) -> list[Quantity]:
    """Every quantity the text states, in order of appearance (see the module docstring for the rules)."""
    return list(_find_quantities(text))


# Extraction and grounding both read the same report: parse it once. Quantities are frozen.
@lru_cache(maxsize=256)
def _find_quantities(text: str) -> tuple[Quantity, ...]:
    decimal_comma = reads_decimal_comma(text)
    blocked = _blocked_spans(text)
    found: list[_Found] = []
    for match in _NUMBER_RE.finditer(text):
        if any(start < match.end() and match.start() < end for start, end in blocked):
            continue
        quantity = _read(text, match, decimal_comma)
        if quantity is not None:
            found.append(quantity)
    found = _pair_ranges(text, found)
    found = _borrow_compared_units(text, found)
    found = _apply_currency_headings(text, found)
    return tuple(
        Quantity(value=f.value, unit=f.unit, span=(f.start, f.end), raw=text[f.start : f.end], range_role=f.range_role)
        for f in found
    )


# The date patterns that need a month name are the costliest scans: a text without one skips them.
_MONTH_NAME_RE = re.compile(_MONTH)
_WITHOUT_MONTH_RES = [pattern for pattern in _NOT_QUANTITY_RES if _MONTH not in pattern.pattern]


def _blocked_spans(text: str) -> list[tuple[int, int]]:
    patterns = _NOT_QUANTITY_RES if _MONTH_NAME_RE.search(text) else _WITHOUT_MONTH_RES
    spans = [m.span() for pattern in patterns for m in pattern.finditer(text)]
    spans += [m.span() for m in _DOTTED_RE.finditer(text) if not _GERMAN_THOUSANDS_RE.fullmatch(m.group())]
    return spans


def _read(text: str, match: re.Match[str], decimal_comma: bool) -> _Found | None:
    literal = match.group()
    number = parse_number(literal, decimal_comma)
    if number is None or not math.isfinite(number):
        return None  # malformed, or too many digits to be a float
    start, end = match.span()

    currency: str | None = None
    sign = 1.0
    prefix = _PREFIX_RE.search(text, max(0, start - 8), start)
    if prefix:
        if prefix.group("sym"):
            currency = _PREFIX_SYMBOLS[prefix.group("sym")]
        elif prefix.group("code"):
            currency = prefix.group("code")
        signs = {prefix.group("sign1"), prefix.group("sign2"), prefix.group("sign")}
        if _sign_allowed(text, prefix.start()):
            sign = -1.0 if signs & {"-", "−"} else 1.0
            start = prefix.start()
        elif currency:
            start = prefix.start() + len(prefix.group("sign1") or "")
    if currency is None and _glued_before(text, match.start()):
        return None

    scale, unit, end = _read_suffix(text, match.end(), currency)
    if currency:
        unit = currency
    # Anything still glued on the right makes this an identifier ("3rd", "5G", "2FA"), not a quantity.
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        return None
    if text.startswith("/", end) and end + 1 < len(text) and text[end + 1].isdigit():
        denominator = re.match(r"\d+", text[end + 1 : end + 12])
        # "4.6/5" is a rating worth keeping; "1/3" or "50/50" is not one quantity.
        if denominator is None or denominator.group() not in ("5", "10", "100") or number > int(denominator.group()):
            return None
    if text[start - 1 : start] == "(" and text[end : end + 1] == ")":
        after = _CURRENCY_SUFFIX_RE.match(text, end + 1) if currency is None else None
        if after and not after.group("word"):
            currency, unit = _suffix_currency(after), _suffix_currency(after)
        if currency:
            # An accounting negative: "($1.2M)", "(£0.8m)", "(1.2M) USD"; "(3.2)" alone may be anything.
            sign, start, end = -1.0, start - 1, (after.end() if after else end + 1)
    if unit == "" and scale == 1.0 and sign > 0 and _is_year(text, literal, start, end):
        return None
    return _Found(sign * number, scale, unit, start, end)


def _sign_allowed(text: str, sign_at: int) -> bool:
    """A sign must not follow a word ("COVID-19") or a number ("10 - 12" is a range, not -12)."""
    before = text[max(0, sign_at - 40) : sign_at]
    if before and (before[-1].isalnum() or before[-1] in "_.,"):
        return False
    stripped = before.rstrip()
    return not (stripped and (stripped[-1].isdigit() or stripped[-1] == "%"))


def _glued_before(text: str, start: int) -> bool:
    """Numbers stuck to a word ("Q3", "p95", "A100"), a hyphenated word ("COVID-19"), "#12" or "/5"."""
    if start == 0:
        return False
    before = text[start - 1]
    if before.isalpha() or before in "_#@/\\":
        return True
    return before == "-" and start >= 2 and text[start - 2].isalpha()


def _read_suffix(text: str, pos: int, currency: str | None) -> tuple[float, str, int]:
    """Scale and unit after a number: returns (scale, unit, end)."""
    scale = 1.0
    unit = _UNIT_RE.match(text, pos) if currency is None else None
    if unit:
        canonical, attached = _canonical_unit(unit), not unit.group("sp")
        if canonical == "m" and attached and _plural_word_follows(text, unit.end()):
            scale, pos = 1e6, unit.end()  # "3m users", "12.6m pounds sterling"
        elif canonical not in _ATTACHED_ONLY_UNITS or attached:
            return (1.0, *_per_unit(text, canonical, unit.end()))
    if scale == 1.0:
        scale, pos = _read_scale(text, pos, currency)

    suffix = _CURRENCY_SUFFIX_RE.match(text, pos)
    if suffix:
        return scale, _suffix_currency(suffix), suffix.end()
    if currency is None and scale != 1.0:
        unit = _UNIT_RE.match(text, pos)  # "2.1 million cubic meters"
        if unit and _canonical_unit(unit) not in _ATTACHED_ONLY_UNITS:
            return scale, _canonical_unit(unit), unit.end()
    return scale, "", pos


# "7.8 t per hectare" is a yield in t/ha, "90 km per hour" a speed in km/h.
_PER_UNIT_RE = re.compile(r"\s*(?:/|\s(?:per|an|a)\s)\s*(?P<per>hectares?|ha|acres?|hours?|h)\b", re.IGNORECASE)
_PER_UNITS = {"hectare": "ha", "hectares": "ha", "ha": "ha", "acre": "acre", "acres": "acre", "hour": "h", "hours": "h"}
_PER_UNITS["h"] = "h"


def _per_unit(text: str, unit: str, end: int) -> tuple[str, int]:
    per = _PER_UNIT_RE.match(text, end) if unit not in _TIME_SECONDS else None
    if per is None:
        return unit, end
    return f"{unit}/{_PER_UNITS[per.group('per').lower()]}", per.end()


def _suffix_currency(suffix: re.Match[str]) -> str:
    if suffix.group("sym"):
        return _PREFIX_SYMBOLS[suffix.group("sym")]
    if suffix.group("code"):
        return suffix.group("code")
    return _CURRENCY_WORDS[suffix.group("word").lower()]


def _read_scale(text: str, pos: int, currency: str | None) -> tuple[float, int]:
    word = _SCALE_WORD_RE.match(text, pos)
    if word:
        return _SCALE_WORDS[word.group("w")], word.end()
    letters = _SCALE_LETTER_RE.match(text, pos)
    if letters:
        spaced, letter = bool(letters.group(1)), letters.group(2)
        if currency and letter in _MONEY_SCALE_LETTERS:
            return _MONEY_SCALE_LETTERS[letter], letters.end()
        if letter in _SCALE_LETTERS and (not spaced or currency):
            return _SCALE_LETTERS[letter], letters.end()
    return 1.0, pos


def _canonical_unit(match: re.Match[str]) -> str:
    if match.group("sym"):
        return _UNIT_SYMBOLS[match.group("sym")]
    return _UNIT_WORDS[re.sub(r"\s+", " ", match.group("word").lower())]


def _plural_word_follows(text: str, pos: int) -> bool:
    word = re.match(r"\s+([a-z]+)", text[pos:])
    return bool(word and len(word.group(1)) > 3 and word.group(1).endswith("s"))


def _word_before(text: str, start: int) -> str | None:
    match = re.search(r"([^\W\d_][\w'-]*)\s+$", text[max(0, start - 40) : start])
    return match.group(1).lower() if match else None


def _word_after(text: str, end: int) -> str | None:
    match = re.match(r"\s+([^\W\d_][\w'-]*)", text[end : end + 40])
    return match.group(1) if match else None


def _is_year(text: str, literal: str, start: int, end: int) -> bool:
    """A bare 19xx/20xx is a year unless the words around it make it a count ("shipped 2024 orders")."""
    if not (len(literal) == 4 and literal.isdigit() and 1900 <= int(literal) <= 2099):
        return False
    before, after = _word_before(text, start), _word_after(text, end)
    if before in _YEAR_BEFORE:
        return True
    counted = after is not None and after.islower() and after not in _YEAR_AFTER
    if before is None or before in _YEAR_WEAK_BEFORE:
        return not counted
    return after is None or after in _YEAR_AFTER


_RANGE_GAP_RE = re.compile(r"\s*(-|–|—|to|and|bis|und)\s*")


def _pair_ranges(text: str, found: list[_Found]) -> list[_Found]:
    """Mark ranges and let one end lend its unit and scale to the other ("10-12 days", "$180-195M")."""
    result = list(found)
    for i in range(len(result) - 1):
        low, high = result[i], result[i + 1]
        gap = _RANGE_GAP_RE.fullmatch(text, low.end, high.start)
        if gap is None:
            continue
        joiner, before = gap.group(1), _word_before(text, low.start)
        if joiner in ("and", "und") and before not in ("between", "zwischen"):
            continue
        dash = joiner in ("-", "–", "—")
        # "rose 5% to 340 stores" is not a range: with "to", only the lower end may borrow.
        if not dash and low.unit and low.unit != high.unit:
            continue
        if dash and low.unit and high.unit and low.unit != high.unit:
            continue
        low, high = _share_scale_and_unit(low, high, forward=dash)
        if before in ("from", "von") or low.value > high.value:
            result[i], result[i + 1] = low, high  # a change from one value to another, not a range
            continue
        result[i], result[i + 1] = replace(low, range_role="low"), replace(high, range_role="high")
    return result


# "takes 3 days instead of 5", "median 46 minutes (target 60)": the bare number is in the same unit.
_COMPARED_GAP_RE = re.compile(
    r"[\s,(]*(?:instead of|rather than|versus|vs\.?|compared (?:with|to)|against|target|goal|plan|budget)[\s:]*",
    re.IGNORECASE,
)


def _borrow_compared_units(text: str, found: list[_Found]) -> list[_Found]:
    result = list(found)
    for i in range(1, len(result)):
        before, bare = result[i - 1], result[i]
        if bare.unit or bare.scale != 1.0 or not before.unit or is_currency(before.unit):
            continue
        if _COMPARED_GAP_RE.fullmatch(text, before.end, bare.start):
            result[i] = replace(bare, unit=before.unit)
    return result


# "Store P&L (EUR thousands): sales 1,840, cost of sales (1,120)": bare amounts after such a heading are
# money in that scale, up to the end of the sentence; "(1,120)" is then an accounting negative.
_CURRENCY_HEADING_RE = re.compile(
    rf"\(\s*(?:in\s+)?(?:(?P<code>{_alternation(_CODES)})|(?P<sym>{_alternation(set(_PREFIX_SYMBOLS))}))"
    r"\s*(?P<scale>thousands|'000|k|millions|mn|m|M|billions|bn)?\s*\)"
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|\n\s*\n")
_HEADING_SCALES = {"thousands": 1e3, "'000": 1e3, "k": 1e3, "millions": 1e6, "mn": 1e6, "m": 1e6, "M": 1e6}
_HEADING_SCALES |= {"billions": 1e9, "bn": 1e9}


def _apply_currency_headings(text: str, found: list[_Found]) -> list[_Found]:
    result = list(found)
    for heading in _CURRENCY_HEADING_RE.finditer(text):
        currency = heading.group("code") or _PREFIX_SYMBOLS[heading.group("sym")]
        scale = _HEADING_SCALES.get(heading.group("scale") or "", 1.0)
        stop = _SENTENCE_END_RE.search(text, heading.end())
        scope_end = stop.start() if stop else len(text)
        for i, f in enumerate(result):
            # A bare amount: no unit or scale of its own, and no noun after it ("12 stores" is a count).
            if not heading.end() <= f.start < scope_end or f.unit or f.scale != 1.0 or _word_after(text, f.end):
                continue
            sign, start, end = 1.0, f.start, f.end
            if text[start - 1 : start] == "(" and text[end : end + 1] == ")":
                sign, start, end = -1.0, start - 1, end + 1
            result[i] = replace(f, mantissa=sign * abs(f.mantissa), scale=scale, unit=currency, start=start, end=end)
    return result


def _share_scale_and_unit(low: _Found, high: _Found, forward: bool) -> tuple[_Found, _Found]:
    comparable = high.mantissa != 0 and 0.1 <= abs(low.mantissa / high.mantissa) <= 10
    if low.scale == 1.0 and high.scale != 1.0 and comparable:
        low = replace(low, scale=high.scale)  # "$10-12M", "between 5 and 7 million"
    elif forward and high.scale == 1.0 and low.scale != 1.0 and comparable:
        high = replace(high, scale=low.scale)  # "$10M-12"
    if not low.unit:
        low = replace(low, unit=high.unit)
    elif forward and not high.unit:
        high = replace(high, unit=low.unit)
    return low, high


# --- grounding ------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "zero": 0,
    "none": 0,
    "no": 0,
    "nil": 0,
    "null": 0,
    "keine": 0,
    "kein": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "dozen": 12,
    "half": 0.5,
    "twice": 2,
    "double": 2,
    "triple": 3,
    "eins": 1,
    "zwei": 2,
    "drei": 3,
    "vier": 4,
    "fünf": 5,
    "sechs": 6,
    "sieben": 7,
    "acht": 8,
    "neun": 9,
    "zehn": 10,
    "zwölf": 12,
    "zwanzig": 20,
    "hundert": 100,
    "tausend": 1000,
}
_NUMBER_WORD = rf"(?:{_alternation(set(_NUMBER_WORDS))})"
_NUMBER_WORD_RE = re.compile(rf"(?i)\b{_NUMBER_WORD}(?:-{_NUMBER_WORD})?\b")  # "three", "twenty-five"
_ANY_LITERAL_RE = re.compile(rf"\d+(?:(?:[.,]|{_GROUP_SEP})\d+)*")
# Formatting and unit scaling a model may apply: thousands/millions/billions either way, percent <-> fraction.
_SCALINGS = (1.0, 1e-2, 1e2, 1e3, 1e-3, 1e6, 1e-6, 1e9, 1e-9, 1e12)


def stated_values(text: str) -> list[float]:
    """The values a text states at face value, sorted: each quantity with its scale and sign ("-$3.2M" ->
    -3200000), and each number literal under both locale readings ("1,450" -> 1450 and 1.45). No further
    scaling, so "12,500" does not state 12500000. Validation uses it for rendered tables."""
    return sorted({q.value for q in find_quantities(text)}.union(literal_values(text)))


def literal_values(text: str) -> Iterator[float]:
    """Each number literal under both locale readings, lazily: the part of `stated_values` that needs no
    parsing of quantities (no scale, unit or sign), so a cheap first check."""
    for match in _ANY_LITERAL_RE.finditer(text):
        for decimal_comma in (False, True):
            value = parse_number(match.group(), decimal_comma)
            if value is not None:
                yield value


def grounding_candidates(text: str) -> list[float]:
    """Every value a faithful extraction from the text could produce, sorted.

    The stated values, each group of space-separated digits on its own ("3 125" may be 3 and 125),
    range midpoints, time quantities converted between ms/s/min/h/days/weeks, and spelled-out numbers;
    all of them with the scalings in `_SCALINGS` and both signs.
    """
    return list(_candidates(text))


def _readings(literal: str) -> set[float]:
    values = (parse_number(literal, decimal_comma) for decimal_comma in (False, True))
    return {v for v in values if v is not None}


@lru_cache(maxsize=256)
def _candidates(text: str) -> tuple[float, ...]:
    bases = {abs(v) for v in stated_values(text)}
    for match in _ANY_LITERAL_RE.finditer(text):
        for part in _GROUP_SEP_RE.split(match.group()):
            bases.update(_readings(part))
    quantities = find_quantities(text)
    for quantity in quantities:
        seconds = _TIME_SECONDS.get(quantity.unit)
        if seconds is not None:
            bases.update(abs(quantity.value) * seconds / other for other in _TIME_SECONDS.values())
    for low, high in itertools.pairwise(quantities):
        if low.range_role == "low" and high.range_role == "high":
            bases.add(abs(low.value + high.value) / 2)
    for match in _NUMBER_WORD_RE.finditer(text):
        parts = [_NUMBER_WORDS[w.lower()] for w in match.group().split("-")]
        bases.add(float(sum(parts)))
        bases.update(float(p) for p in parts)
    scaled = {_clean(base * factor) for base in bases for factor in _SCALINGS}
    return tuple(sorted(scaled | {-v for v in scaled}))


def is_grounded(value: float, text: str, rel_tol: float = 0.005) -> bool:
    """Whether `value` is stated in `text`, allowing formatting, scale words and unit scaling."""
    if not math.isfinite(value):
        return False
    tolerance = abs(value) * rel_tol
    low, high = value - tolerance, value + tolerance
    # Fast path, same answer: a value the text states as a quantity (what a faithful extraction returns)
    # is a candidate itself (scaling 1.0, either sign), so the full candidate set is built only for the rest.
    if any(low <= v <= high or low <= -v <= high for v in (q.value for q in find_quantities(text))):
        return True
    candidates = _candidates(text)
    i = bisect.bisect_left(candidates, low)
    return i < len(candidates) and candidates[i] <= high
