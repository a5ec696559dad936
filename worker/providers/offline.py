"""A deterministic provider that needs no network: plain code where an LLM would use judgement.

`extract` reads the quantities worker/numbers.py finds, drops the ones that qualify rather than
measure ("top 10", "per 1,000", "last 30 days", "Ward 4", "7-day average"), and names each metric
from the words around it: the words before a value with a unit ("revenue was $12.5M" -> "Revenue"),
the noun after a plain count ("3 incidents" -> "Incidents"). Range ends are named "<name> (low)" and
"<name> (high)"; the earlier value of "from X to Y" is "<name> (previous)".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import ClassVar

from worker.models import LLMUsage, Metric, Step
from worker.numbers import Quantity, find_quantities, format_number, is_currency
from worker.providers.base import Answer, CallInfo

_USAGE = LLMUsage(model=None)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# A clause ends at punctuation or a conjunction; a metric's name never crosses one.
_CLAUSE_BREAK_RE = re.compile(
    r"[;:!?()\[\]\n|]|[.,](?=\s|$)|\s[–—-]\s|\s(?:and|while|whereas|but|und|sowie|während)\s", re.IGNORECASE
)
_WORD_RE = re.compile(r"[^\W_][\w'’&/-]*")

# Function words: never part of a name at its edges ("the", "of", "was", "this quarter", "die", "auf").
_FUNCTION = _words("""
    a an the its their our his her my your this that these those there here we they it he she which who where when
    was were is are be been being has have had will would could should may might can do does did
    of at to in on for by with from than as into onto over under above below about around between across within
    after before during since until till through per each every versus vs compared against via worth out
    and or but while whereas plus also then now still again already only just some approximately roughly nearly
    almost approx est estimated more less fewer least most up down
    last next past previous first today yesterday week weeks month months quarter quarters year years
    der die das den dem des ein eine einen einem einer es gab im in auf um bei von mit über unter rund etwa ca
    knapp fast nur gegenüber zu insgesamt und oder sowie während nach seit pro je davon wurden wurde werden
    le la les et un une des du est était atteint
    """)
# Reporting verbs between a name and its value ("margin reached", "inference takes", "fund manages").
_VERBS = _words("""
    reached reaching totaled totalled totaling totalling stood stands came comes come grew grow grows rose rise
    rises fell falls dropped declined increased decreased improved worsened climbed jumped slipped sank shrank
    expanded gained lost averaged averaging peaked measured scored took takes take reported recorded amounted
    amounts equals equaled equalled ended ending closed finished settled sat sits remained remains stayed stays
    held holds lasted saw sees exceeded topped crossed passed surpassed reaching rising falling hitting landed
    manages manage managed handles handled made make makes spent spend spends sold sells booked expect
    expects expected generated generates produced produces processed served found finds eased raised returned
    charged collected paid earned posted logged completed achieved registered counted employed hired attracted
    received sent resolved answered picked admitted shipped delivered cutting bringing taking pushing lifting
    lowering raising driving making leaving keeping adding reducing
    war waren ist sind lag lagen liegt stieg stiegen steigt sank sanken sinkt fiel fielen betrug betragen beträgt
    erreichte erreichten wuchs
    """)
# Verbs that are also nouns inside names ("p99 latency hit 1.8 s" but "cache hit rate", "cost per click").
_NOUN_VERBS = frozenset(
    {"hit", "hits", "cost", "costs", "total", "totals", "peak", "peaks", "spend", "record", "handle"}
)
_TRAILING = _FUNCTION | _VERBS | _NOUN_VERBS
_NAME_STOP = _FUNCTION | _VERBS
_PREPOSITIONS = frozenset({"of", "on", "in", "for", "im", "für"})
# "2.75 million euros on road maintenance", "38 GB of VRAM"; not "in June".
_TOPIC_PREPOSITIONS = frozenset({"of", "on", "for", "für"})
_TIME_NOUNS = frozenset({"quarter", "quartal", "month", "monat", "year", "jahr", "week", "woche", "period", "weekend"})
# Between two words of one name: "mean time to recovery", "number of tickets", "cost per click".
_JOINERS = frozenset({"of", "to", "per", "for", "de", "du", "d'"})
_GROWTH = frozenset({"grew", "rose", "increased", "up", "climbed", "jumped", "gained", "improved", "expanded"})
_DECLINE = frozenset({"fell", "dropped", "declined", "decreased", "down", "slipped", "sank", "shrank", "lost"})
_COMPARATORS = frozenset({"versus", "vs", "compared", "against", "from", "than", "gegenüber", "von"})
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
_TIME_UNITS = frozenset({"ms", "µs", "ns", "s", "min", "h", "days", "weeks", "months", "years"})


def extract_metrics(text: str) -> list[Metric]:
    """The metrics a report states, in order of appearance."""
    quantities = [q for q in find_quantities(text) if _is_metric(text, q)]
    contexts = [_Context.around(text, q, quantities[i - 1] if i else None) for i, q in enumerate(quantities)]
    for i, quantity in enumerate(quantities[:-1]):
        if quantity.range_role == "low":
            # "300–350 swaps per day": the range's noun follows its upper end.
            contexts[i] = replace(contexts[i], right=contexts[i + 1].right)
    names: list[str] = []
    for i, quantity in enumerate(quantities):
        names.append(_name(contexts[i], quantity, names, contexts[i - 1] if i else None))
    return [Metric(name=name, value=q.value, unit=q.unit) for name, q in zip(names, quantities, strict=True)]


_OUT_OF_RE = re.compile(r"\bout of\s*$", re.IGNORECASE)
_GLUED_NOUN_RE = re.compile(r"-[^\W\d_]")
_NEXT_NUMBER_RE = re.compile(r"(?<!\w)[-−$€£¥]?\d")


def _is_metric(text: str, quantity: Quantity) -> bool:
    start, end = quantity.span
    before = text[max(0, start - 30) : start]
    words = _WORD_RE.findall(before)
    previous = words[-1].lower() if words and before.rstrip().endswith(words[-1]) else None
    if previous in _QUALIFIER_BEFORE or _OUT_OF_RE.search(before):
        return False
    if quantity.unit == "" and quantity.raw.isdigit() and previous in _LABELS:
        return False
    # "a 7-day average", "24-hour window", "5-star rating": the number qualifies the noun it is glued to.
    return not _GLUED_NOUN_RE.match(text, end)


@dataclass(frozen=True)
class _Context:
    left: list[str]  # words from the clause start (or the previous quantity) up to the quantity
    right: list[str]  # words after the quantity up to the clause end (or the next quantity)
    heading: list[str]  # words before a colon that opens the sentence ("Water utility: ...")

    @classmethod
    def around(cls, text: str, quantity: Quantity, previous: Quantity | None) -> _Context:
        start, end = quantity.span
        if text[start - 1 : start] == "(" and text[end : end + 1] == ")":
            start, end = start - 1, end + 1  # an accounting negative "($1.2M)" is not a parenthesis
        clause_start = _last_break(text, start)
        left = _WORD_RE.findall(text[max(clause_start, previous.span[1] if previous else 0) : start])
        if previous is not None and previous.span[1] > clause_start:
            # "96,000 lines with 99.6% accuracy": "lines" belongs to the count before, not to this value.
            while left and left[0].lower() not in _NAME_STOP:
                left.pop(0)
        heading = _heading(text[max(0, start - 300) : start])
        return cls(
            left=left,
            right=_WORD_RE.findall(_until_next_number(text[end : _next_break(text, end)])),
            heading=_WORD_RE.findall(heading) if heading else [],
        )


def _heading(before: str) -> str | None:
    r"""The text between the last colon and the sentence stop before it ("Water utility" in "Water utility: ..."):
    what re.search(r"([^.;:!?\n]*):\s*[^:]*$", before).group(1) finds, in linear time instead of quadratic."""
    colon = before.rfind(":")
    if colon < 0:
        return None
    return before[max(before.rfind(stop, 0, colon) for stop in ".;:!?\n") + 1 : colon]


def _last_break(text: str, pos: int) -> int:
    breaks = [m.end() for m in _CLAUSE_BREAK_RE.finditer(text, max(0, pos - 200), pos)]
    return breaks[-1] if breaks else max(0, pos - 200)


def _next_break(text: str, pos: int) -> int:
    found = _CLAUSE_BREAK_RE.search(text, pos, pos + 200)
    return found.start() if found else min(len(text), pos + 200)


def _until_next_number(segment: str) -> str:
    # Stop at the next number that stands alone; digits inside words ("A100", "Q3") do not count.
    match = _NEXT_NUMBER_RE.search(segment)
    return segment[: match.start()] if match else segment


def _name(context: _Context, quantity: Quantity, earlier_names: list[str], previous: _Context | None) -> str:
    """Name a quantity from its context; may rename the previous metric (the "from" value of "from X to Y")."""
    if quantity.range_role == "high" and earlier_names and earlier_names[-1].endswith(" (low)"):
        return earlier_names[-1].removesuffix(" (low)") + " (high)"
    name_words, rest = _left_name(context.left)
    linking = [w.lower() for w in rest]
    prev_base = _base_name(earlier_names[-1]) if earlier_names else ""
    right = _right_name(context.right)
    if quantity.unit == "" and right:
        name = right
    elif name_words:
        name = " ".join(name_words)
        # "grew by 15%" is a change; "grew to 15%" and "sank auf 6,5 %" are levels.
        is_change = quantity.unit in ("%", "pp") and bool(linking) and linking[-1] not in ("to", "auf", "at")
        if is_change and set(linking) & _GROWTH:
            name += " growth"
        elif is_change and set(linking) & _DECLINE:
            name += " decline"
    elif prev_base and linking and linking[-1] in ("to", "auf"):
        if previous is not None and previous.left and previous.left[-1].lower() in ("from", "von"):
            earlier_names[-1] = prev_base + " (previous)"  # "rose from $10M to $12.5M": this is the current value
        name = prev_base  # "MRR grew 6.2% to $1.34M"
    elif prev_base and set(linking) & _COMPARATORS:
        detail = "previous" if linking[-1] in ("from", "von") else " ".join(context.right[:3]) or "comparison"
        name = f"{prev_base} ({detail})"
    elif prev_base and set(linking) & (_GROWTH | _DECLINE):
        name = prev_base + (" growth" if set(linking) & _GROWTH else " decline")
    else:
        fallback = _right_name(context.right, after_preposition=True) or " ".join(_left_name(context.heading)[0])
        name = fallback or _generic_name(quantity.unit)
    if quantity.range_role == "low":
        name += " (low)"
    return _capitalize(name)


def _base_name(name: str) -> str:
    """ "Revenue growth (low)" -> "Revenue": the thing a previous metric measured."""
    return name.split(" (")[0].removesuffix(" growth").removesuffix(" decline")


def _left_name(words: list[str]) -> tuple[list[str], list[str]]:
    """Split the words before a value into (name, the words after it): "the average gift was" -> (average gift, was)."""
    end = len(words)
    while end and (words[end - 1].lower() in _TRAILING or words[end - 1].isdigit()):
        end -= 1
    name: list[str] = []
    i = end
    while i and len(name) < 6:
        word, lower = words[i - 1], words[i - 1].lower()
        if lower in _JOINERS and name and i >= 2 and words[i - 2].lower() not in _NAME_STOP:
            name.insert(0, word)  # "mean time to recovery"
        elif lower in _NAME_STOP or word.isdigit():
            break
        else:
            name.insert(0, word)
        i -= 1
    if name and name[-1].lower() in _TIME_NOUNS and i and words[i - 1].lower() in _PREPOSITIONS:
        # "Umsatz im dritten Quartal betrug": the name is before the time phrase.
        outer, _ = _left_name(words[: i - 1])
        if outer:
            name = outer
    while name and name[0].lower() in _JOINERS:
        name.pop(0)
    return name, words[end:]


def _right_name(words: list[str], after_preposition: bool = False) -> str:
    """The noun phrase after a count: "1,450 qualified leads" -> "qualified leads" ("of VRAM" -> "VRAM" if asked)."""
    if after_preposition and words and words[0].lower() in _TOPIC_PREPOSITIONS:
        words = words[1:]
    name: list[str] = []
    for word in words[:4]:
        lower = word.lower()
        if lower in _FUNCTION or word.isdigit() or (lower.endswith("ing") and len(lower) > 5):
            break
        name.append(word)
    return " ".join(name)


def _generic_name(unit: str) -> str:
    if is_currency(unit):
        return "Amount"
    if unit in ("%", "pp"):
        return "Share"
    if unit in _TIME_UNITS:
        return "Duration"
    return "Count" if unit == "" else "Value"


def _capitalize(name: str) -> str:
    # "uptime" -> "Uptime", "on-time rate" -> "On-time rate"; "p95 API latency" and "iOS installs" keep their spelling.
    first = name.split(" ", 1)[0]
    return name[0].upper() + name[1:] if first == first.lower() and not any(c.isdigit() for c in first) else name


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


class OfflineProvider:
    """The `Provider` protocol in plain code: deterministic, free, no network."""

    calls: ClassVar[Counter[Step]] = Counter()
    """How many times each step was asked, process-wide (tests read it)."""

    @property
    def name(self) -> str:
        return "offline"

    def model_for(self, step: Step) -> str | None:
        return None

    async def extract(self, text: str, call: CallInfo) -> Answer[list[Metric]]:
        OfflineProvider.calls[Step.EXTRACT] += 1
        return Answer(extract_metrics(text), _USAGE)

    async def sort(self, metrics: list[Metric], call: CallInfo) -> Answer[list[Metric]]:
        OfflineProvider.calls[Step.SORT] += 1
        return Answer(sort_metrics(metrics), _USAGE)

    async def format_table(self, metrics: list[Metric], call: CallInfo) -> Answer[str]:
        OfflineProvider.calls[Step.FORMAT] += 1
        return Answer(markdown_table(metrics), _USAGE)

    async def aclose(self) -> None:
        """Nothing to release: no connections."""
