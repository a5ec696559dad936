"""How well a provider extracts metrics: the project's labelled corpus and the score against it.

`corpus.jsonl` holds reports written and labelled by hand (`corpus.py` loads them); `score.py`
matches extracted metrics to the labels by value and scores values (precision, recall, F1), units
and names. Tests assert targets on it, the benchmark prints it, the test LLM server answers from it.
"""

from evaluation.corpus import CORPUS_PATH, LabelledReport, load_corpus
from evaluation.score import CorpusScore, ReportScore, Score, names_match, score_corpus, score_report

__all__ = [
    "CORPUS_PATH",
    "CorpusScore",
    "LabelledReport",
    "ReportScore",
    "Score",
    "load_corpus",
    "names_match",
    "score_corpus",
    "score_report",
]
