"""`python -m bench` (`make bench`): the command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.options import DOCS, SCENARIOS, SOAK, Options
from bench.runner import run

EPILOG = f"""\
scenarios (default: all but soak):
  kafka-floor   (1) plain consume -> transform -> produce loop, no durability
  engine-floor  (2) minimal Restate service: 3 no-op journaled steps + a journaled publish
  offline       (3) the worker, offline provider
  openai        (4) the worker, OpenAI provider against the test LLM server: --levels at
                --llm-latency, then --slow-levels at --slow-llm-latency
  low-load      one report at a time: the worker vs the engine floor
  soak          the worker's RSS over --soak-reports reports (20,000: minutes more; also --soak)
  scaling       1 vs 2 worker processes (single node) and the cluster (3 brokers, 3 Restate nodes,
                2 workers) under the same OpenAI load, then a SIGKILL per kind of process on each:
                failover pause, duplicates, nothing lost (stacks of its own, after the others)
  extraction    value P/R/F1, unit and name accuracy of the offline extractor on the labelled
                corpus (evaluation/), per part of it; needs no stack, takes a second
  budget        (5) what asking an LLM budget costs per call (latency, CPU), the same load with
                and without one; (6) a backlog against a budget of 600 requests/min: most calls
                in any rolling minute at the server, 429s, rate against the budget (~6 minutes)
1-3 run first, in --rounds interleaved rounds (so background load hits them alike), then
low-load (also interleaved), soak, and the OpenAI levels one after the other.

The run starts its own stack (ports shifted by --port-offset, data in .run/bench-<offset>),
so a `make up` stack or a test session is left alone. Without --quick the results
(and, after a soak, its own section) are also written into {DOCS.relative_to(DOCS.parent.parent)}.
exit codes: 0 done; 1 a scenario failed, lost reports or dead-lettered any; 2 usage error.
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return names


def _levels(text: str) -> tuple[int, ...]:
    return tuple(_positive(n) for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency, memory and CPU of the worker against a Kafka floor and a Restate floor.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    add = parser.add_argument
    add("--reports", type=_positive, metavar="N", help=f"measured reports per scenario and level (default {d.reports})")
    add("--warmup", type=_positive, metavar="N", help=f"warm-up reports before each measurement (default {d.warmup})")
    add("--scenarios", type=_scenarios, metavar="A,B", help="comma-separated subset of the scenarios below")
    add("--quick", action="store_true", help="smoke-sized run (300 reports, short soak), docs not written")
    add("--soak", action="store_true", help="add the soak scenario (worker RSS over --soak-reports reports)")
    add("--soak-reports", type=_positive, metavar="N", help=f"reports in the soak (default {d.soak_reports:,})")
    add(
        "--levels",
        type=_levels,
        metavar="N,M",
        help="reports in flight for the OpenAI scenario's first pass (default " + ",".join(map(str, d.levels)) + ")",
    )
    add("--rounds", type=_positive, metavar="N", help=f"interleaved rounds of compared scenarios (default {d.rounds})")
    add("--in-flight", type=_positive, metavar="N", help=f"reports in flight for scenarios 1-3 (default {d.in_flight})")
    add(
        "--llm-latency",
        type=float,
        metavar="S",
        help=f"seconds per LLM call in the first pass (default {d.llm_latency:g})",
    )
    add(
        "--slow-levels",
        type=_levels,
        metavar="N,M",
        help="reports in flight for the OpenAI scenario's second pass (default "
        + ",".join(map(str, d.slow_levels))
        + ")",
    )
    add(
        "--slow-llm-latency",
        type=float,
        metavar="S",
        help=f"seconds per LLM call in the second pass, 0 to skip it (default {d.slow_llm_latency:g})",
    )
    add(
        "--low-load-reports",
        type=_positive,
        metavar="N",
        help=f"reports in low-load runs (default {d.low_load_reports})",
    )
    add("--port-offset", type=int, metavar="N", help=f"shift of every stack port (default {d.port_offset})")
    add("--docs", type=Path, metavar="PATH", help=f"write the results here (default {DOCS.name} unless --quick)")
    add("--no-docs", action="store_true", help="do not write the results file")
    add("--keep-stack", action="store_true", help="leave the bench stack running afterwards (e.g. to profile)")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    base = Options.quick() if args.quick else Options()
    given: dict[str, Any] = {
        name: value
        for name in ("reports", "warmup", "scenarios", "soak_reports", "levels", "rounds", "in_flight", "llm_latency",
                     "slow_levels", "slow_llm_latency", "low_load_reports", "port_offset", "docs")
        if (value := getattr(args, name)) is not None
    }  # fmt: skip
    if args.soak and SOAK not in given.get("scenarios", base.scenarios):
        given["scenarios"] = (*given.get("scenarios", base.scenarios), SOAK)
    if args.keep_stack:
        given["keep_stack"] = True
    if args.no_docs:
        given["docs"] = None
    return replace(base, **given)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return run(options_from(args), command.strip())
    except KeyboardInterrupt:
        return 130
