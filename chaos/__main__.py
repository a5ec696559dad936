"""`python -m chaos` (`make chaos`): the chaos soak. See `--help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pydantic import ValidationError

from chaos.run import ChaosConfig, run
from chaos.schedule import LLMFaultRates
from chaos.sender import SendError
from devstack.processes import StackError
from devstack.setup import SetupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
What it does: starts its own local stack (Kafka, restate-server, worker; ports shifted by
--stack-offset, fresh data each run), a test LLM server that fails calls by a seeded
schedule, and sends the reports (with poison records) at a steady pace while it SIGKILLs
the worker every --worker-kill-every seconds, restate-server once and the Kafka broker once,
restarting each. A few reports also crash the worker between publishing and journaling
(--publish-crashes), the one window that may duplicate a table. Then it waits for
quiescence (at most --drain-timeout) and prints the accounting.

The same --seed gives the same inputs, the same fault decision for every (report, step,
attempt) and the same kill schedule.

exit codes: 0 nothing lost, no step re-ran, no conflicting or differing outputs;
1 the accounting found a violation; 2 usage error; 3 the stack or the sending failed;
130 interrupted.
"""


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def _number(kind: Callable[[str], float], minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = ChaosConfig()
    rates = defaults.rates
    p = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Chaos soak: prove that no report is lost and no completed step runs again under combined faults.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--reports", type=int, default=defaults.reports, metavar="N", help="records to send (%(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, metavar="S", help="seed of everything (%(default)s)")
    p.add_argument(
        "--poison-rate",
        type=_rate,
        default=defaults.poison_rate,
        metavar="R",
        help="share of poison records: empty, null, invalid UTF-8, invalid schema, too large (%(default)s)",
    )
    p.add_argument(
        "--publish-crashes",
        type=int,
        default=defaults.publish_crashes,
        metavar="K",
        help="reports that crash the worker after their table is published (%(default)s)",
    )

    llm = p.add_argument_group("LLM faults (probability per call)")
    llm.add_argument(
        "--llm-error-rate", type=_rate, default=rates.server_error, metavar="R", help="HTTP 503 (%(default)s)"
    )
    llm.add_argument(
        "--llm-429-rate",
        type=_rate,
        default=rates.rate_limit,
        metavar="R",
        help="HTTP 429 with Retry-After: 1 (%(default)s)",
    )
    llm.add_argument(
        "--llm-timeout-rate",
        type=_rate,
        default=rates.timeout,
        metavar="R",
        help="no answer within the client's timeout (%(default)s)",
    )
    llm.add_argument(
        "--llm-malformed-rate",
        type=_rate,
        default=rates.malformed,
        metavar="R",
        help="an answer that is not JSON (%(default)s)",
    )
    llm.add_argument(
        "--llm-ungrounded-rate",
        type=_rate,
        default=rates.ungrounded,
        metavar="R",
        help="well-formed JSON that fails validation: invented values, rows (%(default)s)",
    )
    llm.add_argument(
        "--llm-timeout",
        type=_number(float, 0.1),
        default=defaults.llm_timeout,
        metavar="SECONDS",
        help="the worker's LLM_TIMEOUT_SECONDS (%(default)s)",
    )
    llm.add_argument(
        "--llm-latency",
        type=_number(float, 0),
        default=defaults.llm_latency,
        metavar="SECONDS",
        help="added to every LLM answer (%(default)s)",
    )
    llm.add_argument(
        "--step-max-attempts",
        type=int,
        default=defaults.step_max_attempts,
        metavar="N",
        help="the worker's STEP_MAX_ATTEMPTS (%(default)s)",
    )

    procs = p.add_argument_group("process faults and timing")
    procs.add_argument(
        "--duration",
        type=_number(float, 1),
        default=defaults.duration,
        metavar="SECONDS",
        help="fault window from the first send; kills happen inside it (%(default)s)",
    )
    procs.add_argument(
        "--send-seconds",
        type=_number(float, 0.1),
        metavar="SECONDS",
        help="spread the sends over this long (default: the whole fault window)",
    )
    procs.add_argument(
        "--worker-kill-every",
        type=_number(float, 0),
        default=defaults.worker_kill_every,
        metavar="SECONDS",
        help="SIGKILL the worker about this often, 0 for never (%(default)s)",
    )
    procs.add_argument(
        "--no-restate-kill", dest="restate_kill", action="store_false", help="skip the restate-server SIGKILL"
    )
    procs.add_argument("--no-kafka-kill", dest="kafka_kill", action="store_false", help="skip the Kafka SIGKILL")
    procs.add_argument(
        "--kafka-down",
        type=_number(float, 0),
        default=defaults.kafka_down_s,
        metavar="SECONDS",
        help="how long the broker stays down (%(default)s)",
    )
    procs.add_argument(
        "--drain-timeout",
        type=_number(float, 1),
        default=defaults.drain_timeout,
        metavar="SECONDS",
        help="longest wait for quiescence after the last fault (%(default)s)",
    )
    procs.add_argument(
        "--stack-offset",
        type=int,
        default=defaults.stack_offset,
        metavar="N",
        help="port offset and run directory .run/test-N of the stack (%(default)s)",
    )
    procs.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    return p  # fmt: skip


def config_from(args: argparse.Namespace) -> ChaosConfig:
    return ChaosConfig(
        reports=args.reports,
        seed=args.seed,
        rates=LLMFaultRates(
            server_error=args.llm_error_rate,
            rate_limit=args.llm_429_rate,
            timeout=args.llm_timeout_rate,
            malformed=args.llm_malformed_rate,
            ungrounded=args.llm_ungrounded_rate,
        ),
        poison_rate=args.poison_rate,
        publish_crashes=args.publish_crashes,
        duration=args.duration,
        send_seconds=args.send_seconds,
        worker_kill_every=args.worker_kill_every,
        restate_kill=args.restate_kill,
        kafka_kill=args.kafka_kill,
        kafka_down_s=args.kafka_down,
        drain_timeout=args.drain_timeout,
        step_max_attempts=args.step_max_attempts,
        llm_timeout=args.llm_timeout,
        llm_latency=args.llm_latency,
        stack_offset=args.stack_offset,
        keep_stack=args.keep_stack,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
    except ValidationError as exc:
        parser.error("; ".join(": ".join([*map(str, e["loc"]), e["msg"]]) for e in exc.errors()))
    try:
        result = run(config)
    except KeyboardInterrupt:
        print("chaos: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (StackError, SetupError, SendError) as exc:
        print(f"chaos: the run could not complete: {exc}", file=sys.stderr)
        return EXIT_INFRA
    print(result.render(), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
