"""`python -m devstack`: run a local Kafka + Restate + worker stack without Docker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack.config import StackConfig
from devstack.processes import StackError
from devstack.setup import SetupConfig, SetupError, run_setup
from devstack.stack import Stack

EXIT_OK, EXIT_FAILED = 0, 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devstack",
        description="Local stack for the report-chain worker: Apache Kafka (KRaft), restate-server, the worker and, "
        "with LLM_PROVIDER=local, llama.cpp's server with a local model, as local processes with PID and log files "
        "under .run/stack.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start what is not running, wait until healthy, then run setup")
    sub.add_parser("demo", help="up, then send the sample reports and print their tables (what `make run` does)")
    sub.add_parser("down", help="stop the processes `up` started")
    sub.add_parser("status", help="show which stack processes run")
    restart = sub.add_parser("restart", help="restart one component (e.g. the worker after changing its environment)")
    restart.add_argument("component", choices=["kafka", "restate", "llm", "worker"])
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
        stack = Stack(StackConfig())
        if args.command == "up":
            seconds = stack.up()
            c = stack.cfg
            print(f"stack is up in {seconds:.1f} s: Kafka {c.kafka_bootstrap}, Restate UI {c.admin_url}, "
                  f"worker {c.worker_url} (no HTTP ingress: only the Kafka subscription invokes it)")  # fmt: skip
        elif args.command == "demo":
            from devstack.demo import run_demo

            return run_demo(stack)
        elif args.command == "down":
            stack.down()
        elif args.command == "restart":
            stack.restart(args.component)
        elif args.command == "status":
            for name, pid in stack.status().items():
                print(f"{name:<8} {'running, pid ' + str(pid) if pid else 'not running'}")
    except (StackError, SetupError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
