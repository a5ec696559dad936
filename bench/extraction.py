"""Extraction quality: the offline provider scored on the labelled corpus (evaluation/). Needs no stack.

One row per part of the corpus, because they are not equally honest: `original` is what the offline
extractor was developed on, `new` was written before tuning on it (then tuned on), `held-out` was
never tuned on. The held-out row is the estimate for reports nobody has seen.
"""

from __future__ import annotations

from evaluation import load_corpus, score_corpus
from evaluation.corpus import Split
from worker.providers.offline import extract_metrics

SPLITS: tuple[Split, ...] = ("original", "new", "held-out")


def render_extraction() -> str:
    header = ["corpus", "reports", "labelled metrics", "value P", "value R", "value F1", "units right", "names right"]
    rows = []
    for label, splits in [*((split, (split,)) for split in SPLITS), ("all", SPLITS)]:
        score = score_corpus(extract_metrics, load_corpus(splits=splits))
        v = score.values
        rows.append(
            [
                label,
                str(len(score.reports)),
                str(v.true_positives + v.false_negatives),
                f"{v.precision:.3f}",
                f"{v.recall:.3f}",
                f"{v.f1:.3f}",
                f"{score.unit_accuracy:.1%}",
                f"{score.name_accuracy:.1%} of {score.matched}",
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(
        [
            "### Extraction quality (offline provider, labelled corpus in `evaluation/`)",
            "",
            *lines,
        ]
    )
