"""The labelled corpus: reports with the metrics a careful reader would list for each.

One JSON object per line: `id`, `message` (the report text), `expected` (`[{name, value, unit}]`,
as the worker's `Metric`), and `split`, which says how far a score on the report can be trusted:
`original` (the first corpus, which the offline extractor was developed against), `new` (written
later, before the extractor was tuned on them) and `held-out` (never used to tune anything: the
honest estimate).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.models import Metric

CORPUS_PATH = Path(__file__).with_name("corpus.jsonl")

Split = Literal["original", "new", "held-out"]


class LabelledReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    message: str = Field(min_length=1)
    expected: list[Metric]
    split: Split


def load_corpus(path: Path = CORPUS_PATH, splits: Iterable[Split] | None = None) -> list[LabelledReport]:
    """The labelled reports in file order, optionally only those of the given splits."""
    wanted = set(splits) if splits is not None else None
    reports = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            report = LabelledReport.model_validate_json(line)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from error
        if wanted is None or report.split in wanted:
            reports.append(report)
    return reports
