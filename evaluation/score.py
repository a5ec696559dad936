"""Score extracted metrics against labels: values (precision, recall, F1), then units and names.

Values first: a predicted metric matches a labelled one when their values agree within 0.5%
(relative); each labelled metric matches at most one prediction, preferring the one with the same
name and unit when values repeat. Counts are summed over all reports (micro-averaged).

Units and names are scored on the matched pairs only (a wrong value has no right name). A unit is
right when it equals the label's canonical unit ("USD", "%", "ms", "" for a plain count). Names are
judgement, so they are compared by their content words (lower-cased, crudely stemmed, function words
such as "of", "the", "per" ignored, an acronym equal to the initials of the other name's words spelled
out): a name is right when it has more than half of the label's content words, at least a third of its
own words are in the label, and both say the same about what kind of value it is (a change, a range
end, an earlier value, a target). So:

    "Cloud infrastructure spend"   vs label "Cloud infrastructure spend"  right
    "Net revenue"                  vs label "Revenue"                      right
    "Reactor sample temperature"   vs label "Temperature"                  right
    "Net promoter score"           vs label "NPS"                          right
    "Operating"                    vs label "Operating costs"              wrong (half of the label)
    "Team"                         vs label "Cloud infrastructure spend"   wrong
    "Revenue"                      vs label "Revenue growth"               wrong (a level is not a change)
    "Profit"                       vs label "Prior-year profit"            wrong (a level is not an earlier one)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from evaluation.corpus import LabelledReport
from worker.models import Metric

REL_TOL = 0.005


def values_match(predicted: float, expected: float) -> bool:
    return abs(predicted - expected) <= REL_TOL * max(abs(predicted), abs(expected))


# --- names ----------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FUNCTION_WORDS = _words("""
    a an the of to in on at for by per with from than and or as into its their our this that
    number total
    der die das den dem des im am pro je von und
    le la les de du d des et
    """)
# Words that say what kind of value a name is: "Revenue growth" is not "Revenue", "(low)" not "(high)".
_MARKERS: dict[str, str] = {
    "growth": "change",
    "increase": "change",
    "decline": "change",
    "decrease": "change",
    "change": "change",
    "reduction": "change",
    "anstieg": "change",
    "wachstum": "change",
    "rückgang": "change",
    "low": "low",
    "min": "low",
    "minimum": "low",
    "high": "high",
    "max": "high",
    "maximum": "high",
    "previous": "previous",
    "prior": "previous",
    "last": "previous",
    "earlier": "previous",
    "ago": "previous",
    "target": "target",
}
# "Prior-year profit", "Profit (a year ago)": the time word belongs to the marker, not to the name.
_MARKED_TIME = _words("year quarter month week period")
_WORD_RE = re.compile(r"[^\W_]+")


def _stem(word: str) -> str:
    """A crude stem that is enough to compare names: "vulnerabilities" ~ "vulnerability", "expiring" ~ "expire"."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _tokens(name: str) -> list[str]:
    return _WORD_RE.findall(name.lower())


def _read(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(kinds, content words) of a name: "Revenue growth" -> ({"change"}, {"revenue"})."""
    tokens = _tokens(name)
    kinds, content = set(), set()
    for i, token in enumerate(tokens):
        if token in _MARKERS:
            kinds.add(_MARKERS[token])
        elif token in _MARKED_TIME and (
            (i and _MARKERS.get(tokens[i - 1]) == "previous")
            or (i + 1 < len(tokens) and _MARKERS.get(tokens[i + 1]) == "previous")
        ):
            continue
        elif token not in _FUNCTION_WORDS:
            content.add(_stem(token))
    return frozenset(kinds), frozenset(content)


def content_words(name: str) -> frozenset[str]:
    """The words of a name that carry meaning, stemmed: "Number of failed orders" -> {"fail", "order"}."""
    return _read(name)[1]


def _spell_out_acronyms(name: str, other: str) -> str:
    """ "NPS" -> "net promoter score" when the other name has those words: an acronym is its words."""
    words = _tokens(other)
    content = [w for w in words if w not in _FUNCTION_WORDS]
    for token in _WORD_RE.findall(name):
        if not (2 <= len(token) <= 5 and token.isupper() and token.isalpha()):
            continue
        for run in (words, content):
            for i in range(len(run) - len(token) + 1):
                if "".join(w[0] for w in run[i : i + len(token)]) == token.lower():
                    name = name.replace(token, " ".join(run[i : i + len(token)]))
                    break
    return name


def names_match(predicted: str, expected: str) -> bool:
    """Whether a predicted metric name says what the labelled name says (see the module docstring)."""
    predicted, expected = _spell_out_acronyms(predicted, expected), _spell_out_acronyms(expected, predicted)
    (our_kinds, ours), (their_kinds, theirs) = _read(predicted), _read(expected)
    if our_kinds != their_kinds:
        return False
    if not theirs:
        return True  # the label is only a kind ("Growth"), and the prediction says the same kind
    shared = len(ours & theirs)
    return 2 * shared > len(theirs) and 3 * shared >= len(ours)


# --- counting ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Value matches: true positives, false positives (predicted, not labelled), false negatives (missed)."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )


@dataclass(frozen=True)
class ReportScore:
    """One report: the value score and the (predicted, labelled) pairs that matched by value."""

    values: Score
    matched: list[tuple[Metric, Metric]]
    missed: list[Metric] = field(default_factory=list)
    invented: list[Metric] = field(default_factory=list)

    @property
    def units_right(self) -> int:
        return sum(p.unit == e.unit for p, e in self.matched)

    @property
    def names_right(self) -> int:
        return sum(names_match(p.name, e.name) for p, e in self.matched)


def score_report(predicted: list[Metric], expected: list[Metric]) -> ReportScore:
    unmatched = list(expected)
    matched: list[tuple[Metric, Metric]] = []
    invented: list[Metric] = []
    for metric in predicted:
        candidates = [e for e in unmatched if values_match(metric.value, e.value)]
        if not candidates:
            invented.append(metric)
            continue
        best = max(candidates, key=lambda e: (names_match(metric.name, e.name), metric.unit == e.unit))
        unmatched.remove(best)
        matched.append((metric, best))
    return ReportScore(Score(len(matched), len(invented), len(unmatched)), matched, unmatched, invented)


@dataclass(frozen=True)
class CorpusScore:
    """Scores summed over reports: value P/R/F1, and unit and name accuracy over the value matches."""

    reports: list[tuple[LabelledReport, ReportScore]]

    @property
    def values(self) -> Score:
        return sum((score.values for _, score in self.reports), Score(0, 0, 0))

    @property
    def matched(self) -> int:
        return self.values.true_positives

    @property
    def unit_accuracy(self) -> float:
        return sum(s.units_right for _, s in self.reports) / self.matched if self.matched else 1.0

    @property
    def name_accuracy(self) -> float:
        return sum(s.names_right for _, s in self.reports) / self.matched if self.matched else 1.0

    def summary(self) -> str:
        v = self.values
        return (
            f"{len(self.reports)} reports: value F1={v.f1:.3f} P={v.precision:.3f} R={v.recall:.3f} "
            f"(tp={v.true_positives} fp={v.false_positives} fn={v.false_negatives}), "
            f"units {self.unit_accuracy:.1%}, names {self.name_accuracy:.1%} of {self.matched} matched"
        )

    def mistakes(self) -> list[str]:
        """One line per wrong value, unit or name, for reading what to fix."""
        lines = []
        for report, score in self.reports:
            lines += [f"{report.id}: missed {m.name!r} {m.value:g} {m.unit}" for m in score.missed]
            lines += [f"{report.id}: invented {m.name!r} {m.value:g} {m.unit}" for m in score.invented]
            for p, e in score.matched:
                if p.unit != e.unit:
                    lines.append(f"{report.id}: unit {p.unit!r} for {e.name!r} (labelled {e.unit!r})")
                if not names_match(p.name, e.name):
                    lines.append(f"{report.id}: name {p.name!r} (labelled {e.name!r})")
        return lines


def score_corpus(extract: Callable[[str], list[Metric]], reports: Iterable[LabelledReport]) -> CorpusScore:
    """Run `extract` on every report's message and score it against the labels."""
    return CorpusScore([(report, score_report(extract(report.message), report.expected)) for report in reports])
