"""`python -m bench.llm_quality` (part of `make bench`): how well a real local model runs the chain.

Every report of the labelled corpus (evaluation/) goes through a fresh local stack with
`LLM_PROVIDER=local` (the pinned Qwen2.5-Coder-0.5B-Instruct unless LOCAL_MODEL_PATH / LOCAL_MODEL
say otherwise) and the shipped chain: EXTRACT_FALLBACK off, code fallback on for sort and format.
From the published records it reports:

- outcomes: tables, and tables whose every step the model did (what fallbacks-off would publish:
  the model's attempts are the same either way, only what happens after its last failure differs);
- extraction on the tables: value precision/recall/F1 against the labels, unit and name accuracy of
  the matched values, items dropped (a quote the rules refused), values not stated in the report,
  tables not sorted;
- the fallback rate per step (a link other than the model produced the result) and seconds per
  report (wall clock, reports in flight limited by the server's parallel slots).

Writes the `local-model` block of docs/benchmarks.md. A measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.options import DOCS
from bench.report import write_docs
from devstack.config import REPO_ROOT, StackConfig
from devstack.stack import Stack
from evaluation import LabelledReport, Score, load_corpus, score_report
from ops.kafka import consumer_config
from ops.results import ReadOptions, Result, read_results
from producer.kafka import producer_config
from producer.reports import OutgoingReport
from producer.send import send
from worker.models import DeadLetter, TableRecord
from worker.numbers import is_grounded
from worker.settings import get_settings

STEPS = ("Extract metrics", "Sort metrics", "Format as table")
BLOCK = "local-model"


@dataclass
class Tally:
    reports: int = 0
    tables: int = 0
    model_tables: int = 0
    """Tables whose every step the model did (no fallback link)."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    values: Score = field(default_factory=lambda: Score(0, 0, 0))
    matched: int = 0
    units_right: int = 0
    names_right: int = 0
    dropped: int = 0
    ungrounded: int = 0
    unsorted: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    step_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    complete: int = 0
    """Tables whose values are exactly the labelled ones."""

    def add(self, labelled: LabelledReport, record: TableRecord | DeadLetter) -> None:
        self.reports += 1
        if isinstance(record, DeadLetter):
            self.dead_letters[record.reason] += 1
            self.values += Score(0, 0, len(labelled.expected))
            return
        self.tables += 1
        self.dropped += len(record.dropped)
        metrics = record.metrics
        scored = score_report(metrics, labelled.expected)
        self.values += scored.values
        self.complete += not scored.values.false_positives and not scored.values.false_negatives
        self.matched += len(scored.matched)
        self.units_right += scored.units_right
        self.names_right += scored.names_right
        self.ungrounded += sum(not is_grounded(m.value, labelled.message) for m in metrics)
        values = [m.value for m in metrics]
        self.unsorted += values != sorted(values, reverse=True)
        by_model = True
        for fact in record.ledger.steps:
            self.step_seconds[fact.step] += fact.latency_ms / 1000
            if fact.link != "primary":
                self.fallbacks[fact.step] += 1
                by_model = False
        self.model_tables += by_model


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"


def render(t: Tally, wall: float, command: str, conditions: str, model: str) -> str:
    v = t.values
    fallback_rows = "\n".join(
        f"| {step} | {t.fallbacks[step]} of {t.tables} tables ({_pct(t.fallbacks[step], t.tables)}) "
        f"| {t.step_seconds[step] / max(t.tables, 1):.1f} s |"
        for step in STEPS
    )
    dead = ", ".join(f"{n} {reason}" for reason, n in t.dead_letters.most_common()) or "none"
    parallel = get_settings().local_llm_parallel
    outcomes = [
        ("tables", f"{t.tables} of {t.reports} ({_pct(t.tables, t.reports)})"),
        (
            "tables with every step done by the model (what fallbacks off would publish)",
            f"{t.model_tables} of {t.reports} ({_pct(t.model_tables, t.reports)})",
        ),
        ("tables with exactly the labelled values", f"{t.complete} of {t.reports} ({_pct(t.complete, t.reports)})"),
        ("dead letters", f"{sum(t.dead_letters.values())} ({dead})"),
    ]
    extraction = [
        (
            "value F1 / precision / recall",
            f"{v.f1:.3f} / {v.precision:.3f} / {v.recall:.3f} (tp {v.true_positives}, fp {v.false_positives}, "
            f"fn {v.false_negatives}; a dead letter's labels count as missed)",
        ),
        ("unit accuracy (of matched values)", f"{_pct(t.units_right, t.matched)} ({t.units_right} of {t.matched})"),
        (
            "name accuracy (of matched values, by shared content words)",
            f"{_pct(t.names_right, t.matched)} ({t.names_right} of {t.matched})",
        ),
        ("items dropped (a quote the rules refused)", str(t.dropped)),
        ("values not stated in the report", str(t.ungrounded)),
        ("tables not sorted by value", str(t.unsorted)),
    ]
    return "\n".join(
        [
            f"Measured by `{command}` on {time.strftime('%Y-%m-%d')}: {t.reports} labelled reports, model",
            f"`{model}` on llama.cpp (xllamacpp), EXTRACT_FALLBACK off, code fallback on for sort and format.",
            conditions,
            "",
            "| outcome | reports |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in outcomes),
            "",
            "| extraction (every published metric was extracted by the model) | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in extraction),
            "",
            "| step | fallback to the next link | step time per table (incl. waiting for a server slot) |",
            "|---|---|---|",
            fallback_rows,
            "",
            f"Seconds per finished report: {wall / max(t.reports, 1):.1f} s of wall clock ({wall / 60:.1f} min for "
            f"{t.reports} reports, the server decoding {parallel} requests at a time).",
        ]
    )


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.llm_quality",
        description="The real local model over the labelled corpus, through a fresh local stack: outcomes, "
        "value F1, unit and name accuracy, fallbacks per step, seconds per report.",
    )
    parser.add_argument("--reports", type=int, metavar="N", help="only the first N reports of the corpus")
    parser.add_argument("--port-offset", type=int, default=10350, help="shift of every stack port (default 10350)")
    parser.add_argument(
        "--timeout", type=float, default=3 * 3600, metavar="S",
        help="stop waiting after S seconds and report the reports that finished (default 3 h)",
    )  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help=f"do not write {DOCS.name}")
    parser.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    command = "python -m bench.llm_quality " + shlex.join(sys.argv[1:] if argv is None else list(argv))

    corpus = load_corpus()[: args.reports]
    cfg = replace(StackConfig.for_tests(args.port_offset), run_dir=REPO_ROOT / ".run" / f"bench-llm-{args.port_offset}")
    stack = Stack(cfg, log=lambda line: print(f"stack: {line}", flush=True))
    # Shipped defaults, except that no provider setting may come from the caller's environment.
    stack.worker.extra_env = {"LLM_PROVIDER": "local", "OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "LLM_MODEL": ""}
    stack.down()
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    load_before = _load()
    try:
        stack.up()
        run = f"q{int(time.time())}"
        by_id = {f"{run}-{r.id}": r for r in corpus}
        outgoing = [OutgoingReport(id=i, message=r.message) for i, r in by_id.items()]
        kafka = {"bootstrap.servers": cfg.kafka_bootstrap}
        started = time.monotonic()
        sent = send(outgoing, producer_config(base=kafka), progress=False)
        if not sent.ok:
            print(f"could not send the reports: {sent.describe()}", file=sys.stderr)
            return 1
        tally = Tally()
        model = "?"

        def on_result(result: Result) -> None:
            nonlocal model
            record = result.record
            tally.add(by_id[result.report_id], record)
            if isinstance(record, TableRecord):
                model = next((f.model for f in record.ledger.steps if f.provider == "local" and f.model), model)
            outcome = "table" if isinstance(record, TableRecord) else record.reason
            elapsed = time.monotonic() - started
            print(f"[{tally.reports}/{len(by_id)} in {elapsed:.0f} s] {result.report_id}: {outcome}", flush=True)

        summary = read_results(
            consumer_config(base=kafka), ReadOptions(ids=frozenset(by_id), timeout=args.timeout), on_result=on_result
        )
        wall = time.monotonic() - started
        conditions = (
            f"Machine: {os.cpu_count()} cores shared with other work (load average {load_before} before the run, "
            f"{_load()} after: 1/5/15 min); {summary.results} of {len(by_id)} reports finished"
            + (f" within the {args.timeout:.0f} s limit (only those are counted)." if summary.missing else ".")
        )
        block = render(tally, wall, command.strip(), conditions, model)
        print(block)
        if not args.no_docs:
            write_docs(DOCS, {BLOCK: block})
            print(f"written to {DOCS}")
        return 0 if not summary.missing else 1
    finally:
        if not args.keep_stack:
            stack.down()


if __name__ == "__main__":
    sys.exit(main())
