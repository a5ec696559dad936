"""`python -m devstack.llamacpp`: llama.cpp's OpenAI-compatible server (the `xllamacpp` wheel) for one GGUF.

The local stack runs this as its fourth process when `LLM_PROVIDER=local`; the worker talks to it
with its OpenAI provider. It serves `/v1/chat/completions` (with `json_schema` response formats)
and `/health` (200 once the model is loaded), until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path


def default_threads() -> int:
    # llama.cpp's threads spin while they wait for each other: on a machine it shares with Kafka,
    # Restate and the worker, one thread per core but one is several times faster than one per core
    # (measured on 2 cores under load: 16 tokens/s with 1 thread, 1-2 with 2).
    return max(1, (os.cpu_count() or 2) - 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.llamacpp",
        description="Serve one GGUF model with llama.cpp's OpenAI-compatible HTTP server (xllamacpp).",
    )
    parser.add_argument("--model", required=True, type=Path, help="the GGUF file")
    parser.add_argument("--alias", help="the model name the server answers with (default: the file name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8090, help="port (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=4096, help="context tokens per parallel slot (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=2, help="requests decoded together (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=default_threads(), help="CPU threads (default: cores - 1, at least 1)"
    )
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"{args.model} is not a file")

    import xllamacpp  # slow to import; after argument checks so --help is quick

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    alias = args.alias or args.model.name.removesuffix(".gguf")
    params.model_alias = {alias}  # a set of names in this binding
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx * args.parallel  # llama.cpp splits the context among the slots
    params.use_jinja = True  # the model's own chat template
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = xllamacpp.Server(params)  # loads the model, then serves on its own threads
    print(f"llama.cpp server for {alias} listening on {server.listening_address}", flush=True)
    stop.wait()
    print("llama.cpp server stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
