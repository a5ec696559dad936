"""`python -m devstack`: run a local Kafka + Restate + worker stack without Docker."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from devstack.config import PROFILES, SINGLE, StackConfig, profile_named, worker_processes_from_env
from devstack.processes import StackError
from devstack.setup import SetupConfig, SetupError, run_setup
from devstack.stack import Stack
from worker.settings import settings_or_exit

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devstack",
        description="Local stack for the report-chain worker: Apache Kafka (KRaft), restate-server, the worker and, "
        "with LLM_PROVIDER=local, llama.cpp's server with a local model, as local processes with PID and log files "
        "under .run/stack (profile `single`) or .run/cluster (profile `cluster`: 3 Kafka brokers, 3 Restate nodes, "
        "worker processes behind HAProxy).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument(
            "--profile",
            choices=list(PROFILES),
            default=None,
            help="which stack: for up and demo the default is single, for the other commands the one "
            "running. Worker processes: $WORKER_PROCESSES (default 1 for single, 2 for cluster)",
        )
        return command

    with_profile(sub.add_parser("up", help="start what is not running, wait until healthy, then run setup"))
    with_profile(
        sub.add_parser("demo", help="up, then send the sample reports and print their tables (what `make run` does)")
    )
    sub.add_parser("down", help="stop every process of either profile")
    sub.add_parser("status", help="show which stack processes run")
    with_profile(
        sub.add_parser(
            "env",
            help="print the running stack's addresses as shell variables (KAFKA_BOOTSTRAP_SERVERS, "
            "RESTATE_ADMIN_URL, ...) that the environment does not set already, for "
            "`env $(python -m devstack env) report-status`",
        )
    )
    restart = with_profile(
        sub.add_parser("restart", help="restart a component (e.g. the worker after changing its environment)")
    )
    restart.add_argument(
        "component", help="kafka, restate, llm, worker, balancer (every one of that kind) or one: worker-2"
    )
    sub.add_parser(
        "model",
        help="fetch (once) and verify the local model (LOCAL_MODEL_PATH, LOCAL_MODEL=hf:REPO/FILE, "
        "or the pinned default), then print its path",
    )
    identity = sub.add_parser(
        "identity",
        help="write Restate's request-identity key pair into DIR unless one is there, and print the public key "
        "(the Docker Compose `identity` service runs this before restate-server and the worker)",
    )
    identity.add_argument("--dir", required=True, type=Path, metavar="DIR", help="where the key files go")
    sub.add_parser(
        "setup",
        help="idempotent setup against any Kafka + Restate + worker (configured by environment: "
        "KAFKA_BOOTSTRAP_SERVERS, RESTATE_ADMIN_URL, WORKER_URL, RESTATE_KAFKA_BOOTSTRAP, ...)",
    )
    return parser


def _stacks() -> list[Stack]:
    """One stack of each profile, shaped as it was last started."""
    return [Stack(StackConfig.create(p).recorded()) for p in PROFILES.values()]


def _chosen(command: str, profile: str | None) -> Stack:
    """The stack a command acts on.

    `up` and `demo` build the stack of `profile` (default: single) shaped by the environment
    (WORKER_PROCESSES); the other commands act on the stack that runs, as it was started.
    """
    if command in ("up", "demo"):
        chosen = profile_named(profile or SINGLE.name)
        others = [s for s in _stacks() if s.cfg.profile != chosen and s.running()]
        if others:
            raise StackError(
                f"a {others[0].cfg.profile.name} stack is running and shares ports with the {chosen.name} one: "
                "`make down` first"
            )
        return Stack(StackConfig.create(chosen, worker_processes_from_env(chosen)))
    stacks = _stacks()
    if profile is not None:
        return next(s for s in stacks if s.cfg.profile.name == profile)
    return next((s for s in stacks if s.running()), stacks[0])


def _describe(stack: Stack) -> str:
    c = stack.cfg
    workers = f"{c.worker_processes} worker process{'es' if c.worker_processes > 1 else ''}"
    behind = f" behind {c.worker_url}" if c.balanced else f" at {c.worker_url}"
    return (
        f"{c.profile.name} stack: Kafka {c.kafka_bootstrap}, Restate UI {c.admin_url}, {workers}{behind} "
        "(no HTTP ingress: only the Kafka subscription invokes it)"
    )


def _env_lines(stack: Stack) -> list[str]:
    c = stack.cfg
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": c.kafka_bootstrap,
        "RESTATE_ADMIN_URL": c.admin_url,
        "RESTATE_INGRESS_URL": c.ingress_url,
        "WORKER_URL": c.worker_url,
    }
    # What the caller set explicitly wins (e.g. a test stack's addresses, or a remote cluster).
    return [f"{name}={shlex.quote(value)}" for name, value in values.items() if name not in os.environ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings_or_exit("devstack")
    try:
        if args.command == "setup":
            run_setup(SetupConfig.from_env())
            return EXIT_OK
        if args.command == "identity":
            from devstack.identity import ensure_key_pair

            pair, made = ensure_key_pair(args.dir)
            print(f"{'made' if made else 'kept'} {pair.private_pem}; public key {pair.public_key}")
            return EXIT_OK
        if args.command == "model":
            from devstack.localmodel import main as model_main

            return model_main()
        if args.command == "down":
            for stack in _stacks():
                stack.down()
            return EXIT_OK
        if args.command == "status":
            for stack in _stacks():
                if stack.running() or stack.cfg.profile == SINGLE:
                    print(_describe(stack))
                    for name, pid in stack.status().items():
                        print(f"  {name:<10} {'running, pid ' + str(pid) if pid else 'not running'}")
            return EXIT_OK
        stack = _chosen(args.command, args.profile)
        if args.command == "up":
            seconds = stack.up()
            print(f"stack is up in {seconds:.1f} s. {_describe(stack)}")
        elif args.command == "demo":
            from devstack.demo import run_demo

            return run_demo(stack)
        elif args.command == "restart":
            stack.restart(args.component)
        elif args.command == "env":
            print(" ".join(_env_lines(stack)))
    except ValueError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StackError, SetupError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
