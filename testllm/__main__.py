"""`python -m testllm`: serve the test LLM server until Ctrl-C (load runs, manual tries)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from testllm.ratelimit import RateLimit
from testllm.server import LLMServer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m testllm",
        description="A local OpenAI-compatible chat-completions server that answers every report correctly "
        "(the labelled corpus's metrics, else every number offered; sorted by value; one row per metric). "
        "Point the worker at it with "
        "OPENAI_BASE_URL=http://HOST:PORT/v1 and any OPENAI_API_KEY.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind, 0 for any free port (default: %(default)s)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call (default: %(default)s)")
    parser.add_argument("--requests-per-minute", type=int, help="answer 429 beyond this many calls per rolling minute")
    parser.add_argument(
        "--tokens-per-minute", type=int, help="answer 429 beyond this many tokens (prompt + completion) per minute"
    )
    args = parser.parse_args(argv)

    limit = None
    if args.requests_per_minute or args.tokens_per_minute:
        limit = RateLimit(requests=args.requests_per_minute, tokens=args.tokens_per_minute)
    server = LLMServer(args.host, args.port, latency=args.latency, rate_limit=limit).start()
    print(
        f"llm server listening: OPENAI_BASE_URL={server.base_url} (latency {args.latency:g}s); Ctrl-C to stop",
        flush=True,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.stop()
    peak = server.peak()
    print(
        f"served {len(server.calls())} calls ({len(server.rate_limited_calls())} rate-limited); "
        f"at most {peak.requests} calls and {peak.tokens} tokens in one rolling minute",
        flush=True,
    )


if __name__ == "__main__":
    main()
