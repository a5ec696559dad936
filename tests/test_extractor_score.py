"""Score the offline extractor on a labelled corpus: value precision, recall and F1.

A predicted metric matches an expected one when their values agree within 0.5% (relative); each
expected metric matches at most one prediction. Names are not scored (they are judgement), units
are not required. Counts are summed over all reports (micro-averaged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.models import Metric
from worker.providers.offline import extract_metrics

CORPUS = Path(__file__).parent / "data" / "labelled_reports.jsonl"
REL_TOL = 0.005


@dataclass(frozen=True)
class Score:
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


def values_match(predicted: float, expected: float) -> bool:
    return abs(predicted - expected) <= REL_TOL * max(abs(predicted), abs(expected))


def score_report(predicted: list[Metric], expected: list[float]) -> Score:
    unmatched = list(expected)
    hits = 0
    for metric in predicted:
        match = next((i for i, value in enumerate(unmatched) if values_match(metric.value, value)), None)
        if match is not None:
            unmatched.pop(match)
            hits += 1
    return Score(hits, len(predicted) - hits, len(unmatched))


@dataclass(frozen=True)
class Labelled:
    id: str
    message: str
    expected: list[Metric]


def load_corpus() -> list[Labelled]:
    reports = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            expected = [Metric.model_validate(item) for item in record["expected"]]
            reports.append(Labelled(id=record["id"], message=record["message"], expected=expected))
    return reports


# --- the scorer itself must be right before its number means anything ---------------------------


def test_scorer_counts_matches_misses_and_inventions() -> None:
    predicted = [Metric(name="x", value=12_500_000), Metric(name="y", value=22), Metric(name="z", value=7)]
    assert score_report(predicted, [12_480_000.0, 22.0, 340.0]) == Score(2, 1, 1)
    assert score_report([], [1.0]) == Score(0, 0, 1)
    assert score_report([Metric(name="x", value=1)], []) == Score(0, 1, 0)


def test_scorer_matches_each_expected_value_once() -> None:
    predicted = [Metric(name="a", value=5), Metric(name="b", value=5)]
    assert score_report(predicted, [5.0]) == Score(1, 1, 0)


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


def test_offline_extractor_value_f1() -> None:
    total = Score(0, 0, 0)
    misses: list[str] = []
    for report in load_corpus():
        predicted = extract_metrics(report.message)
        expected = [m.value for m in report.expected]
        score = score_report(predicted, expected)
        total += score
        if score.false_positives or score.false_negatives:
            misses.append(f"{report.id}: predicted {[m.value for m in predicted]}, expected {expected}")
    print(
        f"extractor value F1={total.f1:.3f} P={total.precision:.3f} R={total.recall:.3f} "
        f"(tp={total.true_positives} fp={total.false_positives} fn={total.false_negatives})"
    )
    for miss in misses:
        print("  miss", miss)
    assert total.f1 >= 0.9, misses
