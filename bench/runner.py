"""One benchmark run: start the stack, run the chosen scenarios in order, report, stop the stack."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from bench.budget import render_budget
from bench.environment import BenchEnvironment
from bench.extraction import render_extraction
from bench.machine import describe, load_average
from bench.options import (
    BUDGET,
    ENGINE_FLOOR,
    EXTRACTION,
    KAFKA_FLOOR,
    LOW_LOAD,
    OFFLINE,
    OPENAI,
    SCALING,
    SOAK,
    STACK_SCENARIOS,
    Options,
)
from bench.report import RunInfo, render, render_soak, write_docs
from bench.scaling import ScalingResults, render_scaling, run_scaling
from bench.scenarios import Bench


def log(line: str) -> None:
    print(f"[bench] {line}", file=sys.stderr, flush=True)


def _plan(bench: Bench, o: Options) -> list[tuple[str, Callable[[], None]]]:
    """The steps in run order: the compared scenarios first (interleaved), then the long ones."""
    steps: list[tuple[str, Callable[[], None]]] = []
    compared = [k for k in (KAFKA_FLOOR, ENGINE_FLOOR, OFFLINE) if o.wants(k)]
    if compared:
        steps.append(("throughput", lambda: bench.throughput(compared)))
    if o.wants(LOW_LOAD):
        steps.append((LOW_LOAD, bench.low_load))
    if compared or o.wants(LOW_LOAD):
        steps.append(("stop floors", bench.stop_floors))
    if o.soak:
        steps.append(("soak", bench.soak))
    if o.wants(OPENAI):
        steps.append((OPENAI, bench.openai))
    if o.wants(BUDGET):
        steps.append((BUDGET, bench.budget))
    return steps


def run(options: Options, command: str) -> int:
    """Returns the exit code: 0 when every scenario ran and no report was lost or dead-lettered."""
    started, started_at, load_start = time.monotonic(), time.strftime("%Y-%m-%d %H:%M %Z"), load_average()
    log(f"load average at start: {load_start}")
    env = BenchEnvironment(options.port_offset, log)
    bench = Bench(options, env, log)
    errors: list[str] = []
    needs_stack = any(options.wants(s) for s in STACK_SCENARIOS)
    try:
        if needs_stack:
            env.up()
        for name, step in _plan(bench, options):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' numbers
                errors.append(f"{name}: {exc}")
                log(f"{name} FAILED: {exc}")
    finally:
        bench.close()
        if needs_stack and options.keep_stack:
            log(f"stack left running under {env.cfg.run_dir} (stop: kill the PIDs in its *.pid files)")
        elif needs_stack:
            env.down()

    # Its stacks use the same ports as the one above, which is down by now.
    scaling: ScalingResults | None = None
    if options.wants(SCALING):
        try:
            scaling = run_scaling(options, log)
        except Exception as exc:  # noqa: BLE001 - the other scenarios' numbers still count
            errors.append(f"{SCALING}: {exc}")
            log(f"{SCALING} FAILED: {exc}")

    info = RunInfo(
        command=command,
        started=started_at,
        duration_s=time.monotonic() - started,
        load_start=load_start,
        load_end=load_average(),
        machine=describe(),
        cores=os.cpu_count() or 0,
    )
    blocks = {}
    if any(options.wants(s) for s in STACK_SCENARIOS if s not in (SOAK, BUDGET)):
        blocks["results"] = render(info, bench.results)
    if options.wants(EXTRACTION):
        blocks["extraction"] = render_extraction()
    if bench.results.soak is not None:
        blocks["soak"] = render_soak(info, bench.results.soak)
    if bench.budget_results is not None:
        blocks["budget"] = f"Run `{info.command}` started {info.started}.\n\n" + render_budget(bench.budget_results)
    if scaling is not None:
        blocks["scaling"] = f"Run `{command}` started {started_at}.\n\n" + render_scaling(scaling, options)
    print("\n\n".join(blocks.values()), flush=True)
    budget_ok = bench.budget_results is None or bench.budget_results.ok
    ok = bench.results.ok and budget_ok and not errors and (scaling is None or scaling.ok)
    for error in errors:
        print(f"bench: {error}", file=sys.stderr)
    if not bench.results.ok or not budget_ok:
        print("bench: reports were lost or dead-lettered (see the tables above)", file=sys.stderr)
    if options.docs is not None:
        if ok:
            write_docs(options.docs, blocks)
            log(f"wrote {options.docs}")
        else:
            log(f"not writing {options.docs}: the run failed")
    return 0 if ok else 1
