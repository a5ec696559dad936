"""The benchmark harness's pure parts: options, statistics, ratios and the docs writer.

`python -m bench` itself starts its own stack and runs for minutes, so it is not
part of `make test`; these checks keep its wiring from rotting in between.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import build_parser, options_from
from bench.driver import Run
from bench.extraction import render_extraction
from bench.measure import ProcessUsage, percentile
from bench.options import Options
from bench.report import RunInfo, begin_marker, end_marker, render, write_docs
from bench.results import BenchResults, ScenarioResult


def options(*argv: str) -> Options:
    return options_from(build_parser().parse_args(list(argv)))


def test_defaults_measure_every_scenario_over_2000_reports() -> None:
    o = options()
    assert o.reports >= 2000
    assert o.scenarios == (
        "kafka-floor", "engine-floor", "offline", "openai", "low-load", "extraction", "budget", "scaling"
    )  # fmt: skip
    assert o.llm_passes == [(0.2, (100, 500)), (1.0, (100, 500))]
    assert o.docs is not None and o.docs.name == "benchmarks.md"
    assert not o.soak


def test_quick_is_small_and_does_not_write_docs_but_flags_win() -> None:
    o = options("--quick", "--reports", "40", "--scenarios", "offline,low-load", "--soak")
    assert (o.reports, o.scenarios, o.soak, o.docs) == (40, ("offline", "low-load", "soak"), True, None)
    assert options("--scenarios", "soak").soak
    assert options("--no-docs").docs is None


def test_the_second_llm_pass_can_be_changed_or_skipped() -> None:
    assert options("--slow-llm-latency", "2", "--slow-levels", "50").llm_passes[1] == (2.0, (50,))
    assert options("--slow-llm-latency", "0").llm_passes == [(0.2, (100, 500))]


def test_unknown_scenario_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        options("--scenarios", "offline,nope")
    assert exc.value.code == 2


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0


def _result(
    key: str, throughput_reports: int, span_ms: int, in_flight: int = 256, latency: float | None = None
) -> ScenarioResult:
    run = Run(key)
    for i in range(throughput_reports):
        run.input_ts[f"r{i}"] = 0
        run.output_ts[f"r{i}"] = span_ms
    usage = {"service": ProcessUsage(peak_rss_mb=80.0, cpu_s=2.0), "restate": ProcessUsage(200.0, 3.0)}
    result = ScenarioResult.of(key, key, in_flight, [run], [usage])
    return result if latency is None else result.with_ideal(in_flight / (3 * latency), latency)


def test_ratios_and_targets_come_from_the_same_run() -> None:
    results = BenchResults()
    results.scenarios["kafka-floor"] = _result("kafka-floor", 1000, 1000)  # 1,000/s
    results.scenarios["engine-floor"] = _result("engine-floor", 100, 1000)  # 100/s
    results.scenarios["offline"] = _result("offline", 90, 1000)  # 90/s
    for key, reports, in_flight, latency in [
        ("openai@100/0.2s", 160, 100, 0.2),  # ideal 166.7/s
        ("openai@500/0.2s", 80, 500, 0.2),
        ("openai@100/1s", 31, 100, 1.0),  # ideal 33.3/s
        ("engine-floor@100/1s", 32, 100, 1.0),
        ("openai@500/1s", 60, 500, 1.0),
    ]:
        results.scenarios[key] = _result(key, reports, 1000, in_flight, latency)
    ratios = {r.name: r for r in results.ratios()}
    assert ratios["(3)/(2) worker offline / engine floor"].value == pytest.approx(0.9)
    assert ratios["(3)/(2) worker offline / engine floor"].met is True
    assert ratios["(3)/(1) worker offline / Kafka floor"].value == pytest.approx(0.09)
    assert ratios["(4)/ideal at 100 in flight, 0.2 s per call"].value == pytest.approx(0.96)
    assert ratios["(4)/ideal at 100 in flight, 0.2 s per call"].met is True
    assert ratios["(4) at 500 / at 100 in flight, 0.2 s per call"].met is False  # throughput halved: a collapse
    assert ratios["(4)/ideal at 100 in flight, 1 s per call"].value == pytest.approx(0.93)
    assert ratios["(4)/ideal at 100 in flight, 1 s per call"].met is True
    assert ratios["(4) at 500 / at 100 in flight, 1 s per call"].value == pytest.approx(60 / 31)
    assert ratios["(2) engine floor, steps sleeping 1 s / ideal at 100 in flight"].value == pytest.approx(0.96)
    assert ratios["(4)/(2) worker / engine floor at 100 in flight, 1 s per call"].value == pytest.approx(31 / 32)
    assert "(4)/(2) worker / engine floor at 100 in flight, 0.2 s per call" not in ratios  # no floor at 0.2 s
    assert results.ok
    assert results.scenarios["offline"].cpu_per_1k("service") == pytest.approx(2000 / 90)
    # 5 CPU seconds over 160 reports: 2 cores allow 64 reports/s.
    assert results.scenarios["openai@100/0.2s"].cpu_ceiling(2) == pytest.approx(64.0)


def test_rounds_add_up_and_show_their_spread() -> None:
    rounds = []
    for i, span_ms in enumerate((1000, 2000)):
        run = Run(f"r{i}")
        for n in range(100):
            run.input_ts[f"{i}-{n}"] = 10_000 * i
            run.output_ts[f"{i}-{n}"] = 10_000 * i + span_ms
        rounds.append(run)
    usage = [{"service": ProcessUsage(80.0, 1.0)}, {"service": ProcessUsage(90.0, 2.0)}]
    result = ScenarioResult.of("offline", "offline", 256, rounds, usage)
    # 200 reports over 3 s of measuring, not over the 12 s between the first and the last record.
    assert result.throughput == pytest.approx(200 / 3)
    assert result.round_throughputs == pytest.approx((100.0, 50.0))
    assert (result.peak_rss_mb("service"), result.cpu_per_1k("service")) == (90.0, pytest.approx(15.0))


def test_lost_reports_fail_the_run() -> None:
    run = Run("offline")
    run.lost = 3
    results = BenchResults(scenarios={"offline": ScenarioResult.of("offline", "offline", 1, [run], [{}])})
    assert not results.ok


def test_docs_writer_replaces_only_its_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"# Benchmarks\n\nHand-written method.\n\n{begin_marker('results')}\nold numbers\n{end_marker('results')}\n\n"
        f"## Analysis\n\nHand-written analysis.\n\n{begin_marker('soak')}\nold soak\n{end_marker('soak')}\n"
    )
    info = RunInfo("python -m bench", "today", 60.0, "0.1 0.1 0.1", "0.2 0.2 0.2", {"CPU": "test"}, cores=2)
    results = BenchResults(
        scenarios={
            "offline": _result("offline", 50, 1000),
            "openai@100/0.2s": _result("openai@100/0.2s", 50, 1000, 100, 0.2),
        }
    )
    write_docs(doc, {"results": render(info, results)})
    text = doc.read_text()
    assert "old numbers" not in text and "| offline | 256 | 50 | 50.0 |" in text
    assert "| openai: 0.2 s, 100 | 166.7 | 50.0 | 30% | - | 100.0 | 20 |" in text  # 5 CPU s over 50 reports, 2 cores
    assert "Hand-written method." in text and "Hand-written analysis." in text and "old soak" in text
    write_docs(doc, {"results": "new"})
    assert doc.read_text().count(begin_marker("results")) == 1


def test_extraction_block_scores_each_part_of_the_corpus_without_a_stack() -> None:
    block = render_extraction()
    rows = [line.split("|")[1].strip() for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["corpus", "original", "new", "held-out", "all"]
    assert "names right" in block and "value F1" in block
    assert options("--scenarios", "extraction").scenarios == ("extraction",)
