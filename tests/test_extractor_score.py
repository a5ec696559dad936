"""Score the offline extractor on the labelled corpus (evaluation/): values, units and names."""

from __future__ import annotations

import pytest

from evaluation import CorpusScore, LabelledReport, Score, load_corpus, names_match, score_corpus, score_report
from worker.models import Metric
from worker.providers.offline import extract_metrics

# --- the scorer itself must be right before its number means anything ---------------------------


def metric(name: str, value: float, unit: str = "") -> Metric:
    return Metric(name=name, value=value, unit=unit)


def test_scorer_counts_matches_misses_and_inventions() -> None:
    predicted = [metric("x", 12_500_000), metric("y", 22), metric("z", 7)]
    expected = [metric("x", 12_480_000), metric("y", 22), metric("w", 340)]
    assert score_report(predicted, expected).values == Score(2, 1, 1)
    assert score_report([], [metric("x", 1)]).values == Score(0, 0, 1)
    assert score_report([metric("x", 1)], []).values == Score(0, 1, 0)


def test_scorer_matches_each_expected_value_once() -> None:
    predicted = [metric("a", 5), metric("b", 5)]
    assert score_report(predicted, [metric("a", 5)]).values == Score(1, 1, 0)


def test_scorer_pairs_repeated_values_by_name() -> None:
    predicted = [metric("GPUs", 2), metric("Nodes", 2)]
    score = score_report(predicted, [metric("Nodes", 2), metric("GPUs", 2)])
    assert score.names_right == 2


def test_units_and_names_are_scored_on_value_matches() -> None:
    predicted = [metric("Revenue", 12.5, "USD"), metric("Team", 3, "USD"), metric("Extra", 99)]
    expected = [metric("Revenue", 12.5, "USD"), metric("Cloud infrastructure spend", 3, "EUR")]
    score = score_report(predicted, expected)
    assert (score.units_right, score.names_right, len(score.matched)) == (1, 1, 2)


@pytest.mark.parametrize(
    ("predicted", "expected", "right"),
    [
        ("Cloud infrastructure spend", "Cloud infrastructure spend", True),
        ("Infrastructure", "Cloud infrastructure spend", False),
        ("Cloud spend", "Cloud infrastructure spend", True),
        ("Net revenue", "Revenue", True),
        ("Failed orders", "Orders failed", True),
        ("Number of tickets", "Tickets", True),
        ("Operating", "Operating costs", False),
        ("Team", "Cloud infrastructure spend", False),
        ("Hottest day", "Peak demand", False),
        ("Revenue", "Revenue growth", False),
        ("Revenue growth", "Revenue increase", True),
        ("Surcharge (low)", "Surcharge (high)", False),
        ("Shipping time (low)", "Shipping time (low)", True),
        ("Amount", "Capex", False),
        ("Reactor sample temperature", "Temperature", True),
        ("Net promoter score", "NPS", True),
        ("Profit (a year earlier)", "Prior-year profit", True),
        ("Profit", "Prior-year profit", False),
        ("Leases expire", "Leases expiring", True),
        ("Road maintenance spend under budget", "Under budget", True),
    ],
)
def test_names_match_by_shared_content_words(predicted: str, expected: str, right: bool) -> None:
    assert names_match(predicted, expected) is right


def test_score_arithmetic() -> None:
    score = Score(8, 2, 0)
    assert score.precision == pytest.approx(0.8)
    assert score.recall == 1.0
    assert score.f1 == pytest.approx(2 * 0.8 / 1.8)
    assert Score(0, 0, 0).f1 == 1.0


# --- the corpus and the score ------------------------------------------------------------------


def test_corpus_is_well_formed() -> None:
    reports = load_corpus()  # every expected item is validated as a Metric while loading
    assert len(reports) >= 40
    assert len({r.id for r in reports}) == len(reports)
    assert all(r.message.strip() for r in reports)
    assert sum(1 for r in reports if not r.expected) >= 2  # reports without metrics are part of the test
    assert sum(r.split == "new" for r in reports) >= 30
    assert sum(r.split == "held-out" for r in reports) >= 5


def score(split: str, reports: list[LabelledReport]) -> CorpusScore:
    result = score_corpus(extract_metrics, reports)
    print(f"offline extractor, {split}: {result.summary()}")
    for line in result.mistakes():
        print("  ", line)
    return result


def test_offline_extractor_meets_the_targets_on_the_corpus() -> None:
    """Issue 16's targets on the whole corpus: names right for >= 95% of value matches, value F1 >= 0.95.

    Each split is printed too (`pytest -s`): `original` is what the extractor was developed on, `new` what
    was written before tuning on it and then tuned on, `held-out` never tuned on (the honest estimate).
    """
    for split in ("original", "new", "held-out"):
        part = score(split, load_corpus(splits=[split]))
        assert part.values.f1 >= 0.95, split
    whole = score("whole corpus", load_corpus())
    assert whole.values.f1 >= 0.95
    assert whole.unit_accuracy >= 0.95
    assert whole.name_accuracy >= 0.95
